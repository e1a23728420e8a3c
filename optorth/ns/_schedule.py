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

import numpy as np

#: How a schedule answers a request for ``steps`` different from its own length.
#: ``"repeat_last"``: more steps repeat the last row, fewer truncate.
#: ``"truncate"``: fewer steps take the first rows; more steps raise.
#: ``"fixed"``: only the schedule's own length is allowed.
EXTEND_RULES = ("repeat_last", "truncate", "fixed")
PRECONDITIONS = ("frobenius", "spectral", "aol", "schatten")


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
    """

    table: tuple[tuple[float, float, float], ...]
    name: str = "custom"
    safety: float = 1.0
    precondition: str = "frobenius"
    extend: str = "fixed"
    provenance: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        table = tuple(tuple(float(v) for v in row) for row in self.table)
        if not table or any(len(row) != 3 for row in table):
            raise ValueError(
                f"Schedule {self.name!r}: table must be a non-empty sequence of (a, b, c) "
                f"rows; got {len(table)} rows with lengths {[len(r) for r in table]}."
            )
        if not all(np.isfinite(table).flatten()):
            raise ValueError(f"Schedule {self.name!r}: table has non-finite entries: {table}.")
        if self.extend not in EXTEND_RULES:
            raise ValueError(
                f"Schedule {self.name!r}: extend={self.extend!r}; expected one of {EXTEND_RULES}."
            )
        if self.precondition not in PRECONDITIONS:
            raise ValueError(
                f"Schedule {self.name!r}: precondition={self.precondition!r}; expected one of "
                f"{PRECONDITIONS}."
            )
        if not float(self.safety) >= 1.0:
            raise ValueError(f"Schedule {self.name!r}: safety must be >= 1, got {self.safety}.")
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "safety", float(self.safety))
        provenance = {key: _frozen(value) for key, value in dict(self.provenance).items()}
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
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}.")
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
            f"(e.g. optorth.polar_express_schedule({steps}))."
        )

    def with_table(self, table, **changes) -> "Schedule":
        """A copy with a new table (e.g. learned coefficients) and optional field changes."""
        return dataclasses.replace(self, table=tuple(map(tuple, np.asarray(table))), **changes)

    def to_dict(self) -> dict:
        """A JSON-compatible dict (see :meth:`from_dict`)."""
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
        """Rebuild a schedule from :meth:`to_dict` output."""
        known = {"name", "table", "safety", "precondition", "extend", "provenance"}
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
        """Parse a schedule from :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))
