"""``NewtonSchulz``: how to orthogonalize, as one frozen, validated configuration object.

The settings of a Newton–Schulz orthogonalization (coefficient schedule, step count,
normalization, iteration form, compute dtype, epsilon, online learning, telemetry, distribution
over a mesh) are resolved and checked once, where they enter: a typo in a preset name, a step
count the schedule does not define, or a coefficient table that ``validate_schedule`` rejects
(NaN, no rows, an escape past a repelling fixed point, a sign flip) raise ``ValueError`` at
construction, not NaN at the first update. The object is hashable, so it stays static under
``jax.jit`` and ``optax.inject_hyperparams``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optorth._checks import check_choice, check_dtype, check_positive, check_positive_int
from optorth._column_split import full_shape
from optorth._distribution import Distribution, as_distribution
from optorth.ns._engine import METHODS, check_matrices, newton_schulz_table
from optorth.ns._online import OnlineLearning
from optorth.ns._presets import PER_SHAPE_PRESETS, as_schedule
from optorth.ns._schedule import PRECONDITIONS, Schedule
from optorth.ns._validate import validate_schedule

_WHO = "NewtonSchulz"


def _as_schedule(schedule) -> str | Schedule:
    """A per-shape or checked preset name (kept as the name), or a `Schedule`."""
    if isinstance(schedule, str) and schedule in PER_SHAPE_PRESETS:
        return schedule
    if isinstance(schedule, str):
        as_schedule(_WHO, schedule)  # raises with the closest known name
        return schedule
    return as_schedule(_WHO, schedule)


@functools.lru_cache(maxsize=256)
def _checked_rows(schedule: Schedule, steps: int | None, shape=None) -> np.ndarray:
    """The schedule's rows for ``steps``, after ``validate_schedule`` accepted them."""
    try:
        rows = schedule.rows(steps)
    except ValueError as err:
        raise ValueError(f"{_WHO}: {err}") from None
    report = validate_schedule(schedule, steps=steps)
    if not report.ok:
        where = "" if shape is None else f" (the table for matrices of shape {shape})"
        raise ValueError(
            f"{_WHO}: schedule {schedule.name!r}{where} with {len(rows)} steps is rejected by "
            f"optorth.validate_schedule: {report.reason} It would produce exploding or NaN "
            f"updates. Use a preset ('jordan', 'polar_express5', ...), a generator "
            f"(optorth.ns.polar_express_schedule(steps)) or optorth.fit_schedule(steps).")
    rows.setflags(write=False)
    return rows


