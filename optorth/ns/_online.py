"""Online refinement of the Newton–Schulz coefficient table inside the optimizer state.

Every ``every`` updates, `refine_coefficients` takes a few matrices the optimizer is
about to orthogonalize (the momentum), runs ``inner_steps`` Adam steps on an objective of
the table computed with the real engine in the compute dtype, and accepts the result only if
an in-graph stability check (the jit-compatible twin of ``optorth.validate_schedule``,
`optorth.ns._objectives.is_stable`) passes and the objective did not get worse on those
matrices; otherwise the current (last valid) table is kept. The step count T is static, the
table is a plain ``(T, 3)`` float32 array (checkpointable), and the work runs under
``lax.cond`` so the other updates only pay for the predicate.

Objectives (``OnlineLearning.objective``):

* ``"orthogonality"``: mean over the sampled matrices of ‖O Oᵀ − I‖_F² / m with
  O = NS_c(M) in the compute dtype (= mean_i (φ(σ_i)² − 1)² plus round-off);
* ``"spectrum"``: one float32 SVD per sampled matrix, then mean_i |φ(σ_i) − 1| over the
  normalized singular values in exact arithmetic (cheap inner steps; no round-off).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optorth._checks import (
    check_choice,
    check_dtype,
    check_nonnegative,
    check_positive,
    check_positive_int,
)
from optorth.ns import _objectives as obj
from optorth.ns._engine import SPECTRAL_MARGIN, newton_schulz_table
from optorth.ns._schedule import PRECONDITIONS, check_safety, check_table

ONLINE_OBJECTIVES = ("orthogonality", "spectrum")
_WHO = "OnlineLearning"


@dataclasses.dataclass(frozen=True)
class OnlineLearning:
    """Configuration of online coefficient learning (static, hashable).

    Attributes:
      every: refine after every ``every`` updates (at counts every−1, 2·every−1, …). One
        refinement with the defaults costs about six updates of the orthogonalization block
        (``benchmarks/online_overhead.py``), so ``every`` ≥ 60 keeps the overhead ≤ 10%.
      inner_steps: Adam steps per refinement (static).
      learning_rate: Adam's step on the relative parametrization c = c₀ + max(|c₀|, 0.1)·θ.
      objective: ``"orthogonality"`` or ``"spectrum"`` (module docstring).
      dtype: compute dtype of the objective; ``None`` uses the engine's compute dtype.
      max_matrices: matrices sampled per refinement (one per leaf group, evenly spaced; for
        a batch of matrices, one entry rotating with each refinement).
      sigma_min: lower end of the interval on which the stability check requires φ > 0.
      max_error: if set, also reject tables with max |φ − 1| on [sigma_min, 1] above it.
      margin: reject tables whose image at some step comes within this relative margin of
        the next row's repelling fixed point (0: the validator's rule; fits use 0.02).

    Raises:
      ValueError: where it is built, for a non-positive or non-integer count, an unknown
        objective, a learning rate that is not a finite number > 0, sigma_min outside
        (0, 1), max_error ≤ 0, margin outside [0, 1) or a non-floating dtype.

    Example:
      >>> import optorth
      >>> ns = optorth.NewtonSchulz("polar_express5", learn=optorth.OnlineLearning(every=200))
      >>> ns.learn.every
      200
    """

    every: int = 100
    inner_steps: int = 4
    learning_rate: float = 1e-3
    objective: str = "orthogonality"
    dtype: Any = None
    max_matrices: int = 4
    sigma_min: float = 1e-3
    max_error: float | None = None
    margin: float = 0.0

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for name in ("every", "inner_steps", "max_matrices"):
            set_(name, check_positive_int(_WHO, name, getattr(self, name)))
        check_choice(_WHO, "objective", self.objective, ONLINE_OBJECTIVES)
        if isinstance(self.learning_rate, jax.Array):
            raise ValueError(f"{_WHO}: learning_rate must be a Python number (the config is "
                             f"static); got {self.learning_rate!r}.")
        set_("learning_rate", float(check_positive(_WHO, "learning_rate", self.learning_rate)))
        sigma_min = check_positive(_WHO, "sigma_min", self.sigma_min)
        if not float(sigma_min) < 1.0:
            raise ValueError(f"{_WHO}: sigma_min must lie in (0, 1); got {self.sigma_min!r}.")
        set_("sigma_min", float(sigma_min))
        if self.max_error is not None:
            set_("max_error", float(check_positive(_WHO, "max_error", self.max_error)))
        set_("margin", float(check_nonnegative(_WHO, "margin", self.margin)))
        if not self.margin < 1.0:
            raise ValueError(f"{_WHO}: margin must lie in [0, 1) (a fraction of the repelling "
                             f"fixed point); got {self.margin!r}.")
        set_("dtype", check_dtype(_WHO, "dtype", self.dtype))


class RefineInfo(NamedTuple):
    """What one call of `refine_coefficients` did (scalars; NaN losses if skipped).

    Example:
      >>> import optorth, jax.numpy as jnp
      >>> table = jnp.asarray([(3.4445, -4.7750, 2.0315)] * 5)
      >>> _, info = optorth.ns.refine_coefficients(table, [jnp.eye(4, 8)],
      ...                                          optorth.OnlineLearning(every=10), count=0)
      >>> bool(info.refined)  # due at counts 9, 19, ...
      False
    """

    refined: jax.Array
    accepted: jax.Array
    loss_before: jax.Array
    loss_after: jax.Array


def sample_matrices(matrices: Sequence[jax.Array], max_matrices: int, index) -> list[jax.Array]:
    """Up to ``max_matrices`` single matrices from a list of ``(..., m, n)`` arrays.

    Arrays are chosen evenly spaced in list order (static); from each, matrix number
    ``index`` modulo its batch size (``index`` may be traced).
    """
    matrices = [m for m in matrices if m.ndim >= 2 and min(m.shape[-2:]) >= 1]
    if len(matrices) > max_matrices:
        picks = np.round(np.linspace(0, len(matrices) - 1, max_matrices)).astype(int)
        matrices = [matrices[i] for i in picks]
    out = []
    for mats in matrices:
        flat = jnp.reshape(mats, (-1,) + mats.shape[-2:])
        out.append(jax.lax.dynamic_index_in_dim(flat, index % flat.shape[0], keepdims=False))
    return out


def _orthogonality(coeffs, mats, engine):
    losses = [obj.orthogonality_loss(newton_schulz_table(m, coeffs, **engine)) for m in mats]
    return jnp.mean(jnp.stack(losses))


def _normalized_spectrum(mat, precondition):
    sigma = jnp.linalg.svd(mat.astype(jnp.float32), compute_uv=False)
    if precondition == "schatten":
        norm = jnp.sum(sigma**4) ** 0.25
    elif precondition == "spectral":
        norm = sigma[0] * SPECTRAL_MARGIN
    else:
        norm = jnp.sqrt(jnp.sum(jnp.square(sigma)))
    return sigma / jnp.where(norm > 0, norm, 1.0)


def _spectrum_loss(coeffs, sigma, safety, margin):
    phi, _ = obj.composed_map(coeffs, sigma / safety)
    return (jnp.mean(jnp.abs(phi - 1.0))
            + obj.LossWeights().penalty * obj.stability_penalty(coeffs, safety, margin))


def _make_loss(config: OnlineLearning, mats, engine):
    """``loss(coeffs)`` for the configured objective on the sampled matrices."""
    if config.objective == "orthogonality":
        return lambda c: (_orthogonality(c, mats, engine)
                          + obj.LossWeights().penalty * obj.stability_penalty(
                              c, engine["safety"], config.margin))
    if engine["precondition"] == "aol":
        raise ValueError("OnlineLearning(objective='spectrum') needs a normalization that is a "
                         "function of the spectrum; with precondition='aol' use "
                         "objective='orthogonality'.")
    sigma = jnp.concatenate([_normalized_spectrum(m, engine["precondition"]) for m in mats])
    sigma = jax.lax.stop_gradient(sigma)
    return lambda c: _spectrum_loss(c, sigma, engine["safety"], config.margin)


def _refine(coeffs, mats, config: OnlineLearning, engine):
    """Inner Adam steps, then accept-or-fallback. Returns ``(coeffs, RefineInfo)``."""
    loss = _make_loss(config, mats, engine)
    scale = jnp.maximum(jnp.abs(coeffs), 0.1)
    opt = optax.adam(config.learning_rate)
    value_and_grad = jax.value_and_grad(lambda theta: loss(coeffs + scale * theta))

    def body(carry, _):
        theta, state = carry
        value, grad = value_and_grad(theta)
        grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
        updates, state = opt.update(grad, state, theta)
        return (optax.apply_updates(theta, updates), state), value

    theta = jnp.zeros_like(coeffs)
    (theta, _), values = jax.lax.scan(body, (theta, opt.init(theta)), None,
                                      length=config.inner_steps)
    candidate = coeffs + scale * theta
    loss_after = loss(candidate)
    ok, max_error = obj.is_stable(candidate, engine["safety"], config.sigma_min, config.margin)
    if config.max_error is not None:
        ok &= max_error <= config.max_error
    accepted = ok & jnp.isfinite(loss_after) & (loss_after <= values[0])
    new = jnp.where(accepted, candidate, coeffs)
    return new, RefineInfo(jnp.asarray(True), accepted, values[0], loss_after)


def refine_coefficients(
    coeffs,
    matrices: Sequence[jax.Array],
    config: OnlineLearning,
    *,
    count=None,
    precondition: str = "frobenius",
    safety: float = 1.0,
    dtype: Any = None,
    method: str = "standard",
    eps: float = 1e-7,
) -> tuple[jax.Array, RefineInfo]:
    """One (possibly skipped) online refinement of a ``(T, 3)`` coefficient table.

    Pure and jit-able. When ``count`` is given, the refinement runs under ``lax.cond`` only
    if ``(count + 1) % config.every == 0``; otherwise ``coeffs`` is returned unchanged.

    Args:
      coeffs: the current ``(T, 3)`` float32 table (assumed valid).
      matrices: arrays ``(..., m, n)`` about to be orthogonalized (e.g. the ``(B, m, n)``
        groups of the momentum); a few are sampled (`sample_matrices`).
      config: `OnlineLearning`.
      count: int32 update counter (traced), or ``None`` to refine unconditionally.
      precondition, safety, dtype, method, eps: the engine settings the table is used with
        (``optorth.newton_schulz``); ``config.dtype`` overrides ``dtype`` for the objective.

    Returns:
      ``(new_coeffs, info)``: the refined table if it was accepted, else ``coeffs``; and a
      `RefineInfo`.

    Example:
      >>> import optorth, jax.numpy as jnp, numpy as np
      >>> table = jnp.asarray(optorth.ns.PRESETS["polar_express5"].rows(), jnp.float32)
      >>> mats = [jnp.asarray(np.random.default_rng(0).standard_normal((8, 16)), jnp.float32)]
      >>> new, info = optorth.ns.refine_coefficients(
      ...     table, mats, optorth.OnlineLearning(every=1, inner_steps=2), safety=1.02)
      >>> new.shape, bool(info.refined)
      ((5, 3), True)
    """
    who = "refine_coefficients"
    coeffs = jnp.asarray(check_table(who, coeffs), jnp.float32)
    check_choice(who, "precondition", precondition, PRECONDITIONS)
    check_safety(who, safety)
    check_positive(who, "eps", eps)
    if not isinstance(config, OnlineLearning):
        raise ValueError(f"{who}: config must be an optorth.OnlineLearning; got "
                         f"{type(config).__name__}. Example: optorth.OnlineLearning(every=100).")
    if isinstance(matrices, (str, bytes, np.ndarray, jax.Array)) or not isinstance(
            matrices, Sequence):
        raise ValueError(f"{who}: matrices must be a list of (..., m, n) arrays; got "
                         f"{type(matrices).__name__}. Wrap a single array as [x].")
    for i, m in enumerate(matrices):
        if not (hasattr(m, "ndim") and m.ndim >= 2):
            raise ValueError(f"{who}: matrices[{i}] must be an array of shape (..., m, n); got "
                             f"{getattr(m, 'shape', type(m).__name__)}.")
    engine = {"precondition": precondition, "safety": float(safety), "method": method,
              "eps": eps, "dtype": config.dtype if config.dtype is not None else dtype}
    matrices = [m for m in matrices if m.ndim >= 2 and min(m.shape[-2:]) >= 1]
    if not matrices:
        return coeffs, _skipped()
    index = jnp.asarray(0 if count is None else count, jnp.int32) // config.every

    def refine(c, mats):  # sampling happens inside the branch: skipped steps copy nothing
        return _refine(c, sample_matrices(mats, config.max_matrices, index), config, engine)

    if count is None:
        return refine(coeffs, matrices)
    due = (jnp.asarray(count) + 1) % config.every == 0
    return jax.lax.cond(due, refine, lambda c, m: (c, _skipped()), coeffs, matrices)


def _skipped() -> RefineInfo:
    nan = jnp.asarray(jnp.nan, jnp.float32)
    return RefineInfo(jnp.asarray(False), jnp.asarray(False), nan, nan)
