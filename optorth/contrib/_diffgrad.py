"""diffGrad: Adam whose step is damped by the change of the gradient (Dubey et al., 2019)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optorth._checks import check_decay, check_learning_rate, check_nonnegative
from optorth.blocks._clip_gradients import clip_gradients


class DiffGradState(NamedTuple):
    """State of `scale_by_diffgrad`: step count, Adam's two moments and g_{t−1}."""

    count: jax.Array  # int32 scalar
    mu: Any
    nu: Any
    prev_grad: Any


def _state_dtype(leaf):
    """At least float32: ν adds (1 − b2)·g², below bfloat16's resolution for b2 = 0.999."""
    return jnp.promote_types(jnp.result_type(leaf), jnp.float32)


def _one_minus_power(beta, t):
    """1 − β^t as −expm1(t·log1p(−(1 − β))): with 1 − β taken before rounding to float32,
    1 − 0.999^t keeps float32 accuracy instead of losing 1e-5 to cancellation."""
    return -jnp.expm1(t * jnp.log1p(-jnp.asarray(1 - beta, jnp.float32)))


def _check(who, b1, b2, eps):
    check_decay(who, "b1", b1)
    check_decay(who, "b2", b2)
    check_nonnegative(who, "eps", eps)
    if not isinstance(eps, jax.core.Tracer) and float(eps) == 0.0:
        raise ValueError(f"{who}: eps must be > 0; got {eps!r}. With eps = 0 a zero gradient "
                         f"gives 0/0 = NaN in m̂/(√v̂ + eps); optax's default is 1e-8.")


def scale_by_diffgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    r"""The diffGrad direction: Adam's m̂/(√v̂ + ε) times the friction ξ = sigmoid(|Δg|).

    Algorithm 1 of the paper, elementwise, at step t = 1, 2, … with g_0 = 0:

        m_t = b1 m_{t−1} + (1 − b1) g_t,        m̂_t = m_t / (1 − b1^t)
        v_t = b2 v_{t−1} + (1 − b2) g_t²,       v̂_t = v_t / (1 − b2^t)
        ξ_t = 1 / (1 + exp(−|g_{t−1} − g_t|))                   (in [0.5, 1))
        u_t = ξ_t · m̂_t / (√v̂_t + ε)

    ξ multiplies m̂ in the numerator, as in the paper (θ_{t+1} = θ_t − α ξ_t m̂_t/(√v̂_t + ε));
    elementwise this equals multiplying Adam's step by ξ. ε is added to √v̂ (the paper's
    form; the authors' PyTorch code adds it to √v before bias correction, which differs by a
    factor √(1 − b2^t) in ε only). On the first step ξ_1 = sigmoid(|g_1|). The moments and
    g_{t−1} are kept in float32 at least; the output has the gradients' dtype.

    ``b1``, ``b2``, ``eps`` mean what they mean in ``optax.adam`` (optorth's ready Muon-family
    optimizers call their momentum ``beta``; for Adam-family transforms optax's names are kept).

    Args:
      b1: decay of the first moment, in [0, 1) (injectable).
      b2: decay of the second moment, in [0, 1) (injectable).
      eps: ε > 0 added to √v̂ (injectable).

    Returns:
      An ``optax.GradientTransformation`` with state `DiffGradState`.

    Example:
      >>> import jax.numpy as jnp
      >>> from optorth.contrib import scale_by_diffgrad
      >>> tx = scale_by_diffgrad()
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> u, state = tx.update({"w": jnp.array([0.0, 2.0])}, state)
      >>> [round(x, 4) for x in u["w"].tolist()]   # ξ = sigmoid(|0 − g|), m̂/√v̂ = sign(g)
      [0.0, 0.8808]

    References:
      Dubey, Chakraborty, Roy, Mukherjee, Singh, Chaudhuri, "diffGrad: An Optimization Method
      for Convolutional Neural Networks", IEEE TNNLS 2020, arXiv 1909.11015.
    """
    _check("scale_by_diffgrad", b1, b2, eps)

    def init_fn(params):
        zeros = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), _state_dtype(p)), params)
        return DiffGradState(jnp.zeros([], jnp.int32), zeros, zeros, zeros)

    def update_fn(updates, state, params=None):
        del params
        t = optax.safe_increment(state.count)
        tf = t.astype(jnp.float32)
        g32 = jax.tree.map(lambda g, m: g.astype(m.dtype), updates, state.mu)
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, g32)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, g32)
        c1, c2 = _one_minus_power(b1, tf), _one_minus_power(b2, tf)

        def step(g, m, v, prev, out):
            xi = jax.nn.sigmoid(jnp.abs(prev - g))
            return (xi * (m / c1) / (jnp.sqrt(v / c2) + eps)).astype(out.dtype)

        out = jax.tree.map(step, g32, mu, nu, state.prev_grad, updates)
        return out, DiffGradState(t, mu, nu, g32)

    return optax.GradientTransformation(init_fn, update_fn)


def diffgrad(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    r"""diffGrad: Adam with the friction ξ_t = sigmoid(|g_{t−1} − g_t|) on every step.

    ``optax.chain(scale_by_diffgrad(b1, b2, eps), optax.scale_by_learning_rate(learning_rate))``,
    i.e. θ_{t+1} = θ_t − α · ξ_t m̂_t/(√v̂_t + ε) (`scale_by_diffgrad` has the math).
    Where consecutive gradients agree, ξ → 0.5 and the step is halved; where they change fast,
    ξ → 1 and the step is Adam's. ``b1``, ``b2``, ``eps`` are optax's Adam names and meanings.

    Args:
      learning_rate: α ≥ 0, a number or an optax schedule (injectable).
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: ε > 0 added to √v̂.

    Returns:
      An ``optax.GradientTransformation`` (a chain; state ``(DiffGradState, ...)``).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from optorth.contrib import diffgrad
      >>> params = {"w": jnp.ones(3)}
      >>> tx = diffgrad(learning_rate=0.1)
      >>> state = tx.init(params)
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = tx.update(grads, state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> [round(x, 4) for x in params["w"].tolist()]   # 1 − 0.1·sigmoid(2)
      [0.9119, 0.9119, 0.9119]

    References:
      Dubey, Chakraborty, Roy, Mukherjee, Singh, Chaudhuri, "diffGrad: An Optimization Method
      for Convolutional Neural Networks", IEEE TNNLS 2020, arXiv 1909.11015.
    """
    check_learning_rate("diffgrad", learning_rate)
    _check("diffgrad", b1, b2, eps)
    # Entries beyond ±2⁶⁰ are clipped: g² would overflow the second moment to inf and
    # freeze the leaf for good.
    return clip_gradients(optax.chain(scale_by_diffgrad(b1, b2, eps),
                                      optax.scale_by_learning_rate(learning_rate)))
