"""The scalar oracle: what a coefficient schedule does to each singular value, exactly.

A Newton–Schulz step with row ``(a, b, c)`` maps every singular value through the odd
quintic ``p(x) = ax + bx³ + cx⁵`` and keeps the singular vectors, so a schedule acts on the
spectrum as the composed scalar map ``φ = p_T ∘ … ∘ p_1`` applied to ``σ / safety`` (the
engine divides ``X`` by ``norm(X) · safety``; ``σ`` is the singular value relative to
that norm, so ``σ ∈ [0, 1]``). ``validate_schedule`` evaluates φ in float64 NumPy:

* exactly, by interval propagation: the image of an interval under a polynomial is the
  interval spanned by its values at the endpoints and at the roots of ``p′`` inside
  (``p′(x) = a + 3bx² + 5cx⁴`` is a quadratic in ``x²``), and images compose;
* on a dense grid (log-spaced plus linear, so small σ are oversampled) for the mean error
  and to locate the σ behind each finding.

Instability ("escape"): beyond the largest positive root τ of ``p(x) = x`` (its repelling
fixed point) a polynomial with ``p(x) → +∞`` keeps pushing values up. A schedule lets σ
escape if some step maps a σ ∈ [0, 1] above the repelling fixed point of the row applied
next (for a repeated row, its own), or, for ``extend="repeat_last"``, if repeating the last
row forever does not keep the image bounded. The first row of Polar Express deliberately
overshoots its *own* fixed point (it maps [ℓ, 1] onto [ℓ′, 2 − ℓ′]); what matters is the
row that receives the overshoot. A negative output for a positive input is a sign flip.

Accuracy: a stable table can still fail to orthogonalize. A table with φ′(0) = ∏a / safety
≤ 1 never grows the small singular values (``[[1, 0, 0]]`` is the identity, ``[[1e-3, 0,
0]]`` shrinks every update 1000-fold), and one whose peak on [0, 1] exceeds
`PEAK_LIMIT` amplifies the top of the spectrum instead of mapping it towards 1
(a single row ``(10, −1, 0)`` maps σ = 1 to 9). Both are rejected.

References:
  Amsel et al., "The Polar Express: Optimal Matrix Sign Methods and Their Application to
  the Muon Algorithm" (arXiv 2505.16932), §4 (greedy minimax, equioscillation, safety).
  ROOT (arXiv 2511.20626): its (2048, 2048) row peaks at 1.2246 above its repelling fixed
  point 1.2236, the failure this oracle must catch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from optorth.ns._presets import as_schedule
from optorth.ns._schedule import check_below, quintic

_GRID_POINTS = 20_001
_TAIL_ITERS = 200
_REL_TOL = 1e-12
#: The largest φ(σ) on [0, 1] an accepted table may reach (Polar Express's deliberate overshoot
#: of its first row, truncated to one step, peaks at 1.99).
PEAK_LIMIT = 2.5


@dataclasses.dataclass(frozen=True)
class ScheduleReport:
    """What a schedule does to singular values σ (relative to the normalizing norm).

    Attributes:
      name: the schedule's name.
      steps: number of steps analysed.
      sigma_min: lower end of the accuracy interval [sigma_min, 1].
      safety: the normalization safety factor applied (σ enters the rows as σ / safety).
      band: ``(lo, hi)``, the exact image φ([sigma_min, 1]).
      slope_at_zero: φ′(0) = ∏a / safety, the gain on the smallest singular values.
      max_error: max |φ(σ) − 1| over σ ∈ [sigma_min, 1].
      mean_error: mean |φ(σ) − 1| over the grid on [sigma_min, 1] (half log-spaced, half
        linear, so small σ are oversampled).
      peak: max φ(σ) over σ ∈ [0, 1].
      escapes: some σ ∈ [0, 1] is driven past a repelling fixed point (see module doc).
      sign_flip: some step maps a positive value to a negative (or zero) one.
      ok: the schedule is stable (no escape, no sign flip, finite band with lo > 0) and
        orthogonalizes: slope at 0 above 1 and peak at most `PEAK_LIMIT`.
      reason: a human-readable explanation of the verdict.

    Example:
      >>> import optorth
      >>> report = optorth.validate_schedule("jordan")
      >>> report.ok, report.steps, round(report.slope_at_zero, 1)
      (True, 5, 484.9)
    """

    name: str
    steps: int
    sigma_min: float
    safety: float
    band: tuple[float, float]
    slope_at_zero: float
    max_error: float
    mean_error: float
    peak: float
    escapes: bool
    sign_flip: bool
    ok: bool
    reason: str

    def __str__(self) -> str:
        lo, hi = self.band
        verdict = "ok" if self.ok else "REJECTED"
        return (
            f"{self.name} ({self.steps} steps, safety {self.safety:g}): {verdict}\n"
            f"  σ ∈ [{self.sigma_min:g}, 1] → [{lo:.6g}, {hi:.6g}]; "
            f"max |φ−1| = {self.max_error:.3g}, mean |φ−1| = {self.mean_error:.3g}\n"
            f"  slope at 0 = {self.slope_at_zero:.4g}; peak on [0, 1] = {self.peak:.6g}\n"
            f"  {self.reason}"
        )


def _positive_roots_in_y(coeffs) -> np.ndarray:
    """Sorted x > 0 with q(x²) = 0 for a polynomial q in y given highest power first."""
    coeffs = np.asarray(coeffs, dtype=np.float64)
    if not np.all(np.isfinite(coeffs)):  # overflowing rows: the composed map reports it
        return np.zeros(0)
    roots = np.roots(coeffs) if np.any(coeffs) else []
    real = [r.real for r in roots if abs(r.imag) <= 1e-12 * max(1.0, abs(r)) and r.real > 0]
    return np.sqrt(np.sort(np.asarray(real, dtype=np.float64)))


def _critical_points(row) -> np.ndarray:
    """x > 0 with p′(x) = a + 3bx² + 5cx⁴ = 0."""
    a, b, c = row
    return _positive_roots_in_y([5 * c, 3 * b, a])


def _image(row, lo: float, hi: float) -> tuple[float, float]:
    """The exact image p([lo, hi]): extremes over the endpoints and interior critical points."""
    pts = [lo, hi] + [x for x in _critical_points(row) if lo < x < hi]
    vals = quintic(row, np.asarray(pts, dtype=np.float64))
    return float(np.min(vals)), float(np.max(vals))


def repelling_fixed_point(row) -> float:
    """τ: beyond it ``p(x) > x`` forever (``inf`` if ``p(x) − x`` does not tend to +∞).

    ``p(x) − x = x((a − 1) + bx² + cx⁴)``; τ is its largest positive root, or 0 if it has
    none (then every positive value grows).
    """
    a, b, c = row
    lead = next((v for v in (c, b, a - 1.0) if v != 0.0), 0.0)
    if lead <= 0.0:
        return float("inf")
    roots = _positive_roots_in_y([c, b, a - 1.0])
    return float(roots[-1]) if roots.size else 0.0


def tail_bound(row, hi: float) -> tuple[float, str]:
    """What repeating ``row`` forever does to values in [0, hi].

    Returns ``(H, "bounded")`` for the smallest H found with [0, H] ⊇ [0, hi] and
    p([0, H]) ⊆ [0, H] (so every orbit stays in [0, H]); ``(inf, "escape")`` if the hull of
    the orbits passes the repelling fixed point; ``(inf, "sign_flip")`` if it reaches a value
    that p maps below 0. Candidates for H are the hull's growth iterates and the fixed points
    of p above them (where a slowly converging orbit settles).
    """
    tau = repelling_fixed_point(row)
    h = float(hi)
    for _ in range(_TAIL_ITERS):
        lo_val, hi_val = _image(row, 0.0, h)
        if lo_val < 0.0:
            return float("inf"), "sign_flip"
        if not np.isfinite(hi_val) or hi_val > tau * (1 + _REL_TOL):
            return float("inf"), "escape"
        if hi_val <= h * (1 + _REL_TOL):
            return h, "bounded"
        h = hi_val
    a, b, c = row
    for f in _positive_roots_in_y([c, b, a - 1.0]):
        lo_val, hi_val = _image(row, 0.0, f)
        if f >= h and lo_val >= 0.0 and hi_val <= f * (1 + _REL_TOL):
            return float(f), "bounded"
    return float("inf"), "escape"


def _grid(sigma_min: float) -> np.ndarray:
    """σ grid on [sigma_min, 1]: half log-spaced (oversamples small σ), half linear."""
    logs = np.geomspace(sigma_min, 1.0, _GRID_POINTS)
    lins = np.linspace(sigma_min, 1.0, _GRID_POINTS)
    return np.unique(np.concatenate([logs, lins]))


def _compose(rows, x):
    for row in rows:
        x = quintic(row, x)
    return x


def _propagate(rows, lo, hi) -> list[tuple[float, float]]:
    """Exact images [lo_t, hi_t] after each step (element 0 is the input interval)."""
    out = [(lo, hi)]
    for row in rows:
        out.append(_image(row, *out[-1]))
    return out


def _stability(sched, safety: float) -> tuple[bool, bool, str]:
    """(escapes, sign_flip, reason) for σ ∈ [0, 1] over the schedule's full definition."""
    rows = sched.rows()
    intervals = _propagate(rows, 0.0, 1.0 / safety)
    for t in range(len(rows)):
        lo_t, hi_t = intervals[t + 1]
        if lo_t < 0.0:
            return False, True, (
                f"sign flip: step {t + 1} maps positive values to {lo_t:.4g} < 0 (σ would change "
                f"sign, and under repetition oscillate in magnitude)."
            )
        if t + 1 < len(rows):
            tau = repelling_fixed_point(rows[t + 1])
            if hi_t > tau * (1 + _REL_TOL):
                sigma = _escaping_sigma(rows[: t + 1], tau, safety)
                return True, False, (
                    f"escape: step {t + 1} maps σ{sigma} up to {hi_t:.6g}, above the repelling "
                    f"fixed point {tau:.6g} of step {t + 2}'s polynomial, which then drives it "
                    f"away from 1 (after all {len(rows)} steps φ reaches "
                    f"{intervals[-1][1]:.4g})."
                )
    if sched.extend != "repeat_last":
        return False, False, "stable: no σ ∈ [0, 1] passes a repelling fixed point."
    bound, verdict = tail_bound(rows[-1], intervals[-1][1])
    if verdict == "escape":
        return True, False, (
            f"escape: repeating the last row (extend='repeat_last') does not keep the image "
            f"bounded: values up to {intervals[-1][1]:.6g} are eventually pushed past its "
            f"repelling fixed point {repelling_fixed_point(rows[-1]):.6g}."
        )
    if verdict == "sign_flip":
        return False, True, (
            f"sign flip: repeating the last row (extend='repeat_last') eventually maps values "
            f"from [0, {intervals[-1][1]:.6g}] below 0 (they then oscillate and grow)."
        )
    tail = f"; repeating the last row forever keeps every σ ∈ [0, 1] below {bound:.6g}"
    return False, False, f"stable: no σ ∈ [0, 1] passes a repelling fixed point{tail}."


