"""Adafactor as a chain of per-matrix blocks.

With no arguments, ``adafactor()`` is exactly the proposal of Shazeer & Stern (2018),
Algorithm 4 / 5 with the settings of their section 9: for each weight matrix X (n × m),

    ρ_t = min(1e-2, 1/√t)                                   (relative step schedule)
    α_t = max(ε2, RMS(X_{t−1})) · ρ_t,  ε2 = 1e-3
    β̂2_t = 1 − t^(−0.8),  ε1 = 1e-30
    R_t = β̂2_t R_{t−1} + (1 − β̂2_t) rowmean(G² + ε1)
    C_t = β̂2_t C_{t−1} + (1 − β̂2_t) colmean(G² + ε1)
    U_t = G / sqrt(R_t C_tᵀ / mean(R_t))
    Û_t = U_t / max(1, RMS(U_t) / d),  d = 1
    X_t = X_{t−1} − α_t Û_t

vectors and scalars use an unfactored V_t, no momentum (β1 = 0).

Extensions (all off by default): momentum β1 (``beta``) applied after the scaling, i.e. to
max(ε2, RMS(X))·Û_t, as an EMA without debiasing; decoupled weight decay λ with a mask, scaled
by ρ_t like AdamW's decay is scaled by the learning rate:

    X_t = X_{t−1} − ρ_t ( EMA_β1[max(ε2, RMS(X_{t−1})) Û_t] + λ X_{t−1} )

References:
  Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost"
  (arXiv 1804.04235).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optorth._checks import (
    check_bool,
    check_decay,
    check_dtype,
    check_learning_rate,
    check_nonnegative,
    check_positive,
)
from optorth.blocks._block_rms import clip_by_rms, scale_by_param_rms
from optorth.blocks._clip_gradients import clip_gradients
from optorth.blocks._compute_dtype import run_in_dtype
from optorth.blocks._factored import scale_by_factored_rms
from optorth.blocks._weight_decay import WeightDecay, around_learning_rate, as_weight_decay
from optorth.matrices._routing import route_or_fallback
from optorth.optimizers._assemble import guard


def relative_step_schedule(max_step: float = 1e-2) -> optax.Schedule:
    """Adafactor's ρ_t = min(max_step, 1/√t) with t = count + 1 (paper: max_step = 1e-2).

    Args:
      max_step: the constant part of the schedule; 1/√t takes over after 1/max_step² steps.

    Returns:
      A schedule ``count -> ρ`` (count = 0 at the first update), float32.
    """

    def schedule(count):
        t = jnp.asarray(count, jnp.float32) + 1.0
        return jnp.minimum(jnp.asarray(max_step, jnp.float32), jax.lax.rsqrt(t))

    return schedule


def adafactor(
    learning_rate: optax.ScalarOrSchedule | None = None,
    *,
    decay_rate: float = 0.8,
    eps: float = 1e-30,
    min_scale: float = 1e-3,
    clipping_threshold: float | None = 1.0,
    multiply_by_parameter_scale: bool = True,
    beta: float | None = None,
    weight_decay: float | WeightDecay | None = None,
    weight_decay_mask: Any = None,
    rules: Any = None,
    mu_dtype: Any = None,
    min_dim_size_to_factor: int | None = None,
) -> optax.GradientTransformation:
    """The Adafactor optimizer; with no arguments exactly the paper's proposal.

    Chain: ``scale_by_factored_rms`` → ``clip_by_rms(d)`` → ``scale_by_param_rms(ε2)`` →
    [``optax.ema(β1)``] → [``optax.add_decayed_weights(λ, mask)``] → ``−ρ_t``.
    Statistics are float32 and per matrix (batch axes of stacked / conv leaves respected).
    For a step offset or a cap on β̂2_t (fine-tuning), chain
    `optorth.scale_by_factored_rms` yourself.

    State size: m + n float32 values per m × n matrix, one per element of vectors and scalars
    (plus one momentum value per element when ``beta`` is set).

    Args:
      learning_rate: ρ_t, a float or schedule; ``None`` uses the relative step schedule
        ``min(1e-2, 1/√t)``. With ``multiply_by_parameter_scale`` this is a *relative* step.
      decay_rate: c in β̂2_t = 1 − t^(−c).
      eps: ε1 added to G² (> 0).
      min_scale: ε2, floor of the parameter RMS in the relative step (> 0).
      clipping_threshold: d in Û = U / max(1, RMS(U)/d); ``None`` disables clipping.
      multiply_by_parameter_scale: scale by max(ε2, RMS(X_{t−1})) per matrix.
      beta: β1 of an (undebiased) momentum EMA applied after the scaling; ``None``: none.
      weight_decay: λ of decoupled weight decay, multiplied by ρ_t, or an
        `optorth.WeightDecay` (cautious, independent of ρ_t); ``None`` disables it.
      weight_decay_mask: pytree of booleans or a callable ``params -> pytree`` (True: decay).
      rules: routing rules (`optorth.route`): how each leaf becomes matrices. Leaves
        routed to the fallback (embeddings, heads) and rank-3 / rank ≥ 5 leaves that no rule
        covers are factored over their last two axes (the paper's convention; every leaf
        ``optax.adafactor`` accepts is accepted).
      mu_dtype: dtype of the momentum buffer (``None``: the parameters' dtype), e.g.
        "float32" for bf16 parameters. Statistics are always float32.
      min_dim_size_to_factor: factor only matrices with min(m, n) ≥ this (``None``: all).

    Returns:
      An ``optax.GradientTransformation`` whose updates have the gradients' dtype. Works
      under ``optax.inject_hyperparams`` (numeric arguments become injectable; pass dtypes as
      strings and list a callable ``weight_decay_mask`` in ``static_args``).

    Example:
      >>> import jax.numpy as jnp, optax, optorth
      >>> params = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> tx = optorth.adafactor()
      >>> state = tx.init(params)
      >>> updates, state = tx.update(params, state, params)
      >>> params = optax.apply_updates(params, updates)

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost"
      (arXiv 1804.04235).
    """
    who = "optorth.adafactor"
    learning_rate = relative_step_schedule(1e-2) if learning_rate is None else learning_rate
    check_learning_rate(who, learning_rate)
    check_bool(who, "multiply_by_parameter_scale", multiply_by_parameter_scale)
    check_nonnegative(who, "decay_rate", decay_rate)
    check_positive(who, "eps", eps)
    check_positive(who, "min_scale", min_scale)
    if clipping_threshold is not None:
        check_positive(who, "clipping_threshold", clipping_threshold)
    dtype = check_dtype(who, "mu_dtype", mu_dtype)  # checked even when unused (no beta)
    def specs(tree):  # like optax.adafactor, refuse no leaf: a rank-3 leaf that no rule
        return route_or_fallback(tree, rules)  # covers is matrices over its last two axes

    chain = [scale_by_factored_rms(decay_rate=decay_rate, eps=eps, specs=specs,
                                   min_dim_size_to_factor=min_dim_size_to_factor)]
    if clipping_threshold is not None:
        chain.append(clip_by_rms(clipping_threshold, specs=specs))
    if multiply_by_parameter_scale:
        chain.append(scale_by_param_rms(min_scale, specs=specs))
    if beta is not None:
        check_decay(who, "beta", beta)
        chain.append(optax.ema(beta, debias=False, accumulator_dtype=dtype))
    if weight_decay is None:
        chain.append(optax.scale_by_learning_rate(learning_rate))
    else:
        weight_decay = as_weight_decay(who, weight_decay)
        chain.extend(around_learning_rate(weight_decay, weight_decay_mask, learning_rate))
    # Entries beyond ±2⁶⁰ are clipped: G² would overflow the second-moment statistics to inf
    # (from |g| ≈ 1.8e19), after which the leaf's updates are 0 for good.
    return guard("adafactor", clip_gradients(run_in_dtype(optax.chain(*chain), None)))
