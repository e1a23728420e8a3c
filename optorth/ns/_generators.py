"""Coefficient schedules computed for a step count: Polar Express (quintic) and CANS (cubic).

Both are greedy: step t gets the odd polynomial that best approximates 1 (minimax) on the
interval [ℓ_t, u_t] that the previous steps leave the singular values in, and the next
interval is its image. For these polynomials the greedy composition is itself minimax
optimal (Polar Express, §4), so a shorter schedule is a prefix of a longer one.

References:
  Amsel, Persson, Musco, Gower, "The Polar Express: Optimal Matrix Sign Methods and Their
  Application to the Muon Algorithm" (arXiv 2505.16932), §4 and appendix (Remez for d = 5,
  closed form for d = 3, cushioning and safety factor).
  Grishina, Smirnov, Rakhuba, "Accelerating Newton-Schulz Iteration for Orthogonalization
  via Chebyshev-type Polynomials" (CANS, arXiv 2506.10935).
"""

from __future__ import annotations

import math

import numpy as np

from optorth._checks import check_nonnegative, check_positive_int
from optorth.ns._schedule import Schedule, check_below, check_safety, quintic

#: Cushion of the Polar Express reference code that produced the published 8-row table:
#: each step is optimized on [max(ℓ, cushion·u), u] and then recentred, so the polynomial
#: never dips towards a sign flip on the far-too-small lower end.
PAPER_CUSHION = 0.02407327424182761
#: Below 1 − ε^{1/3} the Remez system is ill-conditioned and the minimax quintic equals
#: the Newton–Schulz quintic (15x − 10x³ + 3x⁵)/8 rescaled to the centre, to double
#: precision (Polar Express, appendix on Remez).
_NARROW = 1.0 - 5e-6
_REMEZ_TOL = 1e-15
_REMEZ_MAX_ITERS = 100


def _check_args(who, steps, sigma_min, sigma_max) -> tuple[int, float, float]:
    steps = check_positive_int(who, "steps", steps)
    lo, hi = (check_below(who, name, value, upper=float("inf"))
              for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)))
    if not lo < hi:
        raise ValueError(f"{who}: need 0 < sigma_min < sigma_max; got sigma_min={sigma_min!r}, "
                         f"sigma_max={sigma_max!r}.")
    return steps, lo, hi


def minimax_quintic(lo: float, hi: float) -> tuple[float, float, float]:
    """The odd quintic ``ax + bx³ + cx⁵`` minimizing max |1 − p| on [lo, hi] (Remez).

    The optimum equioscillates at lo < q < r < hi: p(lo) = 1 − E, p(q) = 1 + E,
    p(r) = 1 − E, p(hi) = 1 + E. Solve this 4×4 linear system for (a, b, c, E), move q, r to
    the roots of p′(x) = a + 3bx² + 5cx⁴ (a quadratic in x²) and repeat until E settles.
    """
    if lo / hi >= _NARROW:
        m = 0.5 * (lo + hi)
        return 15 / 8 / m, -10 / 8 / m**3, 3 / 8 / m**5
    q, r = (3 * lo + hi) / 4, (lo + 3 * hi) / 4
    err, old = math.inf, None
    for _ in range(_REMEZ_MAX_ITERS):
        system = np.array([[x, x**3, x**5, s] for x, s in ((lo, 1), (q, -1), (r, 1), (hi, -1))])
        a, b, c, err = np.linalg.solve(system, np.ones(4))
        disc = 9 * b * b - 20 * a * c
        if c <= 0 or disc < 0:
            raise RuntimeError(f"Remez on [{lo}, {hi}] lost its two interior extrema.")
        q, r = np.sqrt((-3 * b + np.array([-1.0, 1.0]) * math.sqrt(disc)) / (10 * c))
        if old is not None and abs(old - err) <= _REMEZ_TOL:
            return float(a), float(b), float(c)
        old = err
    raise RuntimeError(f"Remez on [{lo}, {hi}] did not converge (last |ΔE| = {abs(old - err)}).")