def _escaping_sigma(rows, tau: float, safety: float) -> str:
    """A readable range of σ ∈ [0, 1] whose image after ``rows`` exceeds ``tau``."""
    sigma = np.linspace(0.0, 1.0, _GRID_POINTS)
    bad = sigma[_compose(rows, sigma / safety) > tau]
    if bad.size == 0:
        return " (in a range narrower than the grid)"
    return f" ∈ [{bad.min():.3f}, {bad.max():.3f}]"


def validate_schedule(schedule, *, sigma_min: float = 1e-3, steps: int | None = None,
                      shape=None) -> ScheduleReport:
    """Checks a coefficient schedule with the exact scalar map φ of its rows.

    φ(σ) = p_T(…p_1(σ / safety)) with p_t(x) = a_t x + b_t x³ + c_t x⁵ and the schedule's
    own safety factor (raw arrays: 1). Reports the band φ([sigma_min, 1]), the slope
    φ′(0) = ∏a / safety, the max and mean |φ − 1|, and whether any σ ∈ [0, 1] escapes or
    flips sign; ``ok`` is False for unstable tables. For AOL/spectral preconditioning the
    spectrum is taken to be σ ∈ [0, 1] as well (those normalizations bound σ_max by 1).

    Args:
      schedule: a preset name, an `optorth.Schedule`, or a ``(T, 3)`` array.
      sigma_min: lower end of the interval on which accuracy is measured, in (0, 1).
      steps: number of steps (by the schedule's ``extend`` rule); ``None``: its own length.
      shape: matrix shape, for per-shape presets such as ``"root"``.

    Returns:
      A `ScheduleReport`; ``print(report)`` explains the verdict.

    Example:
      >>> import optorth
      >>> optorth.validate_schedule("polar_express5").ok
      True
      >>> optorth.validate_schedule("root", shape=(2048, 2048)).ok
      False
      >>> optorth.validate_schedule([(10.0, -1.0, 0.0)] * 5).sign_flip
      True
    """
    who = "validate_schedule"
    sigma_min = check_below(who, "sigma_min", sigma_min)
    sched = as_schedule(who, schedule, shape=shape)
    try:
        rows, safety = sched.rows(steps), sched.safety
    except ValueError as err:
        raise ValueError(f"{who}: {err}") from None
    with np.errstate(over="ignore", invalid="ignore"):
        lo, hi = _propagate(rows, sigma_min / safety, 1.0 / safety)[-1]
        values = _compose(rows, _grid(sigma_min) / safety)
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
        peak = _propagate(rows, 0.0, 1.0 / safety)[-1][1]
        escapes, sign_flip, reason = _stability(sched, safety)
        errors = np.abs(values - 1.0)
        slope = float(np.prod(rows[:, 0]) / safety)
        mean_error = float(np.mean(errors))
    finite = bool(np.isfinite([lo, hi]).all())
    stable = not escapes and not sign_flip and finite and lo > 0.0
    ok = stable and slope > 1.0 and peak <= PEAK_LIMIT
    if not finite and not (escapes or sign_flip):
        reason = "overflow: the composed map is not finite on [sigma_min, 1]."
    elif not stable and not (escapes or sign_flip):
        reason = (f"collapse: some σ ∈ [{sigma_min:g}, 1] are mapped to {lo:.4g} ≤ 0, not "
                  f"towards 1.")
    elif stable and slope <= 1.0:
        reason = (f"no gain: the slope at 0, ∏a / safety = {slope:.4g}, is not above 1, so "
                  f"small singular values are never grown towards 1 (max |φ−1| = "
                  f"{max(abs(lo - 1.0), abs(hi - 1.0)):.3g} on [{sigma_min:g}, 1]).")
    elif stable and not ok:
        reason = (f"amplifies: singular values are mapped up to {peak:.4g} > {PEAK_LIMIT} "
                  f"instead of towards 1.")
    return ScheduleReport(
        name=sched.name,
        steps=len(rows),
        sigma_min=float(sigma_min),
        safety=safety,
        band=(lo, hi),
        slope_at_zero=slope,
        max_error=max(abs(lo - 1.0), abs(hi - 1.0)),
        mean_error=mean_error,
        peak=float(peak),
        escapes=escapes,
        sign_flip=sign_flip,
        ok=ok,
        reason=reason,
    )
