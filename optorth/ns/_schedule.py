"""Newton–Schulz coefficient schedules as immutable, hashable data.

A schedule is a ``(T, 3)`` table of odd-quintic coefficients ``(a, b, c)``, one row per
step, plus everything needed to use it as its authors intended: the normalization
safety factor, the preconditioning it was designed for, and an explicit rule for step
counts other than ``T``. Schedules are static (hashable) so they can be closed over by
jitted code and are never mistaken for hyperparameter schedules by
``optax.inject_hyperparams``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

import jax
import numpy as np

from optorth._checks import check_choice, check_positive, check_positive_int

#: How a schedule answers a request for ``steps`` different from its own length.
#: ``"repeat_last"``: more steps repeat the last row, fewer truncate.
#: ``"truncate"``: fewer steps take the first rows; more steps raise.
#: ``"fixed"``: only the schedule's own length is allowed.
EXTEND_RULES = ("repeat_last", "truncate", "fixed")
#: No schedule runs more steps (the tables converge in 5–10; more is a typo, and a table of
#: 10⁹ rows would not fit in memory).
MAX_STEPS = 1000
PRECONDITIONS = ("frobenius", "spectral", "aol", "schatten")


def quintic(row, x):
    """p(x) = ax + bx³ + cx⁵ for ``row = (a, b, c)`` (Horner in x²; NumPy, JAX or floats)."""
    y = x * x
    return x * (row[0] + y * (row[1] + y * row[2]))


def check_table(who: str, table):
    """``table`` if it is a ``(T, 3)`` coefficient table with T ≥ 1 rows ``(a, b, c)``.

    JAX arrays (possibly traced, e.g. a table being learned) are checked by shape only and
    returned as they are; anything else is returned as a float64 NumPy array, checked finite.

    Raises:
      ValueError: naming ``who``, for a table of another shape, no rows, non-numeric or
        non-finite entries.

    Example:
      >>> from optorth.ns._schedule import check_table
      >>> check_table("demo", [(3.4445, -4.7750, 2.0315)]).shape
      (1, 3)
    """
    fix = ("Pass a preset name such as 'jordan', an optorth.Schedule, or a (T, 3) array of "
           "rows (a, b, c).")
    if isinstance(table, jax.Array):
        shape = table.shape
    else:
        try:
            table = np.asarray(table, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{who}: a coefficient table must be a (T, 3) array of numbers; "
                             f"got {table!r}. {fix}") from None
        shape = table.shape
    if len(shape) != 2 or shape[-1] != 3 or shape[0] < 1:
        raise ValueError(f"{who}: a coefficient table must have shape (T, 3) with T >= 1; got "
                         f"shape {shape}. {fix}")
    if isinstance(table, np.ndarray) and not np.all(np.isfinite(table)):
        raise ValueError(f"{who}: the coefficient table has non-finite entries (NaN or inf) in "
                         f"rows {sorted(set(np.nonzero(~np.isfinite(table))[0].tolist()))}: "
                         f"{table.tolist()}.")
    return table


def check_below(who: str, name: str, value, upper: float = 1.0) -> float:
    """``value`` as a float if it lies in (0, ``upper``) (e.g. ``sigma_min`` in (0, 1))."""
    if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
        value = np.asarray(value)
    if isinstance(value, jax.core.Tracer):
        raise ValueError(f"{who}: {name} must be a concrete number; got a traced value.")
    number = float(check_positive(who, name, value))
    if not number < upper:
        raise ValueError(f"{who}: {name} must lie in (0, {upper:g}); got {value!r}.")
    return number


def check_safety(who: str, value) -> float:
    """``value`` as a float if it is a finite safety factor ≥ 1 (traced values pass)."""
    if isinstance(value, jax.core.Tracer):
        return value
    number = float(check_positive(who, "safety", value))
    if not number >= 1.0:
        raise ValueError(f"{who}: safety must be a finite number >= 1 (the normalizer is "
                         f"multiplied by it); got {value!r}.")
    return number


def matrix_shape(who: str, shape) -> tuple[int, int]:
    """The last two entries of ``shape`` as positive ints ``(m, n)`` (a matrix shape)."""
    try:
        dims = tuple(shape)[-2:]
        if len(dims) == 2 and all(not isinstance(d, bool) and int(d) == d >= 1 for d in dims):
            return int(dims[0]), int(dims[1])
    except (TypeError, ValueError):
        pass
    raise ValueError(f"{who}: shape must be a matrix shape ending in two positive ints (m, n); "
                     f"got {shape!r}.")


def _frozen(value):
    """Lists (e.g. a shape read back from JSON) become tuples, so schedules stay hashable."""
    return tuple(map(_frozen, value)) if isinstance(value, (list, tuple)) else value


@dataclasses.dataclass(frozen=True)
class Schedule:
    """An odd-quintic Newton–Schulz coefficient schedule.

    Each row ``(a, b, c)`` maps a singular value ``σ`` to ``aσ + bσ³ + cσ⁵``.

    Attributes:
      table: the rows as a tuple of ``(a, b, c)`` float tuples.
      name: a short identifier (used in reports and serialization).
      safety: the normalization safety factor the table expects: the input is divided
        by ``norm(X) * safety + eps`` before the first step.
      precondition: the preconditioning the table was designed for (one of
        ``"frobenius"``, ``"spectral"``, ``"aol"``, ``"schatten"``).
      extend: rule for other step counts, one of ``EXTEND_RULES``.
      provenance: sorted ``(key, value)`` pairs saying where the table came from
        (paper, objective, shape, dtype, seed, ...). Values are strings or numbers.

    Raises:
      ValueError: for a table that is not ``(T, 3)`` with T ≥ 1 finite rows, an unknown
        ``extend`` or ``precondition``, or a safety factor that is not a finite number ≥ 1.
        (Stability is checked by ``optorth.validate_schedule`` and ``optorth.NewtonSchulz``.)

    Example:
      >>> import optorth
      >>> sched = optorth.Schedule(((3.4445, -4.7750, 2.0315),) * 5, name="mine",
      ...                          extend="repeat_last")
      >>> sched.rows(7).shape
      (7, 3)
      >>> optorth.NewtonSchulz(sched).table().shape
      (5, 3)
    """

    table: tuple[tuple[float, float, float], ...]
    name: str = "custom"
    safety: float = 1.0
    precondition: str = "frobenius"
    extend: str = "fixed"
    provenance: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise ValueError(f"Schedule: name must be a string; got {self.name!r}.")
        who, table = f"Schedule {self.name!r}", self.table
        if isinstance(table, jax.core.Tracer):
            raise ValueError(f"{who}: table must be concrete (a Schedule is static data); got "
                             f"a traced array. Pass a traced table to "
                             f"optorth.newton_schulz(x, ns, coeffs=table) instead.")
        table = np.asarray(table) if isinstance(table, jax.Array) else table
        table = tuple(map(tuple, check_table(who, table).tolist()))
        check_choice(who, "extend", self.extend, EXTEND_RULES)
        check_choice(who, "precondition", self.precondition, PRECONDITIONS)
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "safety", check_safety(who, self.safety))
        try:
            provenance = {str(key): _frozen(value) for key, value in dict(self.provenance).items()}
        except (TypeError, ValueError):
            raise ValueError(f"{who}: provenance must be (key, value) pairs or a dict; got "
                             f"{self.provenance!r}.") from None
        object.__setattr__(self, "provenance", tuple(sorted(provenance.items())))

    @property
    def steps(self) -> int:
        """The number of rows the schedule defines."""
        return len(self.table)

    def rows(self, steps: int | None = None) -> np.ndarray:
        """The ``(steps, 3)`` float64 table for ``steps`` iterations, by the ``extend`` rule.

        Raises:
          ValueError: if the rule does not define ``steps`` (never runs a different count).
        """
        table = np.asarray(self.table, dtype=np.float64)
        if steps is None:
            return table
        steps = check_positive_int(f"Schedule {self.name!r}", "steps", steps)
        if steps > MAX_STEPS:
            raise ValueError(f"Schedule {self.name!r}: steps={steps} is more than {MAX_STEPS}; "
                             f"Newton–Schulz tables converge in 5–10 steps.")
        if steps == self.steps:
            return table
        if steps < self.steps and self.extend in ("repeat_last", "truncate"):
            return table[:steps]
        if steps > self.steps and self.extend == "repeat_last":
            extra = np.repeat(table[-1:], steps - self.steps, axis=0)
            return np.concatenate([table, extra], axis=0)
        allowed = {
            "fixed": f"exactly {self.steps}",
            "truncate": f"at most {self.steps}",
            "repeat_last": "any positive number of",
        }[self.extend]
        raise ValueError(
            f"Schedule {self.name!r} (extend={self.extend!r}) defines {allowed} steps; "
            f"{steps} were requested. Pass steps=None, use a schedule with "
            f"extend='repeat_last', or build one for {steps} steps "
            f"(e.g. optorth.ns.polar_express_schedule({steps}))."
        )

    def with_table(self, table, **changes) -> "Schedule":
        """A copy with a new table (e.g. learned coefficients) and optional field changes."""
        return dataclasses.replace(self, table=tuple(map(tuple, np.asarray(table))), **changes)

    def to_dict(self) -> dict:
        """A JSON-compatible dict (see `from_dict`)."""
        return {
            "name": self.name,
            "table": [list(row) for row in self.table],
            "safety": self.safety,
            "precondition": self.precondition,
            "extend": self.extend,
            "provenance": dict(self.provenance),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Schedule":
        """Rebuild a schedule from `to_dict` output."""
        known = {"name", "table", "safety", "precondition", "extend", "provenance"}
        if not isinstance(data, Mapping) or "table" not in data:
            raise ValueError(f"Schedule.from_dict expects a mapping with a 'table' entry (the "
                             f"output of Schedule.to_dict()); got {data!r:.200}.")
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"Unknown schedule fields {sorted(unknown)}; expected {sorted(known)}."
            )
        fields = dict(data)
        fields["provenance"] = tuple(dict(fields.get("provenance", {})).items())
        return cls(**fields)

    def to_json(self) -> str:
        """Serialize to a JSON string (floats round-trip exactly)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Schedule":
        """Parse a schedule from `to_json` output."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as err:
            raise ValueError(f"Schedule.from_json: not valid JSON ({err}).") from None
        return cls.from_dict(data)
