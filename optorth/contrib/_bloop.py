"""Bloop: gradient surgery against an EMA of the main gradient (Hsieh et al., ICML 2024).

A bilevel view of a main loss with an auxiliary one: minimise the auxiliary loss among the
minimisers of the main loss. The update direction is the main gradient plus the auxiliary
gradient projected onto the orthogonal complement of the main gradient, where the main
gradient of the projection is an exponential moving average, so that mini-batch noise does
not break the orthogonality in expectation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optorth._checks import check_bool, check_decay, check_nonnegative

_WHO = "bloop"


class BloopState(NamedTuple):
    """State of `bloop`: the step count and the EMA of the main gradients."""

    count: jax.Array  # int32 scalar
    ema: Any


def _state_dtype(dtype):
    """At least float32: the EMA adds (1 − decay)·g, below bfloat16's resolution for 0.99."""
    return jnp.promote_types(dtype, jnp.float32)


def _paths(tree):
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in flat], treedef


def _check_aux(main_grads, aux_grads) -> None:
    if aux_grads is None:
        raise ValueError(
            "bloop: update needs the auxiliary gradients as a keyword argument, "
            "tx.update(main_grads, state, params, aux_grads=jax.grad(aux_loss)(params)); "
            "inside optax.chain pass aux_grads= to the chain's update, which hands it on.")
    main, main_def = _paths(main_grads)
    aux, aux_def = _paths(aux_grads)
    main_paths, aux_paths = [p for p, _ in main], [p for p, _ in aux]
    if main_paths != aux_paths:
        missing = [p for p in main_paths if p not in aux_paths]
        extra = [p for p in aux_paths if p not in main_paths]
        if missing:
            what = f"leaf {missing[0]!r} of the main gradients is missing from aux_grads"
        elif extra:
            what = f"aux_grads has leaf {extra[0]!r}, which the main gradients lack"
        else:
            what = "aux_grads has the same leaves in another order"
        raise ValueError(f"bloop: aux_grads must have the structure of the main gradients "
                         f"(the gradient of the auxiliary loss with respect to the same "
                         f"params); {what}.")
    for (path, g), (_, a) in zip(main, aux, strict=True):
        if jnp.shape(g) != jnp.shape(a):
            raise ValueError(f"bloop: aux_grads leaf {path!r} has shape {jnp.shape(a)}, the "
                             f"main gradient {jnp.shape(g)}; pass the gradient of the "
                             f"auxiliary loss with respect to the same params.")
    if main_def != aux_def:
        raise ValueError(f"bloop: aux_grads has the leaves of the main gradients in other "
                         f"containers ({aux_def} vs {main_def}); build both with jax.grad "
                         f"of the same params.")


def _dot(x, y):
    return jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32)).real


def _ratio(dot, sq):
    """⟨a, e⟩/‖e‖², and 0 where ‖e‖ = 0 (no projection instead of 0/0)."""
    positive = sq > 0
    return jnp.where(positive, dot / jnp.where(positive, sq, 1.0), 0.0)


def bloop(
    strength: float,
    decay: float = 0.99,
    *,
    per_leaf: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Bloop gradient surgery: main gradient plus the auxiliary gradient orthogonal to its EMA.

    With main gradient g, auxiliary gradient a and strength λ, at step t:

        e_t = decay · e_{t−1} + (1 − decay) · g_t            (e_0 = 0)
        u_t = g_t + λ · (a_t − ⟨a_t, e_t⟩ / ‖e_t‖² · e_t)

    The inner product and norm run over the whole parameter vector (all leaves together), as in
    the paper; ``per_leaf=True`` projects each leaf on its own EMA instead. Where ‖e‖ = 0 (zero
    gradients so far) nothing is projected: u = g + λ a, never 0/0.

    Order, as in the authors' code (``bloop.optim.bloop_direction``): the EMA is updated with the
    current main gradient *before* the projection, and the projection uses the updated EMA. The
    official ``ema`` argument is the weight of the new gradient, ``ema = 1 − decay``; its README
    starts the EMA at zero, as here (so e_1 ∝ g_1 and the first step projects on g_1 exactly).
    Two differences from that code: the official ratio is ⟨a, e⟩/(‖e‖² + 1e−7), here it is
    exact with the zero case handled, and the EMA is kept in float32 at least (the output has
    the main gradients' dtype).

    λ = 0 gives the main gradient; without the projection (u = g + λa) this is the plain sum of
    main and auxiliary losses. Chain it before the optimizer, e.g.
    ``optax.chain(bloop(0.1), optax.adam(1e-3))``, and pass ``aux_grads=`` to the chain.

    Args:
      strength: λ ≥ 0, the weight of the projected auxiliary gradient (injectable).
      decay: EMA decay in [0, 1) (injectable); the paper's EMA weight is 1 − decay.
      per_leaf: project each leaf separately instead of the whole parameter vector.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state `BloopState`, whose
      ``update(main_grads, state, params=None, *, aux_grads)`` requires ``aux_grads``, a tree
      of the main gradients' structure.

    Example:
      >>> import jax.numpy as jnp
      >>> from optorth.contrib import bloop
      >>> tx = bloop(1.0, decay=0.0)
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> u, state = tx.update({"w": jnp.array([1.0, 0.0])}, state,
      ...                      aux_grads={"w": jnp.array([1.0, 1.0])})
      >>> u["w"].tolist()   # the aux component along the main gradient is removed
      [1.0, 1.0]

    References:
      Hsieh, Thornton, Ndiaye, Klein, Cuturi, Ablin, "Careful with that Scalpel: Improving
      Gradient Surgery with an EMA", ICML 2024, arXiv 2402.02998.
    """
    check_nonnegative(_WHO, "strength", strength)
    check_decay(_WHO, "decay", decay)
    per_leaf = check_bool(_WHO, "per_leaf", per_leaf)

    def init_fn(params):
        ema = jax.tree.map(
            lambda p: jnp.zeros(jnp.shape(p), _state_dtype(jnp.result_type(p))), params)
        return BloopState(jnp.zeros([], jnp.int32), ema)

    def update_fn(updates, state, params=None, *args, aux_grads=None, **extra_args):
        del params, extra_args
        if args:
            raise ValueError(
                "bloop: update takes aux_grads as a keyword argument, tx.update(grads, state, "
                "params, aux_grads=aux_grads); got it (or another value) positionally after "
                "params.")
        _check_aux(updates, aux_grads)
        ema = jax.tree.map(
            lambda e, g: (decay * e + (1 - decay) * g.astype(jnp.float32)).astype(e.dtype),
            state.ema, updates)
        if per_leaf:
            ratios = jax.tree.map(lambda a, e: _ratio(_dot(a, e), _dot(e, e)), aux_grads, ema)
        else:
            dot = sum(_dot(a, e) for a, e in zip(jax.tree.leaves(aux_grads),
                                                 jax.tree.leaves(ema), strict=True))
            sq = sum(_dot(e, e) for e in jax.tree.leaves(ema))
            ratios = jax.tree.map(lambda _: _ratio(dot, sq), ema)

        def direction(g, a, e, r):
            projected = a.astype(jnp.float32) - r * e.astype(jnp.float32)
            return (g.astype(jnp.float32) + strength * projected).astype(g.dtype)

        out = jax.tree.map(direction, updates, aux_grads, ema, ratios)
        return out, BloopState(optax.safe_increment(state.count), ema)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
