"""Fitting Newton–Schulz coefficient tables offline by gradient descent (optax Adam).

``fit_schedule`` differentiates an objective of ``optorth.ns._objectives`` with respect to the
``(T, 3)`` table and runs Adam (cosine-decayed step size, relative parametrization
c = c₀ + max(|c₀|, 0.1)·θ) from several starting tables at once (``jax.vmap``): Polar Express
tables for several ℓ, Jordan's row, and the best tables of a short derivative-free evolution
strategy seeded with them (the landscape has many local minima; measured on the 4-step
[1e-3, 1] fit, the search lowered the final loss from 0.894 to 0.865). Each start keeps its
best iterate that is stable with a 2% margin below every repelling fixed point (in-graph
check); the winner must pass ``optorth.validate_schedule``, otherwise `FitError`.

Where the singular values come from (the "data" of the fit):

* ``shape=None, spectra=None``: a log-spaced grid on [σ_min, 1] of *normalized* σ (what the
  engine sees after dividing by the norm), oversampling small σ.
* ``shape=(m, n)``: spectra drawn from ``spectrum`` (relative σ/σ_max in [σ_min, 1]) for
  matrices of that shape, then normalized exactly as the engine's preconditioner would
  (Frobenius: σ/‖σ‖₂). A shape-specific fit therefore knows that a 256×1024 matrix never
  reaches σ = 1 after Frobenius normalization.
* ``spectra=[...]``: recorded spectra (each relative to its matrix's Frobenius norm, as
  returned by ``optorth.recorded_spectra``).

Spectrum families (relative σ/σ_max, ``k = min(m, n)`` values per matrix):

* ``"log_uniform"``: log σ uniform on [log σ_min, 0] (largest set to 1);
* ``"gaussian"``: singular values of an m×n standard Gaussian matrix (Marchenko–Pastur);
* ``"power_law"``: σ_i = i^(−α) with α = ``power`` and a log-normal jitter, floored at σ_min.

References:
  Amsel et al., "The Polar Express" (arXiv 2505.16932): the minimax starting tables.
  Cesista, You, Jordan (blog, Feb 2025): gradient-descent fits of the coefficients.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optorth._checks import (
    check_choice,
    check_positive,
    check_positive_int,
)
from optorth.ns import _objectives as obj
from optorth.ns._engine import SPECTRAL_MARGIN
from optorth.ns._fit_objectives import (
    OBJECTIVE_TYPES,
    BandObjective,
    MatrixObjective,
    Objective,
    ScalarObjective,
    as_objective,
)
from optorth.ns._generators import polar_express_schedule
from optorth.ns._presets import PRESETS, as_schedule, resolve_schedule
from optorth.ns._schedule import (
    PRECONDITIONS,
    Schedule,
    check_below,
    check_safety,
    check_table,
    matrix_shape,
)
from optorth.ns._validate import ScheduleReport, validate_schedule

OBJECTIVES = tuple(OBJECTIVE_TYPES)
SPECTRUM_FAMILIES = ("log_uniform", "gaussian", "power_law")
_GRID_POINTS = 2048
_NUM_STARTS = 11
#: Polar Express starting tables use this safety factor, which keeps their overshoot inside
#: the fit's escape margin (with 1.0 the first row's image touches the next row's fixed point).
_INIT_SAFETY = 1.03


class FitError(RuntimeError):
    """A fit produced no table that passes ``validate_schedule`` (or its band constraint).

    Attributes:
      report: the `optorth.ns.ScheduleReport` of the best candidate (or ``None``).

    Example:
      >>> import optorth
      >>> try:  # a band of ±1e-3 down to σ = 1e-3 is out of reach in 2 steps
      ...     optorth.fit_schedule(2, optorth.ns.BandObjective(delta=1e-3), iterations=20,
      ...                          search=0)
      ... except optorth.ns.FitError as err:
      ...     print(err.report is not None)
      True
    """

    def __init__(self, message: str, report: ScheduleReport | None = None):
        super().__init__(message)
        self.report = report


@dataclasses.dataclass(frozen=True)
class _Data:
    """Normalized singular values the scalar objectives see, plus the worst-case interval."""

    sigma: np.ndarray
    weights: np.ndarray
    bounds: tuple[float, float]
    source: str


# ----- spectra ---------------------------------------------------------------------------------
def sample_spectra(family: str, shape, count: int, *, sigma_min: float = 1e-3, seed: int = 0,
                   power: float = 1.0) -> np.ndarray:
    """``count`` relative spectra (σ/σ_max, descending, float64) of ``shape`` matrices.

    Args:
      family: one of ``SPECTRUM_FAMILIES`` (module docstring).
      shape: ``(m, n)``; each spectrum has ``min(m, n)`` values.
      count: number of spectra.
      sigma_min: smallest relative σ (log_uniform, power_law floor).
      seed: NumPy seed.
      power: exponent α of ``"power_law"``.

    Returns:
      ``(count, min(m, n))`` array with the largest value of each row equal to 1.

    Example:
      >>> import optorth
      >>> s = optorth.ns.sample_spectra("gaussian", (8, 32), 3)
      >>> s.shape, float(s[:, 0].max())
      ((3, 8), 1.0)
    """
    who = "sample_spectra"
    check_choice(who, "family", family, SPECTRUM_FAMILIES)
    m, n = sorted(matrix_shape(who, shape))
    count = check_positive_int(who, "count", count)
    sigma_min = check_below(who, "sigma_min", sigma_min)
    check_positive(who, "power", power)
    rng = np.random.default_rng(seed)
    if family == "log_uniform":
        s = np.exp(rng.uniform(np.log(sigma_min), 0.0, size=(count, m)))
        s[:, 0] = 1.0
    elif family == "gaussian":
        s = np.stack([np.linalg.svd(rng.standard_normal((m, n)), compute_uv=False)
                      for _ in range(count)])
    elif family == "power_law":
        ranks = np.arange(1, m + 1, dtype=np.float64)
        s = ranks ** (-power) * np.exp(0.1 * rng.standard_normal((count, m)))
    else:
        raise ValueError(f"spectrum={family!r}; expected one of {SPECTRUM_FAMILIES}.")
    s = np.sort(s, axis=1)[:, ::-1]
    s = s / s[:, :1]
    return np.maximum(s, sigma_min) if family == "power_law" else s


def normalize_spectra(spectra: np.ndarray, precondition: str) -> np.ndarray:
    """Relative spectra → the σ the engine's preconditioner produces (before ``safety``)."""
    if precondition == "frobenius":
        return spectra / np.linalg.norm(spectra, axis=-1, keepdims=True)
    if precondition == "schatten":
        return spectra / np.sum(spectra**4, axis=-1, keepdims=True) ** 0.25
    if precondition == "spectral":
        return spectra / (SPECTRAL_MARGIN * spectra.max(axis=-1, keepdims=True))
    raise ValueError(
        f"precondition={precondition!r} is not a function of the spectrum alone; fit it with "
        f"objective='matrix' (which runs the engine's own preconditioning) or shape=None."
    )


