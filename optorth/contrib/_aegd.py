"""AEGD: adaptive gradient descent with energy (Liu and Tian), with an optional preconditioner.

An energy variable r, one per coordinate, started at √(f(x_0) + c), multiplies the step and
only ever shrinks: r ← r / (1 + 2η v²). Whatever the base step η, the energy is stable
(non-increasing), which is the method's selling point.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optorth._checks import check_learning_rate, check_loss_value, check_positive, concrete_float

_WHO = "aegd"


class AEGDState(NamedTuple):
    """State of `aegd`: the step count, the energy r (one per coordinate, float32 at
    least; set from the first valid loss), whether r is set, and the preconditioner's state."""

    count: jax.Array  # int32 scalar
    energy: Any
    started: jax.Array  # bool scalar
    preconditioner: Any


def _state_dtype(dtype):
    return jnp.promote_types(dtype, jnp.float32)


def _check_value(value, c) -> None:
    check_loss_value(_WHO, value)
    v, cc = concrete_float(value), concrete_float(c)
    if v is not None and cc is not None and not v + cc > 0:
        raise ValueError(
            f"{_WHO}: the loss value={v!r} plus c={cc!r} must be > 0 (AEGD takes √(f + c)); "
            f"raise c above -min(loss) (c = 1 suits non-negative losses). Under jax.jit, "
            f"where the value cannot be inspected, such a step is skipped instead.")


def aegd(
    learning_rate: optax.ScalarOrSchedule,
    c: float = 1.0,
    *,
    preconditioner: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AEGD: gradient descent scaled by a per-coordinate energy that never increases.

    With loss value f_k = ``value``, gradient g_k and base step η = ``learning_rate``:

        p_k     = P(g_k)                      (the preconditioner's output; P = identity if None)
        v_k     = p_k / (2 √(f_k + c))
        r_{k+1} = r_k / (1 + 2η v_k²)          (elementwise; r_0 = √(f_0 + c) in every coordinate)
        update  = −2η r_{k+1} v_k

    This is Algorithm 1 of Liu and Tian (their "AEGD", elementwise energy) when P is the
    identity: v_k = ∇√(f + c) at x_k, r the per-coordinate estimate of √(f + c), and the
    implicit-in-r, explicit-in-v update that makes r_{k+1} ≤ r_k for every step size ("unconditional
    energy stability"). With ``preconditioner`` the gradient is first transformed by any optax
    transform (e.g. ``optax.scale_by_rms()`` or a momentum ``optax.trace``); this is a
    convenience of this library, not a method of the paper: energy stability holds for any
    direction, convergence guarantees are the paper's only without it. r_0 is set from the
    first loss passed (so the first ``update`` must see f_0).

    Guard: f + c must be > 0. A concrete ``value`` with value + c ≤ 0 raises ``ValueError``;
    a traced one (under ``jax.jit``) skips the step (zero update, r unchanged, not started if
    it was the first). Zero gradients give v = 0, r unchanged and a zero update.

    Args:
      learning_rate: η ≥ 0, a number (injectable) or an optax schedule of the step count.
      c: the shift c with f + c > 0 on every loss seen (injectable); c > 0 here, which suits
        non-negative losses.
      preconditioner: an optional ``optax.GradientTransformation`` applied to the gradient
        before v is formed (its state lives in `AEGDState`).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state `AEGDState`, whose
      ``update(grads, state, params=None, *, value)`` requires the loss ``value``; the output
      is the full update in the gradients' dtype.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from optorth.contrib import aegd
      >>> loss_fn = lambda p: jnp.sum(p ** 2)          # f(1, 1) = 2, f + c = 3 (c = 1)
      >>> params = jnp.array([1.0, 1.0])
      >>> tx = aegd(0.1)
      >>> state = tx.init(params)
      >>> loss, grads = jax.value_and_grad(loss_fn)(params)
      >>> updates, state = tx.update(grads, state, params, value=loss)
      >>> bool(jnp.all(state.energy < jnp.sqrt(3.0)))  # the energy went down from √(f + c)
      True

    References:
      Liu, Tian, "AEGD: Adaptive Gradient Descent with Energy", arXiv 2010.05109.
    """
    check_learning_rate(_WHO, learning_rate)
    check_positive(_WHO, "c", c)
    if preconditioner is not None and not (hasattr(preconditioner, "init")
                                           and hasattr(preconditioner, "update")):
        raise ValueError(f"{_WHO}: preconditioner must be an optax.GradientTransformation "
                         f"(e.g. optax.scale_by_rms()) or None; got {preconditioner!r}.")
    inner = (None if preconditioner is None
             else optax.with_extra_args_support(preconditioner))

    def init_fn(params):
        energy = jax.tree.map(
            lambda p: jnp.zeros(jnp.shape(p), _state_dtype(jnp.result_type(p))), params)
        inner_state = optax.EmptyState() if inner is None else inner.init(params)
        return AEGDState(jnp.zeros([], jnp.int32), energy, jnp.zeros([], bool), inner_state)

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        _check_value(value, c)
        eta = learning_rate(state.count) if callable(learning_rate) else learning_rate
        eta = jnp.asarray(eta, jnp.float32)
        if inner is None:
            direction, inner_state = updates, state.preconditioner
        else:
            direction, inner_state = inner.update(updates, state.preconditioner, params,
                                                  value=value, **extra_args)
        shifted = jnp.asarray(value, jnp.float32) + jnp.asarray(c, jnp.float32)
        valid = shifted > 0
        root = jnp.sqrt(jnp.where(valid, shifted, 1.0))

        def one(r, p, g):
            r0 = jnp.where(state.started, r, root.astype(r.dtype))
            v = p.astype(r.dtype) / (2 * root)
            r_new = r0 / (1 + 2 * eta * v * v)
            u = jnp.where(valid, -2 * eta * r_new * v, 0.0).astype(g.dtype)
            return jnp.where(valid, r_new, r), u

        pairs = jax.tree.map(one, state.energy, direction, updates)
        energy = jax.tree.map(lambda _, pair: pair[0], updates, pairs)
        out = jax.tree.map(lambda _, pair: pair[1], updates, pairs)
        started = jnp.logical_or(state.started, valid)
        inner_state = jax.tree.map(lambda new, old: jnp.where(valid, new, old), inner_state,
                                   state.preconditioner)
        return out, AEGDState(optax.safe_increment(state.count), energy, started, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
