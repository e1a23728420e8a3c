"""Generalized Polyak step size for heavy-ball momentum (Wang, Johansson, Zhang, ICML 2023).

Heavy ball written in the paper's moving-average-gradient form,

    d_k = g_k + β d_{k−1},        x_{k+1} = x_k − η_k d_k,

with η_k the Polyak step of the *momentum direction* d_k: the minimiser of the convexity upper
bound on ‖x_{k+1} − x*‖², made computable with the lower bound f* of the loss.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optorth._checks import (
    check_bool,
    check_choice,
    check_decay,
    check_loss_value,
    check_nonnegative,
    check_positive,
    concrete_float,
)

_WHO = "polyak_momentum"
VARIANTS = ("deterministic", "stochastic")


class PolyakMomentumState(NamedTuple):
    """State of `polyak_momentum`: step count, momentum d_k, and the last step η_k."""

    count: jax.Array  # int32 scalar
    momentum: Any  # d_k, float32 at least
    step_size: jax.Array  # float32 scalar, η of the last update (for logging)


def _state_dtype(dtype):
    return jnp.promote_types(dtype, jnp.float32)


def _check_value(value, f_star) -> None:
    check_loss_value(_WHO, value)
    v, f = concrete_float(value), concrete_float(f_star)
    if v is not None and not np.isfinite(v):
        raise ValueError(
            f"{_WHO}: the loss value={v!r} is not finite; the Polyak step (f − f*)/‖d‖² is "
            f"undefined. Under jax.jit, where the value cannot be inspected, the update is "
            f"NaN, so optax.apply_if_finite skips it.")
    if v is not None and f is not None and v < f:
        raise ValueError(
            f"{_WHO}: the loss value={v!r} is below f_star={f!r}; f_star must be a lower "
            f"bound of every loss passed (0 for non-negative losses). Under jax.jit, where "
            f"the value cannot be inspected, such a step is clipped to a zero step instead.")


def polyak_momentum(
    beta: float = 0.9,
    *,
    f_star: float = 0.0,
    max_step: float = 1.0,
    variant: str = "deterministic",
    c: float = 1.0,
    nesterov: bool = False,
    eps: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Heavy ball with the generalized Polyak step size (ALR-MAG / ALR-SMAG).

    With gradient g_k (of the mini-batch loss f_{S_k} in the stochastic variant), loss value
    f_k = ``value`` at the current parameters and lower bound f* = ``f_star``:

        d_k = g_k + β d_{k−1}                                   (d_{−1} = 0)
        η_k = min( max(f_k − f*, 0) / (c ‖d_k‖² + ε),  η_max )   (0 where c‖d_k‖² + ε = 0)
        update = −η_k d_k

    The norm runs over the whole parameter vector (all leaves together).
    ``variant="deterministic"`` (ALR-MAG) uses c = 1: expanding
    ‖x_{k+1} − x*‖² = ‖x_k − x*‖² − 2η⟨d_k, x_k − x*⟩ + η²‖d_k‖² and bounding
    ⟨d_k, x_k − x*⟩ = ⟨g_k, x_k − x*⟩ + β⟨d_{k−1}, x_k − x*⟩ ≥ f_k − f* by convexity and the
    previous step's choice gives the minimiser (f_k − f*)/‖d_k‖² (the Polyak step of GD with
    the momentum direction in place of the gradient; η_{k−1}‖d_{k−1}‖² ≤ f_{k−1} − f* keeps
    the bound valid when the cap is active). ``variant="stochastic"`` (ALR-SMAG) uses the
    mini-batch loss and its lower bound (f* = 0 for interpolating models) with the constant
    ``c`` of the stochastic analysis in the denominator, like SPS_max. The two variants run the
    same update; the stochastic one is the deterministic one with ``c`` ≠ 1 allowed, and f_k,
    g_k taken on the same mini-batch.

    Equivalently, heavy ball x_{k+1} = x_k − η_k g_k + β (η_k/η_{k−1})(x_k − x_{k−1}). The cap
    ``max_step`` (η_max) bounds the step where ‖d_k‖ is small. A loss below f* would give a
    negative step: a concrete ``value`` below ``f_star`` raises ``ValueError``; a traced one
    (under ``jax.jit``) gives η_k = 0 (the momentum is still accumulated). Zero gradients give
    a zero step. ``β = 0`` is optax's ``polyak_sgd`` (variant ``"sps+"``).

    Args:
      beta: momentum β in [0, 1) (injectable).
      f_star: lower bound f* of the loss (of every mini-batch loss for the stochastic variant)
        (injectable).
      max_step: the cap η_max ≥ 0 on the step size (injectable).
      variant: ``"deterministic"`` (ALR-MAG) or ``"stochastic"`` (ALR-SMAG).
      c: the constant c > 0 of the stochastic step (injectable); must be 1 for the
        deterministic variant.
      nesterov: only ``False``. The paper's step is derived for the heavy-ball (moving average
        gradient) form; no Nesterov form of it is offered here.
      eps: ε ≥ 0 added to the denominator (injectable).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state `PolyakMomentumState`,
      whose ``update(grads, state, params=None, *, value)`` requires the loss ``value``; the
      output is the full update (apply with ``optax.apply_updates``) in the gradients' dtype.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from optorth.contrib import polyak_momentum
      >>> loss_fn = lambda p: 0.5 * jnp.sum(p["w"] ** 2)
      >>> params = {"w": jnp.array([2.0, 0.0])}
      >>> tx = polyak_momentum(beta=0.5, max_step=10.0)
      >>> state = tx.init(params)
      >>> loss, grads = jax.value_and_grad(loss_fn)(params)
      >>> updates, state = tx.update(grads, state, params, value=loss)
      >>> float(state.step_size), optax.apply_updates(params, updates)["w"].tolist()
      (0.5, [1.0, 0.0])

    References:
      Wang, Johansson, Zhang, "Generalized Polyak Step Size for First Order Optimization with
      Momentum", ICML 2023, arXiv 2305.12939.
      Loizou, Vaswani, Laradji, Lacoste-Julien, "Stochastic Polyak Step-size for SGD: An
      Adaptive Learning Rate for Fast Convergence", AISTATS 2021, arXiv 2002.10542.
    """
    check_decay(_WHO, "beta", beta)
    if concrete_float(f_star) is None and not isinstance(f_star, jax.core.Tracer):
        raise ValueError(f"{_WHO}: f_star must be a real number (a lower bound of the loss, "
                         f"0 for non-negative losses); got {f_star!r}.")
    if (number := concrete_float(f_star)) is not None and number != number:
        raise ValueError(f"{_WHO}: f_star must not be NaN.")
    check_nonnegative(_WHO, "max_step", max_step)
    check_nonnegative(_WHO, "eps", eps)
    check_positive(_WHO, "c", c)
    check_choice(_WHO, "variant", variant, VARIANTS)
    if check_bool(_WHO, "nesterov", nesterov):
        raise ValueError(f"{_WHO}: nesterov=True is not offered; the generalized Polyak step "
                         f"of Wang et al. is derived for heavy ball in moving-average form "
                         f"(d = g + βd, x ← x − ηd). Use nesterov=False.")
    if variant == "deterministic" and (number := concrete_float(c)) is not None and number != 1:
        raise ValueError(f"{_WHO}: c={c!r} applies to variant='stochastic' only (the "
                         f"deterministic step has c = 1); pass variant='stochastic'.")

    def init_fn(params):
        momentum = jax.tree.map(
            lambda p: jnp.zeros(jnp.shape(p), _state_dtype(jnp.result_type(p))), params)
        return PolyakMomentumState(jnp.zeros([], jnp.int32), momentum,
                                   jnp.zeros([], jnp.float32))

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        _check_value(value, f_star)
        momentum = jax.tree.map(lambda d, g: beta * d + g.astype(d.dtype), state.momentum,
                                updates)
        sq = sum(jnp.sum(jnp.square(d.astype(jnp.float32))) for d in jax.tree.leaves(momentum))
        gap = jnp.maximum(jnp.asarray(value, jnp.float32) - jnp.asarray(f_star, jnp.float32),
                          0.0)
        denom = jnp.asarray(c, jnp.float32) * sq + jnp.asarray(eps, jnp.float32)
        positive = denom > 0
        step = jnp.where(positive, gap / jnp.where(positive, denom, 1.0), 0.0)
        step = jnp.minimum(step, jnp.asarray(max_step, jnp.float32))
        step = jnp.where(jnp.isfinite(step), step, 0.0)
        step = jnp.where(jnp.isfinite(jnp.asarray(value, jnp.float32)), step, jnp.nan)
        out = jax.tree.map(lambda d, g: (-step * d).astype(g.dtype), momentum, updates)
        return out, PolyakMomentumState(optax.safe_increment(state.count), momentum, step)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