def _pooled(values: np.ndarray, sigma_min: float, source: str) -> _Data:
    """Pooled σ samples as ``_GRID_POINTS`` equally spaced quantiles: they keep the
    distribution, make the loss cost independent of how much was recorded, and give every
    fit the same array shapes (one compilation for all data sources)."""
    values = np.sort(values[np.isfinite(values) & (values > 0)])
    if values.size == 0:
        raise ValueError("fit_schedule: spectra contain no positive finite singular values.")
    hi = float(values.max())
    lo = max(float(values.min()), sigma_min * hi)
    ranks = (np.arange(_GRID_POINTS) + 0.5) * values.size / _GRID_POINTS
    values = values[ranks.astype(int)]
    weights = np.full(values.size, 1.0 / values.size)
    return _Data(values, weights, (lo, hi), source)


def _scalar_data(sigma_min, shape, spectra, spectrum, precondition, seed, power) -> _Data:
    if spectra is not None:
        if len(spectra) == 0:
            raise ValueError("fit_schedule: spectra=[] holds no spectra; record some with "
                             "optorth.record_spectra or pass spectra=None.")
        if precondition != "frobenius":
            raise ValueError("fit_schedule: recorded spectra are relative to the Frobenius "
                             "norm; use precondition='frobenius' with spectra=... .")
        values = np.concatenate([np.ravel(np.asarray(s, np.float64)) for s in spectra])
        return _pooled(values, sigma_min, f"recorded ({len(spectra)} spectra)")
    if shape is None:
        grid = np.geomspace(sigma_min, 1.0, _GRID_POINTS)
        return _Data(grid, np.full(grid.size, 1.0 / grid.size), (sigma_min, 1.0), "grid")
    rel = sample_spectra(spectrum, shape, 16, sigma_min=sigma_min, seed=seed, power=power)
    return _pooled(normalize_spectra(rel, precondition).ravel(), sigma_min, spectrum)