@dataclasses.dataclass(frozen=True)
class NewtonSchulz:
    """How Newton–Schulz orthogonalizes a matrix: schedule, steps, normalization, dtype.

    Every matrix X = U S Vᵀ is mapped to U φ(S) Vᵀ, φ the composition of the schedule's odd
    quintics p(σ) = aσ + bσ³ + cσ⁵, after X is normalized so that σ_max ≤ 1.

    Attributes:
      schedule: a preset name (``"jordan"``, ``"you"``, ``"you6"``, ``"polar_express"``,
        ``"polar_express5"``, ``"turbo"``, ``"root"`` (one table per matrix shape), the
        shipped fitted tables such as ``"fitted5"``), an `optorth.Schedule`, or a raw
        ``(T, 3)`` table (converted to a ``Schedule`` that runs exactly its rows).
      steps: number of steps; ``None`` runs the schedule's own length, other counts follow
        its ``extend`` rule.
      precondition: the normalization: ``"frobenius"`` (divide by ‖X‖_F), ``"schatten"``
        (by ‖X‖_S4), ``"spectral"`` (by a power-iteration estimate of σ_max) or ``"aol"``
        (Turbo-Muon's row scaling); ``None`` uses the schedule's own.
      method: ``"auto"`` (the Gram iteration for aspect ratios n/m ≥ 2, where it is faster;
        the plain iteration otherwise), ``"standard"`` or ``"gram"``.
      dtype: compute dtype of the iteration (e.g. ``"bfloat16"``); normalization always
        runs in float32. ``None``: the input's dtype promoted to float32.
      eps: added to the normalizer (> 0).
      learn: an `optorth.OnlineLearning` to refine the table online inside the
        optimizer state; ``None`` keeps it fixed. Not available for per-shape schedules.
      distribute: on a device mesh, how the matrices are divided over the devices (an
        `optorth.Distribution`: which mesh axes carry them, what stays local, a
        memory budget); ``None``, ``True``, ``False`` are shorthand for its modes
        ``"auto"``, ``"always"``, ``"never"``. Off a mesh it has no effect.
      telemetry: ``k > 0`` keeps, in the ``orthogonalize`` state, a per-leaf estimate of
        RMS(σ² − 1) of each update from ``k`` random probes (2·m·n·k flops per matrix) and
        the iteration's dtype, read by ``optorth.blocks.ns_telemetry(state)``; 0: off.

    Raises:
      ValueError: at construction, for an unknown preset, a step count the schedule does not
        define, a non-integer ``steps``, a table ``validate_schedule`` rejects, or any other
        value out of range. Per-shape tables (``"root"``) are validated for each matrix shape
        when the optimizer is initialized.

    Example:
      >>> import optorth, jax.numpy as jnp
      >>> ns = optorth.NewtonSchulz("polar_express5", dtype="bfloat16")
      >>> out = optorth.newton_schulz(jnp.ones((4, 8)) + jnp.eye(4, 8), ns)
      >>> out.shape
      (4, 8)

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024).
      Amsel et al., "The Polar Express" (arXiv 2505.16932).
    """

    schedule: Any = "jordan"
    steps: int | None = None
    precondition: str | None = None
    method: str = "auto"
    dtype: Any = None
    eps: float = 1e-7
    learn: OnlineLearning | None = None
    distribute: Distribution = Distribution()
    telemetry: int = 0

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)
        set_("schedule", _as_schedule(self.schedule))
        set_("steps", check_positive_int(_WHO, "steps", self.steps, allow_none=True))
        if self.precondition is not None:
            check_choice(_WHO, "precondition", self.precondition, PRECONDITIONS)
        check_choice(_WHO, "method", self.method, METHODS)
        set_("dtype", check_dtype(_WHO, "dtype", self.dtype))
        set_("eps", float(check_positive(_WHO, "eps", self.eps)))
        set_("distribute", as_distribution(self.distribute, _WHO))
        if isinstance(self.telemetry, bool) or not isinstance(self.telemetry, int) or (
                self.telemetry < 0):
            raise ValueError(f"{_WHO}: telemetry must be an int >= 0 (random probes of the "
                             f"orthogonality estimate, e.g. 8; 0: off); got "
                             f"{self.telemetry!r}.")
        if self.learn is not None and not isinstance(self.learn, OnlineLearning):
            raise ValueError(f"{_WHO}: learn must be an optorth.OnlineLearning or None; got "
                             f"{type(self.learn).__name__}. Example: "
                             f"learn=optorth.OnlineLearning(every=100).")
        if self.per_shape:
            if self.learn is not None:
                raise ValueError(
                    f"{_WHO}: learn= refines one (T, 3) table, but schedule="
                    f"{self.schedule!r} keeps one table per matrix shape. Pick a "
                    f"single-table schedule (e.g. 'jordan' or 'polar_express5').")
        else:
            _checked_rows(self.schedule_for(), self.steps)

    @property
    def per_shape(self) -> bool:
        """Whether the schedule holds one table per matrix shape (``"root"``)."""
        return isinstance(self.schedule, str) and self.schedule in PER_SHAPE_PRESETS

    @property
    def compute_dtype(self):
        """The iteration's compute dtype as a ``jnp.dtype`` (``None``: float32 or wider)."""
        return None if self.dtype is None else jnp.dtype(self.dtype)

    def schedule_for(self, shape=None) -> Schedule:
        """The `Schedule` used for matrices of ``shape`` (needed for ``"root"``)."""
        return as_schedule(_WHO, self.schedule, shape=shape)

    def table(self, shape=None) -> np.ndarray:
        """The validated ``(T, 3)`` float64 coefficients for matrices of ``shape``.

        Raises:
          ValueError: if ``optorth.validate_schedule`` rejects the table for ``shape`` (a
            per-shape schedule is validated shape by shape).
        """
        shape = None if shape is None or not self.per_shape else tuple(shape)
        return _checked_rows(self.schedule_for(shape), self.steps, shape)

    def normalization(self, shape=None) -> tuple[float, str]:
        """``(safety, precondition)`` for matrices of ``shape``."""
        schedule = self.schedule_for(shape)
        return schedule.safety, self.precondition or schedule.precondition

    def apply(self, x, coeffs=None) -> jax.Array:
        """Orthogonalizes every matrix of ``x`` (``(..., m, n)``); see `newton_schulz`."""
        x = check_matrices(x, "newton_schulz")
        shape = full_shape(x.shape)[-2:]  # a column block's matrices, while split over devices
        if coeffs is None:
            coeffs = jnp.asarray(self.table(shape), jnp.float32)
        else:
            check_coeffs(coeffs)
        safety, precondition = self.normalization(shape)
        return newton_schulz_table(x, coeffs, safety=safety, precondition=precondition,
                                   method=self.method, dtype=self.compute_dtype, eps=self.eps)