def polar_express_schedule(
    steps: int,
    *,
    sigma_min: float = 1e-3,
    safety: float = 1.01,
    cushion: float = PAPER_CUSHION,
    sigma_max: float = 1.0,
) -> Schedule:
    """Polar Express: the greedy minimax odd-quintic schedule for ``steps`` steps.

    With ℓ₁ = sigma_min, u₁ = sigma_max, step t is the minimax quintic on
    [max(ℓ_t, cushion·u_t), u_t] (`minimax_quintic`), recentred by 2 / (p(ℓ_t) + p(u_t))
    when cushioned so that it is centred on 1 over [ℓ_t, u_t]; every row but the last is then
    replaced by p(x / s) (coefficients divided by (s, s³, s⁵)) for the safety factor s, and
    ℓ_{t+1} = p_t(ℓ_t), u_{t+1} = 2 − ℓ_{t+1}. The schedule normalizes by ‖X‖·s.

    ``safety=1.0`` with the defaults reproduces the paper's published raw 8-row table, and
    ``steps=5, safety=1.02, cushion=0.02`` the 5-row table of the GPT speedrun codebases
    (the ``"polar_express5"`` preset). The ``"polar_express"`` preset instead divides the raw
    table by the safety factor afterwards (as the paper's listing does), without feeding the
    shrunken ℓ back into later steps.

    Args:
      steps: number of rows (positive int).
      sigma_min: assumed lower bound ℓ on the normalized singular values.
      safety: safety factor s ≥ 1 against round-off pushing σ above u_t.
      cushion: optimize each step as if ℓ_t ≥ cushion·u_t (0 disables).
      sigma_max: upper bound on the normalized singular values.

    Returns:
      A `optorth.Schedule` (Frobenius normalization, ``extend="truncate"``: a prefix
      is the optimal shorter schedule; repeating an unconverged last row is not safe, e.g.
      repeating the first row sends σ near 1 past its repelling fixed point).

    Example:
      >>> import optorth, jax.numpy as jnp
      >>> sched = optorth.ns.polar_express_schedule(6)
      >>> optorth.validate_schedule(sched).ok
      True
      >>> optorth.newton_schulz(jnp.eye(4, 8), sched).shape
      (4, 8)
    """
    who = "polar_express_schedule"
    steps, sigma_min, sigma_max = _check_args(who, steps, sigma_min, sigma_max)
    safety = check_safety(who, safety)
    if not float(check_nonnegative(who, "cushion", cushion)) < 1.0:
        raise ValueError(f"{who}: cushion must lie in [0, 1); got {cushion!r}.")
    lo, hi, rows = float(sigma_min), float(sigma_max), []
    for t in range(steps):
        row = minimax_quintic(max(lo, cushion * hi), hi)
        if cushion * hi > lo:
            scale = 2.0 / (quintic(row, lo) + quintic(row, hi))
            row = tuple(v * scale for v in row)
        if t < steps - 1:
            row = (row[0] / safety, row[1] / safety**3, row[2] / safety**5)
        rows.append(row)
        lo = quintic(row, lo)
        hi = 2.0 - lo
    return Schedule(
        table=tuple(rows),
        name=f"polar_express_gen{steps}",
        safety=safety,
        extend="truncate",
        provenance=(
            ("source", "Amsel et al. 2025, arXiv 2505.16932 (generated)"),
            ("generator", "optorth.polar_express_schedule"),
            ("sigma_min", float(sigma_min)),
            ("sigma_max", float(sigma_max)),
            ("cushion", float(cushion)),
        ),
    )


def minimax_cubic(lo: float, hi: float) -> tuple[float, float, float]:
    """The odd cubic ``αx + βx³`` minimizing max |1 − p| on [lo, hi] and its error ε (CANS).

    With s = (lo² + lo·hi + hi²)/3 and D = 2s^{3/2} + lo·hi(lo + hi):
    α = 2(lo² + lo·hi + hi²)/D, β = −2/D, ε = (2s^{3/2} − lo·hi(lo + hi))/D; p equioscillates
    at lo, √s (its maximum 1 + ε) and hi, so the image of [lo, hi] is [1 − ε, 1 + ε].
    """
    sq = lo * lo + lo * hi + hi * hi
    s32 = (sq / 3.0) ** 1.5
    cross = lo * hi * (lo + hi)
    d = 2.0 * s32 + cross
    return 2.0 * sq / d, -2.0 / d, (2.0 * s32 - cross) / d


def cans_schedule(steps: int, *, sigma_min: float = 1e-3, sigma_max: float = 1.0) -> Schedule:
    """CANS degree-3 schedule: the greedy minimax odd cubic per step, rows ``(α, β, 0)``.

    Step t is `minimax_cubic` on [ℓ_t, u_t], starting from [sigma_min, sigma_max];
    the next interval is [1 − ε_t, 1 + ε_t]. The last rows tend to Newton–Schulz's
    (3/2, −1/2). Each step costs one Gram product less than a quintic step.

    Args:
      steps: number of rows (positive int).
      sigma_min: assumed lower bound on the normalized singular values.
      sigma_max: upper bound on the normalized singular values.

    Returns:
      A `optorth.Schedule` (Frobenius normalization, no safety factor,
      ``extend="truncate"``).

    Example:
      >>> import optorth, jax.numpy as jnp
      >>> sched = optorth.ns.cans_schedule(8)
      >>> sched.table[0][2], optorth.validate_schedule(sched).ok
      (0.0, True)
      >>> optorth.newton_schulz(jnp.eye(4, 8), sched).shape
      (4, 8)
    """
    steps, sigma_min, sigma_max = _check_args("cans_schedule", steps, sigma_min, sigma_max)
    lo, hi, rows = float(sigma_min), float(sigma_max), []
    for _ in range(steps):
        alpha, beta, err = minimax_cubic(lo, hi)
        rows.append((alpha, beta, 0.0))
        lo, hi = 1.0 - err, 1.0 + err
    return Schedule(
        table=tuple(rows),
        name=f"cans{steps}",
        extend="truncate",
        provenance=(
            ("source", "CANS, arXiv 2506.10935 (degree 3, generated)"),
            ("generator", "optorth.cans_schedule"),
            ("sigma_min", float(sigma_min)),
            ("sigma_max", float(sigma_max)),
        ),
    )