# ----- starting tables -------------------------------------------------------------------------
def _initial_tables(steps: int, init, bounds) -> tuple[np.ndarray, list[str]]:
    """``(S, T, 3)`` starting tables: ``init`` alone, or Polar Express for several ℓ (and upper
    ends ``bounds[1]`` and 1, safety ``_INIT_SAFETY``) plus Jordan's row."""
    if init is not None:
        if isinstance(init, (str, Schedule)):
            sched = resolve_schedule(init)
            return sched.rows(steps)[None], [sched.name]
        table = check_table("fit_schedule", init)
        if table.shape != (steps, 3):
            raise ValueError(f"init must have shape ({steps}, 3); got {table.shape}.")
        return table[None], ["array"]
    lo, hi = bounds
    tables, names = [], []
    for top in (hi, 1.0) if hi < 1.0 else (1.0, 0.5):
        for factor in (1.0, 3.0, 10.0, 30.0, 100.0):
            ell = lo * factor
            if ell >= 0.5 * top:
                break
            sched = polar_express_schedule(steps, sigma_min=ell, sigma_max=top,
                                           safety=_INIT_SAFETY)
            tables.append(sched.rows())
            names.append(f"polar_express(sigma_min={ell:.3g}, sigma_max={top:.3g})")
    tables.append(PRESETS["jordan"].rows(steps))
    names.append("jordan")
    # A fixed number of starts keeps the array shapes, hence one compilation, across fits.
    picks = [i % len(tables) for i in range(_NUM_STARTS)]
    return np.stack([tables[i] for i in picks]), [names[i] for i in picks]


# ----- the optimizer ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Objective:
    """A loss ``(coeffs, data) -> scalar``; hashable by value so compilations are reused."""

    kind: str
    precondition: str = "frobenius"
    dtype: str | None = None
    safety: float = 1.0

    def __call__(self, coeffs, data):
        weights = obj.LossWeights(*data["loss_weights"])
        if self.kind == "scalar":
            return obj.scalar_loss(coeffs, data["sigma"], data["weights"], data["bounds"],
                                   weights, data["safety"])
        if self.kind == "band":
            return obj.band_loss(coeffs, data["delta"], data["bounds"], weights, data["safety"])
        return obj.matrix_loss(coeffs, data["mats"], data["u"], data["v"], data["mask"], weights,
                               precondition=self.precondition, safety=self.safety,
                               dtype=self.dtype)

    def feasible(self, coeffs, data):
        """Stable with the fit margin (and, for ``"band"``, inside the band)."""
        ok = obj.is_stable(coeffs, data["safety"], data["check_sigma"], obj.ESCAPE_MARGIN)[0]
        if self.kind != "band":
            return ok
        bounds = data["bounds"]
        band = obj.interval_images(coeffs, bounds[0] / data["safety"],
                                   bounds[1] / data["safety"])[-1]
        return ok & (jnp.maximum(jnp.abs(band[0] - 1), jnp.abs(band[1] - 1)) <= data["delta"])