def check_coeffs(coeffs) -> None:
    """Raises ``ValueError`` for a concrete ``(T, 3)`` ``coeffs=`` table that holds NaN/inf
    or that ``validate_schedule`` rejects (the engine checks the shape). A traced table
    (learned under ``jit`` / ``grad``) cannot be inspected and is used as it is."""
    if isinstance(coeffs, jax.core.Tracer):
        return
    table = np.asarray(coeffs, np.float64)
    if table.ndim != 2 or table.shape[-1] != 3 or table.shape[0] == 0:
        return  # the engine names a wrong shape
    if not np.isfinite(table).all():
        row = int(np.argmax(~np.isfinite(table).all(axis=1)))
        raise ValueError(f"newton_schulz: coeffs row {row} is {table[row].tolist()}, not "
                         f"finite: every update would be NaN. Restore the table "
                         f"(optorth.checkpoint.reconcile_coefficients) or pass a preset.")
    report = validate_schedule(table)
    if not report.ok:
        raise ValueError(f"newton_schulz: coeffs is rejected by optorth.validate_schedule: "
                         f"{report.reason}")


def as_newton_schulz(ns) -> NewtonSchulz:
    """A `NewtonSchulz` from itself, a preset name or a `Schedule`."""
    if isinstance(ns, NewtonSchulz):
        return ns
    if isinstance(ns, (str, Schedule)):
        return NewtonSchulz(ns)
    raise ValueError(f"ns must be an optorth.NewtonSchulz, a preset name or an optorth.Schedule; "
                     f"got {type(ns).__name__}. Example: optorth.NewtonSchulz('jordan', "
                     f"steps=5).")


def newton_schulz(x, ns: NewtonSchulz | str | Schedule = "jordan", *, coeffs=None,
                  **settings) -> jax.Array:
    """Approximates the polar factor U Vᵀ of every matrix in ``x`` by Newton–Schulz.

    Each matrix ``X = U S Vᵀ`` of ``x`` (shape ``(..., m, n)``; leading axes are a batch)
    becomes ``U φ(S) Vᵀ``, φ the composition of the schedule's odd quintics. Tall matrices
    are transposed to the wide orientation internally; the input is divided by its largest
    entry and normalized in float32, so inputs of magnitude 1e-30 or 1e30 stay finite and a
    zero matrix maps to zeros.

    Args:
      x: floating array of shape ``(..., m, n)``.
      ns: a `NewtonSchulz`, or a preset name / `optorth.Schedule` as a
        shorthand for ``NewtonSchulz(that)``.
      coeffs: optional ``(T, 3)`` table used instead of the schedule's rows (it may be
        traced, e.g. learned: the result is differentiable with respect to it); the
        schedule still gives the normalization.
      **settings: none; settings such as ``steps=`` belong in the `NewtonSchulz`
        (a ``ValueError`` says how to write the call).

    Returns:
      An array with the shape and dtype of ``x``.

    Example:
      >>> import optorth, numpy as np
      >>> x = np.random.default_rng(0).standard_normal((3, 16, 8)).astype(np.float32)
      >>> out = optorth.newton_schulz(x, "polar_express5")
      >>> s = np.linalg.svd(np.asarray(out), compute_uv=False)
      >>> bool(np.all((s > 0.8) & (s < 1.2)))
      True
    """
    if settings:
        shown = ", ".join(f"{k}={v!r}" for k, v in settings.items())
        raise ValueError(f"newton_schulz takes its settings as one optorth.NewtonSchulz; got "
                         f"{shown}. Write optorth.newton_schulz(x, optorth.NewtonSchulz("
                         f"{ns!r}, {shown})) (a traced table goes in coeffs=).")
    return as_newton_schulz(ns).apply(x, coeffs)
