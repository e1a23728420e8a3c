"""Momentum before the dualizer, in the two conventions of the Muon family.

``convention="ema"`` (Muon reference, Kovalev's trust region, AuON, Signum):

    m ← β m + (1 − β) g                    (torch: m.lerp_(g, 1 − β))
    u = (1 − β) g + β m   if nesterov      (torch: g.lerp_(m, β))
    u = m                 otherwise

``convention="sgd"`` (ROOT; ``optax.trace``):

    m ← β m + g;    u = g + β m  if nesterov  else  m

Where the difference matters: an lmo that is scale invariant (spectral, Frobenius, sign,
row, column, AuON) returns the same direction for both, since the SGD buffer is the EMA buffer
times 1/(1 − β) in steady state. They differ wherever the magnitude is kept: adaptive scaling
by the dual norm, soft thresholding by a fixed ε, second-moment normalizations, and any
chain without a dualizer.

``bias_correction=True`` reproduces optax's ``scale_by_muon`` / NAdam debiasing at step t:
u = β m/(1 − β^{t+1}) + (1 − β) g/(1 − β^t) with Nesterov, m/(1 − β^t) without.
``warm_start=True`` sets m = g at the first step (M_0 = G_0 in Kovalev's paper).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optorth._checks import check_bool, check_choice, check_decay, check_dtype
from optorth.matrices._sharding import keep_shardings

MOMENTUM_CONVENTIONS = ("ema", "sgd")


class MomentumState(NamedTuple):
    """State of `scale_by_momentum`: the step count and the momentum buffer."""

    count: jax.Array  # int32 scalar
    mu: Any


def _check(beta, convention, nesterov, bias_correction, warm_start):
    """Validates the arguments; returns ``beta`` (NaN under jit when out of [0, 1))."""
    beta = check_decay("scale_by_momentum", "beta", beta)
    for name, flag in (("nesterov", nesterov), ("bias_correction", bias_correction),
                       ("warm_start", warm_start)):
        check_bool("scale_by_momentum", name, flag)
    check_choice("scale_by_momentum", "convention", convention, MOMENTUM_CONVENTIONS)
    if convention == "sgd" and bias_correction:
        raise ValueError("bias_correction applies to the 'ema' convention only; the SGD-style "
                         "buffer m ← βm + g has no bias to correct in the same sense.")
    if bias_correction and warm_start:
        raise ValueError("Use either bias_correction or warm_start: both fix the first-step "
                         "bias of an EMA started at zero.")
    return beta


def _debias(x, beta, t):
    return x / (1 - beta ** t.astype(jnp.float32))


def _direction(g, m_new, beta, t, convention, nesterov, bias_correction):
    if convention == "sgd":
        return g + beta * m_new if nesterov else m_new
    if not bias_correction:
        return (1 - beta) * g + beta * m_new if nesterov else m_new
    if nesterov:
        return beta * _debias(m_new, beta, t + 1) + (1 - beta) * _debias(g, beta, t)
    return _debias(m_new, beta, t)


def scale_by_momentum(
    beta: float = 0.95,
    *,
    nesterov: bool = True,
    convention: str = "ema",
    bias_correction: bool = False,
    warm_start: bool = False,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    """Momentum (EMA or SGD style, optionally Nesterov) as an optax transform.

    Args:
      beta: momentum coefficient β (Kovalev's α = 1 − β).
      nesterov: output the Nesterov look-ahead instead of the buffer.
      convention: ``"ema"`` or ``"sgd"`` (module docstring).
      bias_correction: optax/NAdam-style debiasing of the EMA (``"ema"`` only).
      warm_start: m = g at the first step instead of the EMA from zero.
      mu_dtype: dtype of the buffer; ``None`` uses the parameters' dtype. The output is
        computed in the promotion of the gradient and buffer dtypes.

    Returns:
      An ``optax.GradientTransformation`` with state `MomentumState`.

    Example:
      >>> import optorth, jax.numpy as jnp
      >>> tx = optorth.scale_by_momentum(0.9, nesterov=False)
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> updates, state = tx.update({"w": jnp.ones(2)}, state)
      >>> updates["w"].tolist()
      [0.10000000149011612, 0.10000000149011612]

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024).
      Sutskever et al., "On the importance of initialization and momentum" (ICML 2013).
    """
    beta = _check(beta, convention, nesterov, bias_correction, warm_start)
    mu_dtype = check_dtype("scale_by_momentum", "mu_dtype", mu_dtype)

    def init_fn(params):
        return MomentumState(jnp.zeros([], jnp.int32), optax.tree.zeros_like(params, mu_dtype))

    def update_fn(updates, state, params=None):
        del params
        t = optax.safe_increment(state.count)

        def accumulate(g, m):
            m_new = beta * m + g if convention == "sgd" else beta * m + (1 - beta) * g
            if warm_start:
                m_new = jnp.where(state.count == 0, g.astype(m_new.dtype), m_new)
            return m_new

        mu = jax.tree.map(accumulate, updates, state.mu)
        out = jax.tree.map(
            lambda g, m: _direction(g, m, beta, t, convention, nesterov, bias_correction),
            updates, mu)
        mu = jax.tree.map(lambda m, old: m.astype(old.dtype), mu, state.mu)
        return out, MomentumState(t, keep_shardings(mu, state.mu))

    return optax.GradientTransformation(init_fn, update_fn)