@functools.partial(jax.jit, static_argnames=("objective", "iterations"))
def _adam_fit(inits, data, learning_rate, *, objective, iterations):
    """Adam on c = c₀ + scale ⊙ θ (relative steps) from each of ``inits`` (vmapped).

    Keeps, per start, the lowest-loss iterate that ``objective.feasible`` accepts. Returns
    ``(best (S, T, 3), best_loss (S,), losses (S, iterations), final (S, T, 3))``.
    """
    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, iterations, alpha=0.01))

    def run(init):
        scale = jnp.maximum(jnp.abs(init), 0.1)
        value_and_grad = jax.value_and_grad(lambda theta: objective(init + scale * theta, data))

        def body(carry, _):
            theta, state, best_loss, best = carry
            loss, grad = value_and_grad(theta)
            coeffs = init + scale * theta
            better = objective.feasible(coeffs, data) & jnp.isfinite(loss) & (loss < best_loss)
            best_loss = jnp.where(better, loss, best_loss)
            best = jnp.where(better, coeffs, best)
            grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
            updates, state = opt.update(grad, state, theta)
            return (optax.apply_updates(theta, updates), state, best_loss, best), loss

        theta = jnp.zeros_like(init)
        carry = (theta, opt.init(theta), jnp.asarray(jnp.inf, init.dtype), init)
        (theta, _, best_loss, best), losses = jax.lax.scan(body, carry, None,
                                                           length=iterations)
        return best, best_loss, losses, init + scale * theta

    return jax.vmap(run)(inits)


@functools.partial(jax.jit, static_argnames=("objective", "generations", "population",
                                             "elite"))
def _evolve(inits, data, key, *, objective, generations, population, elite):
    """Derivative-free global search seeding Adam: a (μ + λ) evolution strategy.

    Each generation draws ``population`` children c·(1 + s_g·N(0, 1)) from uniformly chosen
    parents among the ``elite`` best tables so far (s_g = 0.2·0.98^g + 0.005); unstable
    tables score +inf. Deterministic given ``key``. Returns the final elite ``(elite, T, 3)``
    sorted by loss, and their losses.
    """

    def score(c):
        return jnp.where(objective.feasible(c, data), objective(c, data), jnp.inf)

    scores = jax.vmap(score)
    reps = -(-elite // inits.shape[0])
    pool = jnp.concatenate([inits] * reps)[:elite]
    pool_scores = jnp.where(jnp.isfinite(scores(pool)), scores(pool), jnp.inf)

    def generation(carry, inputs):
        pool, pool_scores = carry
        g, key = inputs
        k_parent, k_noise = jax.random.split(key)
        spread = 0.2 * 0.98**g + 0.005
        parents = pool[jax.random.randint(k_parent, (population,), 0, elite)]
        kids = parents * (1 + spread * jax.random.normal(k_noise, parents.shape))
        kid_scores = jnp.nan_to_num(scores(kids), nan=jnp.inf)
        cand = jnp.concatenate([pool, kids])
        cand_scores = jnp.concatenate([pool_scores, kid_scores])
        order = jnp.argsort(cand_scores)[:elite]
        return (cand[order], cand_scores[order]), None

    keys = jax.random.split(key, generations)
    (pool, pool_scores), _ = jax.lax.scan(
        generation, (pool, pool_scores), (jnp.arange(generations, dtype=jnp.float32), keys))
    return pool, pool_scores


def _fit_many(inits, objective, data, iterations, learning_rate, *, search=0, seed=0,
              keep=8):
    """Adam from ``inits`` (and, if ``search`` generations, from the search's best ``keep``).

    Returns ``(tables, losses, feasible)``: the best feasible iterate of each start, or, if no
    start found any, the final iterates (for the error report) and ``feasible=False``.
    """
    data = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), data)
    inits = jnp.asarray(inits, jnp.float32)
    if search:
        pool, _ = _evolve(inits, data, jax.random.PRNGKey(seed), objective=objective,
                          generations=int(search), population=512, elite=32)
        inits = jnp.concatenate([inits, pool[:keep]])
    best, best_loss, losses, final = _adam_fit(inits, data, jnp.float32(learning_rate),
                                               objective=objective, iterations=int(iterations))
    if not np.any(np.isfinite(np.asarray(best_loss))):  # nothing feasible: report the finals
        return np.asarray(final, np.float64), np.asarray(losses[:, -1], np.float64), False
    return np.asarray(best, np.float64), np.asarray(best_loss, np.float64), True


# ----- matrix data -----------------------------------------------------------------------------
def _random_orthonormal(rng, rows, cols):
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


def _resample(spectrum: np.ndarray, k: int) -> np.ndarray:
    """A length-``k`` descending spectrum with the same quantiles as ``spectrum``."""
    s = np.sort(np.asarray(spectrum, np.float64)[np.isfinite(spectrum)])[::-1]
    return np.interp(np.linspace(0, 1, k), np.linspace(0, 1, s.size), s)


def matrix_data(shape, count, *, spectrum="log_uniform", spectra=None, sigma_min=1e-3, seed=0,
                power=1.0):
    """Test matrices X = U diag(s) Vᵀ (float32, wide orientation) with their singular vectors.

    Returns:
      ``(mats, u, v, mask)``: ``(B, m, n)``, ``(B, m, k)``, ``(B, n, k)`` float32 and a
      ``(B, k)`` mask selecting directions with s ≥ sigma_min · max(s).
    """
    m, n = sorted(int(d) for d in shape[-2:])
    rng = np.random.default_rng(seed)
    if spectra is not None:
        rel = np.stack([_resample(spectra[i % len(spectra)], m) for i in range(count)])
    else:
        rel = sample_spectra(spectrum, (m, n), count, sigma_min=sigma_min, seed=seed, power=power)
    u = np.stack([_random_orthonormal(rng, m, m) for _ in range(count)])
    v = np.stack([_random_orthonormal(rng, n, m) for _ in range(count)])
    mats = np.einsum("bik,bk,bjk->bij", u, rel, v)
    mask = (rel >= sigma_min * rel.max(axis=1, keepdims=True)).astype(np.float32)
    return tuple(jnp.asarray(a, jnp.float32) for a in (mats, u, v)) + (jnp.asarray(mask),)


# ----- public API ------------------------------------------------------------------------------
def _check_args(steps, objective, sigma_min, precondition, safety, shape, *, init=None,
                spectra=None, spectrum="log_uniform", power=1.0, iterations=None,
                learning_rate=None, search=0, seed=0, name=None):
    """Every argument of `fit_schedule` but the objective's own, checked before any work."""
    who = "fit_schedule"
    check_positive_int(who, "steps", steps)
    check_below(who, "sigma_min", sigma_min)
    check_choice(who, "precondition", precondition, PRECONDITIONS)
    check_safety(who, safety)
    if shape is not None:
        shape = matrix_shape(who, shape)
    if objective == "matrix" and shape is None:
        raise ValueError(f"{who}: optorth.ns.MatrixObjective needs shape=(m, n) of the "
                         f"matrices to fit on.")
    check_choice(who, "spectrum", spectrum, SPECTRUM_FAMILIES)
    check_positive(who, "power", power)
    check_positive_int(who, "iterations", iterations, allow_none=True)
    if learning_rate is not None:
        check_positive(who, "learning_rate", learning_rate)
    if isinstance(search, bool) or not isinstance(search, (int, np.integer)) or search < 0:
        raise ValueError(f"{who}: search must be an int >= 0 (0 disables it); got {search!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"{who}: seed must be an int; got {seed!r}.")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{who}: name must be a string or None; got {name!r}.")
    if spectra is not None and (isinstance(spectra, (str, bytes))
                                or not hasattr(spectra, "__len__")):
        raise ValueError(f"{who}: spectra must be a list of 1-D arrays of singular values; got "
                         f"{type(spectra).__name__}.")
    if isinstance(init, str):
        as_schedule(who, init)


def _provenance(objective, shape, dtype, seed, sigma_min, precondition, source, extra):
    shape_text = "any" if shape is None else "x".join(str(d) for d in sorted(shape))
    info = {
        "generator": "optorth.fit_schedule",
        "objective": objective,
        "shape": shape_text,
        "dtype": "float32" if dtype is None else jnp.dtype(dtype).name,
        "seed": int(seed),
        "sigma_min": float(sigma_min),
        "precondition": precondition,
        "spectra": source,
    }
    info.update(extra)
    return tuple(info.items())


def _select(candidates, losses, feasible, steps, sigma_min, safety, precondition, delta):
    """The lowest-loss candidate that passes ``validate_schedule`` (and the band, if any)."""
    last = None
    for i in np.argsort(np.where(np.isfinite(losses), losses, np.inf)):
        if not np.isfinite(losses[i]):
            continue
        sched = Schedule(table=tuple(map(tuple, candidates[i])), name="candidate",
                         safety=safety, precondition=precondition)
        report = validate_schedule(sched, sigma_min=sigma_min)
        band_ok = delta is None or report.max_error <= delta * (1 + 1e-3)
        if feasible and report.ok and band_ok:
            return i, report
        last = report if last is None else last
    if last is not None and last.ok and delta is not None and last.max_error > delta:
        why = (f"the band constraint |φ − 1| ≤ {delta} on [{sigma_min}, 1] is not met (best: "
               f"{last.max_error:.4g}); raise delta or sigma_min, or add steps")
    else:
        why = ("no iterate was stable with the fit margin"
               + (f" and inside the band |φ − 1| ≤ {delta}" if delta is not None else "")
               + "; try more iterations or search generations, or a different init")
    raise FitError(f"fit_schedule({steps} steps) failed: {why}.\n{last}", last)


def fit_schedule(
    steps: int,
    objective: str | Objective = "scalar",
    *,
    sigma_min: float = 1e-3,
    shape: tuple[int, int] | None = None,
    precondition: str = "frobenius",
    safety: float = 1.0,
    init: str | Schedule | Any = None,
    seed: int = 0,
    spectra: Sequence[Any] | None = None,
    spectrum: str = "log_uniform",
    power: float = 1.0,
    iterations: int | None = None,
    learning_rate: float | None = None,
    search: int = 400,
    name: str | None = None,
    **deprecated: Any,
) -> Schedule:
    """Fits a ``steps``-row Newton–Schulz table by gradient descent through the iteration.

    The objective is an object holding its own settings (math in ``optorth.ns._objectives``):

    - `optorth.ns.ScalarObjective` (``mean_weight``, ``worst_weight``): w_mean · mean|φ(σ) − 1|
      + w_max · max|φ(σ) − 1| over the data's σ (the max exact on its interval), plus
      penalties forbidding sign flips and escapes past a repelling fixed point.
    - `optorth.ns.BandObjective` (``delta``): maximize φ′(0) = ∏a subject to
      φ(σ) ∈ [1 − δ, 1 + δ] on the data's interval (penalty); raises `FitError` if the band
      cannot be met.
    - `optorth.ns.MatrixObjective` (``dtype``, ``num_matrices``, weights): mean and
      smooth-max of |u_iᵀ NS(X) v_i − 1| over random matrices of ``shape`` run through
      ``optorth.newton_schulz`` in ``dtype`` (bf16 round-off is learned). Starts from the
      scalar fit on the same spectra unless ``init``.

    Args:
      steps: number of rows T (static).
      objective: an objective object, or its name (``"scalar"``, ``"band"``, ``"matrix"``)
        for its defaults.
      sigma_min: smallest σ that must be brought to 1 (relative to the largest for spectra).
      shape: matrix shape ``(m, n)``: the spectra are drawn for it and normalized as the
        engine does; ``None`` fits normalized σ ∈ [sigma_min, 1] directly.
      precondition: the engine's normalization the table is fitted for.
      safety: normalization safety factor stored in the schedule (σ enters as σ / safety).
      init: a preset name, Schedule or ``(T, 3)`` array to start from; ``None`` starts from
        Polar Express tables for several ℓ and from Jordan's row, keeping the best.
      seed: seed of the sampled spectra and matrices (the fit is deterministic given it).
      spectra: recorded spectra, each relative to its matrix's Frobenius norm
        (``optorth.recorded_spectra``); overrides ``spectrum``.
      spectrum: family of sampled spectra when ``shape`` is given (``SPECTRUM_FAMILIES``).
      power: exponent of the ``"power_law"`` family.
      iterations: Adam steps (default 3000 scalar/band, 150 matrix).
      learning_rate: Adam's peak relative step (default 3e-3 scalar/band, 3e-4 matrix).
      search: generations of the derivative-free evolution-strategy search whose best tables
        seed Adam (scalar and band objectives; 0 disables, e.g. when ``init`` is given).
      name: the schedule's name (default ``"fitted{steps}"``).
      **deprecated: ``delta``, ``mean_weight``, ``worst_weight``, ``dtype``, ``num_matrices``
        as keywords, the objective's settings before the objective objects; they still work,
        with a ``DeprecationWarning``.

    Returns:
      A validated `optorth.Schedule` (``extend="fixed"``) with provenance.

    Raises:
      FitError: if no fitted table passes ``validate_schedule`` (or the band constraint).

    Example:
      >>> import optorth, jax.numpy as jnp
      >>> objective = optorth.ns.ScalarObjective(worst_weight=0.2)
      >>> sched = optorth.fit_schedule(3, objective, iterations=200, search=0)
      >>> optorth.validate_schedule(sched).ok
      True
      >>> optorth.newton_schulz(jnp.eye(4, 8), sched).shape
      (4, 8)
    """
    fit = as_objective("fit_schedule", objective, deprecated)
    _check_args(steps, fit.name, sigma_min, precondition, safety, shape, init=init,
                spectra=spectra, spectrum=spectrum, power=power, iterations=iterations,
                learning_rate=learning_rate, search=search, seed=seed, name=name)
    if isinstance(fit, MatrixObjective):
        return _fit_matrix(steps, fit, sigma_min=sigma_min, shape=shape,
                           precondition=precondition, safety=safety, init=init, seed=seed,
                           spectra=spectra, spectrum=spectrum, power=power,
                           iterations=iterations or 150, learning_rate=learning_rate or 3e-4,
                           search=search, name=name)
    mean_weight, worst_weight = (fit.mean_weight, fit.worst_weight) if isinstance(
        fit, ScalarObjective) else (1.0, 1.0)
    delta = fit.delta if isinstance(fit, BandObjective) else BandObjective.delta
    data = _scalar_data(sigma_min, shape, spectra, spectrum, precondition, seed, power)
    iterations, learning_rate = iterations or 3000, learning_rate or 3e-3
    data_tree = {
        "sigma": data.sigma, "weights": data.weights, "bounds": data.bounds,
        "loss_weights": tuple(obj.LossWeights(mean=mean_weight, worst=worst_weight)),
        "safety": safety, "delta": delta, "check_sigma": min(sigma_min, data.bounds[0]),
    }
    inits, names = _initial_tables(steps, init, data.bounds)
    candidates, losses, feasible = _fit_many(inits, _Objective(fit.name), data_tree,
                                             iterations, learning_rate, search=search, seed=seed)
    names = names + [f"evolution strategy ({search} generations) #{i}"
                     for i in range(len(candidates) - len(names))]
    index, report = _select(candidates, losses, feasible, steps, sigma_min, safety,
                            precondition, delta if fit.name == "band" else None)
    extra = {"init": names[index], "iterations": int(iterations),
             "learning_rate": float(learning_rate), "loss": float(losses[index]),
             "mean_weight": float(mean_weight), "worst_weight": float(worst_weight),
             "sigma_interval": f"[{data.bounds[0]:.4g}, {data.bounds[1]:.4g}]"}
    if fit.name == "band":
        extra["delta"] = float(delta)
    return Schedule(
        table=tuple(map(tuple, candidates[index])),
        name=name or f"fitted{steps}",
        safety=safety,
        precondition=precondition,
        extend="fixed",
        provenance=_provenance(fit.name, shape, None, seed, sigma_min, precondition,
                               data.source, extra) + _report_items(report),
    )


def _report_items(report: ScheduleReport):
    return (("band_lo", float(report.band[0])), ("band_hi", float(report.band[1])),
            ("max_error", float(report.max_error)), ("mean_error", float(report.mean_error)),
            ("slope_at_zero", float(report.slope_at_zero)))


def _fit_matrix(steps, fit: MatrixObjective, *, sigma_min, shape, precondition, safety, init,
                seed, spectra, spectrum, power, iterations, learning_rate, search, name):
    dtype, num_matrices = fit.dtype, fit.num_matrices
    mean_weight, worst_weight = fit.mean_weight, fit.worst_weight
    if init is None:
        scalar_pre = precondition if precondition in ("frobenius", "schatten", "spectral") \
            else "frobenius"
        if spectra is not None and scalar_pre != "frobenius":
            scalar_pre = "frobenius"
        start = fit_schedule(steps, ScalarObjective(mean_weight, worst_weight),
                             sigma_min=sigma_min, shape=shape, precondition=scalar_pre,
                             safety=safety, seed=seed, spectra=spectra, spectrum=spectrum,
                             power=power, search=search)
        init, init_name = start.rows(), "scalar fit on the same spectra"
    else:
        init_name = init if isinstance(init, str) else getattr(init, "name", "array")
    inits, _ = _initial_tables(steps, init, (sigma_min, 1.0))
    mats, u, v, mask = matrix_data(shape, num_matrices, spectrum=spectrum, spectra=spectra,
                                   sigma_min=sigma_min, seed=seed, power=power)
    data_tree = {
        "mats": mats, "u": u, "v": v, "mask": mask, "safety": safety, "check_sigma": sigma_min,
        "loss_weights": tuple(obj.LossWeights(mean=mean_weight, worst=worst_weight)),
    }
    objective = _Objective("matrix", precondition,
                           None if dtype is None else jnp.dtype(dtype).name, float(safety))
    candidates, losses, feasible = _fit_many(inits, objective, data_tree, iterations,
                                             learning_rate)
    index, report = _select(candidates, losses, feasible, steps, sigma_min, safety,
                            precondition, None)
    source = f"recorded ({len(spectra)} spectra)" if spectra is not None else spectrum
    extra = {"init": init_name, "iterations": int(iterations),
             "learning_rate": float(learning_rate), "loss": float(losses[index]),
             "num_matrices": int(num_matrices), "mean_weight": float(mean_weight),
             "worst_weight": float(worst_weight)}
    return Schedule(
        table=tuple(map(tuple, candidates[index])),
        name=name or f"fitted{steps}_{jnp.dtype(dtype or jnp.float32).name}",
        safety=safety,
        precondition=precondition,
        extend="fixed",
        provenance=_provenance("matrix", shape, dtype, seed, sigma_min, precondition, source,
                               extra) + _report_items(report),
    )
