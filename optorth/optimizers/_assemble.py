"""How a ready optimizer is put together: route, chain, partition, compute dtype, checks.

Every ready optimizer is ``assemble(name, direction_blocks, ...)``:

    matrix leaves:   direction blocks → [scale_by_shape] → add_decayed_weights → lr
    other leaves:    the fallback (default `default_fallback`, a true AdamW)

inside ``optax.partition`` with labels from `optorth.route`, run in ``mu_dtype`` by
`optorth.blocks.with_compute_dtype`, and wrapped in `guard`, which gives integer
leaves a zero update (``jax.grad(allow_int=True)`` gives them float0 gradients) and names the
optimizer in every error about a missing ``params`` or a state that is not its own.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optorth._checks import check_dtype, check_learning_rate
from optorth.blocks._clip_gradients import clip_gradients
from optorth.blocks._compute_dtype import check_updates_match_params, run_in_dtype
from optorth.blocks._qk_clip import QKClip, qk_clip
from optorth.blocks._shape_scale import scale_by_shape
from optorth.blocks._weight_decay import WeightDecay, around_learning_rate, as_weight_decay
from optorth.matrices._paths import (
    dtype_of,
    flatten_with_paths,
    is_variable,
    path_to_str,
    shape_of,
)
from optorth.matrices._report import warn_routing_at_init
from optorth.matrices._resolve import RoutingOnce, resolve_specs
from optorth.matrices._specs import MatrixSpec
from optorth.norms._shape_scale import as_shape_scale
from optorth.optimizers._fallback_lr import check_schedule, fallback_learning_rate

MATRIX, FALLBACK, FROZEN = "matrix", "fallback", "frozen"


def _reject_float16(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner`` whose ``init`` refuses float16 leaves (AdamW's moments and eps in float16)."""

    def init_fn(params):
        for path, leaf in flatten_with_paths(params)[0]:
            if dtype_of(leaf) == jnp.float16:
                raise ValueError(
                    f"Leaf {path!r} of shape {shape_of(leaf)} is float16 and takes the AdamW "
                    f"fallback, whose state and arithmetic would be float16: eps=1e-10 "
                    f"underflows to 0 (NaN updates for gradients below ~1e-4) and g² overflows "
                    f"beyond |g| ≈ 256. Pass mu_dtype='float32' (state in float32, updates in "
                    f"float16), or your own fallback=.")
        return inner.init(params)

    return optax.GradientTransformation(init_fn, inner.update)


def default_fallback(learning_rate: optax.ScalarOrSchedule = 3e-3,
                     weight_decay: float | WeightDecay = 0.0) -> optax.GradientTransformation:
    """The optimizer of every leaf that is not a hidden matrix, unless ``fallback=`` is given.

    ``optax.adamw(3e-3, b1=0.9, b2=0.95, eps=1e-10, weight_decay=0.0)``: a true AdamW (not
    NAdam) with the Muon reference's betas and eps for embeddings, output heads, biases and
    norm gains. Its learning rate is 10x the reference's 3e-4: on a small transformer
    (``benchmarks/defaults.py``) Muon's defaults ended 0.18 nats/char worse with 3e-4. When
    the optimizer's ``learning_rate`` is a schedule, the ready optimizers pass it here with
    the schedule's shape at a peak of 3e-3 (``lr(t)·3e-3/max lr``), so a warmup also warms
    the fallback up. Gradient entries beyond ±2⁶⁰ are clipped first: optax's AdamW squares
    them into its second moment, which overflows to inf beyond |g| ≈ 1.8e19 and freezes the
    leaf for good (measured: after one 1e20 gradient, optax.adamw's updates stay exactly 0).
    It refuses float16 leaves at
    ``init`` (its eps underflows in float16; pass ``mu_dtype="float32"``). Pass any
    ``optax.GradientTransformation`` as ``fallback=`` to change it, e.g.
    ``optax.adamw(1e-3, weight_decay=0.1, mask=...)``.

    Args:
      learning_rate: a number or an optax schedule (default 3e-3).
      weight_decay: AdamW's decay, a number ≥ 0 or an `optorth.WeightDecay` (e.g.
        cautious); applied to every fallback leaf (pass your own ``fallback=`` to mask it).

    Example:
      >>> import optorth
      >>> wd = optorth.WeightDecay(0.1, cautious=True)
      >>> tx = optorth.muon(weight_decay=wd,
      ...                   fallback=optorth.optimizers.default_fallback(weight_decay=wd))
    """
    weight_decay = as_weight_decay("optorth.default_fallback", weight_decay)
    adam = optax.scale_by_adam(b1=0.9, b2=0.95, eps=1e-10)
    decayed = optax.chain(adam, *around_learning_rate(weight_decay, None, learning_rate))
    return _reject_float16(clip_gradients(decayed))


def _is_integer(leaf) -> bool:
    dtype = dtype_of(leaf)
    return dtype is not None and not jnp.issubdtype(dtype, jnp.inexact)


def _labels(routing: RoutingOnce, who: str):
    def labels(tree):
        return jax.tree.map(lambda t: MATRIX if isinstance(t, MatrixSpec) else FALLBACK,
                            resolve_specs(routing, tree, who=who))

    return labels


def _integer_labels(tree):
    items, treedef = flatten_with_paths(tree)
    return jax.tree_util.tree_unflatten(
        treedef, [FROZEN if _is_integer(leaf) else "train" for _, leaf in items])


def _state_mismatch(expected, state) -> str | None:
    """A description of the first difference between two states' paths and shapes."""
    want, _ = flatten_with_paths(expected)
    got, _ = flatten_with_paths(state)
    want_paths, got_paths = [p for p, _ in want], [p for p, _ in got]
    plain = ("its containers are dicts or lists where this optimizer's state has NamedTuples, "
             "as a checkpoint restored without a target gives. Restore with the structure of "
             "tx.init(params) as the target (orbax: ocp.args.StandardRestore("
             "jax.eval_shape(tx.init, params)))")
    if want_paths != got_paths and sorted(want_paths) == sorted(got_paths):
        return f"it holds the same {len(want_paths)} leaves in another order: {plain}"
    if want_paths != got_paths:
        missing = [p for p in want_paths if p not in got_paths][:3]
        extra = [p for p in got_paths if p not in want_paths][:3]
        return (f"its leaves differ: expected {len(want_paths)} leaves, got {len(got_paths)}; "
                f"missing {missing}, unexpected {extra}")
    for (path, w), (_, g) in zip(want, got, strict=True):
        if shape_of(w) != shape_of(g):
            return f"leaf {path!r} has shape {shape_of(g)}, expected {shape_of(w)}"
    # Same leaves, other containers: e.g. a chain with one more stateless block.
    want_tree = jax.tree.structure(expected, is_leaf=is_variable)
    got_tree = jax.tree.structure(state, is_leaf=is_variable)
    if want_tree != got_tree and want_tree.num_nodes == got_tree.num_nodes:
        return f"it holds the same {len(want_paths)} leaves in other containers: {plain}"
    if want_tree != got_tree:
        return (f"its leaves match but its structure differs: {got_tree.num_nodes} nodes, "
                f"expected {want_tree.num_nodes}; another chain of blocks with the same "
                f"buffers, e.g. another norm or scale")
    return None


def _is_numeric(dtype) -> bool:
    return dtype is not None and (jnp.issubdtype(dtype, jnp.number)
                                  or jnp.issubdtype(dtype, jnp.bool_)
                                  or dtype == jax.dtypes.float0)


def _as_arrays(tree, who: str):
    """``tree`` with Python scalar leaves (``1.0``, ``3``) as arrays, as optax treats them;
    raises ``ValueError`` naming the first leaf that is neither a number nor an array."""

    def convert(path, leaf):
        if isinstance(leaf, (bool, int, float, complex, np.number)):
            return jnp.asarray(leaf)
        if not _is_numeric(dtype_of(leaf)):
            raise ValueError(
                f"{who}: leaf {path_to_str(path)!r} is {leaf!r} ({type(leaf).__name__}), not "
                f"an array or a number. Pass only the trainable arrays (e.g. "
                f"nnx.state(model, nnx.Param)); keep other values out of the tree.")
        return leaf

    return jax.tree_util.tree_map_with_path(convert, tree)


def _check_same_structure(who: str, updates, params) -> None:
    """Raises ``ValueError`` when the gradients' containers differ from the parameters'."""
    want = jax.tree.structure(params, is_leaf=is_variable)
    got = jax.tree.structure(updates, is_leaf=is_variable)
    if want != got:
        raise ValueError(
            f"{who}: the gradients' tree structure differs from the parameters' (e.g. a "
            f"tuple where the parameters hold a list, or other keys): gradients {got}, "
            f"parameters {want}. Take the gradients of the same tree that holds the "
            f"parameters (jax.grad(loss)(params)).")


def _zero_integer_updates(updates, params):
    def fix(u, p):
        return jnp.zeros(np.shape(p), dtype_of(p)) if _is_integer(p) else u

    return jax.tree.map(fix, updates, params)


def _propagate_nonfinite(out, updates):
    """Each update entry whose gradient entry is ±inf or NaN takes that value.

    Sign- and clip-based directions (Signum, ROOT's threshold) map an infinite gradient to a
    finite step, so the entry would move by the learning rate while its momentum holds inf
    forever, unseen by ``optax.apply_if_finite``. Passing the non-finite value through makes
    the step visibly non-finite (and skipped by ``apply_if_finite``, state included).
    """
    def fix(u, g):
        if not jnp.issubdtype(dtype_of(g), jnp.inexact) or np.shape(u) != np.shape(g):
            return u
        return jnp.where(jnp.isfinite(g), u, jnp.asarray(g).astype(dtype_of(u)))

    return jax.tree.map(fix, out, updates)


def guard(name: str, inner: optax.GradientTransformation,
          routing: RoutingOnce | None = None) -> optax.GradientTransformation:
    """``inner`` for float leaves, a zero update for integer leaves, and errors that name the
    optimizer: a missing ``params``, arguments passed in the wrong order, or a state built by
    another optimizer (or for other parameters) raise ``ValueError`` at trace time instead of
    failing deep inside a block. Python scalar leaves are taken as arrays (as optax does); a
    leaf that is neither a number nor an array raises ``ValueError`` naming its path.
    With ``routing``, each ``init`` and ``update`` routes the parameters once, for every
    block."""
    inner = optax.partition({"train": inner, FROZEN: optax.set_to_zero()}, _integer_labels)
    who = f"optorth.{name}"

    def init_fn(params):
        params = _as_arrays(params, who)
        with _once(routing, params):
            return inner.init(params)

    def update_fn(updates, state, params=None):
        if params is None:
            return checked_update(updates, state, params)
        with _once(routing, params):
            return checked_update(updates, state, params)

    def checked_update(updates, state, params):
        if params is None:
            raise ValueError(
                f"{who}: update needs the parameters (weight decay, the fallback and "
                f"relative steps read them). Call tx.update(grads, state, params).")
        updates, params = _as_arrays(updates, who), _as_arrays(params, who)
        expected = jax.eval_shape(inner.init, params)
        mismatch = _state_mismatch(expected, state)
        if mismatch is not None:
            raise ValueError(
                f"{who}: the state does not match this optimizer and these "
                f"parameters ({mismatch}). Pass the arguments in optax's order, "
                f"tx.update(grads, state, params), with the state from this optimizer's "
                f"tx.init(params).")
        try:
            check_updates_match_params(updates, params)
        except ValueError as err:
            raise ValueError(f"{who}: {err}") from None
        _check_same_structure(who, updates, params)
        out, new_state = inner.update(updates, state, params)
        out = _propagate_nonfinite(out, updates)
        return _zero_integer_updates(out, params), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def assemble(name: str, direction_blocks, *, learning_rate, routing: RoutingOnce,
             weight_decay=0.0, weight_decay_mask=None, scale=None, mu_dtype=None,
             fallback=None, clip: QKClip | None = None) -> optax.GradientTransformation:
    """The ready optimizer ``name`` from its direction blocks (module docstring), followed
    by `optorth.qk_clip` when ``clip`` is a `optorth.QKClip`. ``routing`` is the ``specs``
    its direction blocks were built with; the partition and the shape scale share it, so that
    one ``init`` or ``update`` routes the parameters once."""
    learning_rate = check_learning_rate(f"optorth.{name}", learning_rate)
    weight_decay = as_weight_decay(f"optorth.{name}", weight_decay)
    mu_dtype = check_dtype(f"optorth.{name}", "mu_dtype", mu_dtype)
    if fallback is not None and not isinstance(fallback, optax.GradientTransformation):
        raise ValueError(f"optorth.{name}: fallback must be an optax.GradientTransformation "
                         f"(e.g. optax.adamw(3e-4)); got {type(fallback).__name__}.")
    blocks = list(direction_blocks)
    scale = as_shape_scale(scale)
    if scale is not None:
        blocks.append(scale_by_shape(scale, specs=routing))
    matrix = optax.chain(*blocks,
                         *around_learning_rate(weight_decay, weight_decay_mask, learning_rate))
    if callable(learning_rate) and not hasattr(learning_rate, "dtype"):
        check_schedule(f"optorth.{name}", learning_rate)
    if fallback is None:
        fallback = default_fallback(
            learning_rate=fallback_learning_rate(f"optorth.{name}", learning_rate, 3e-3))
    transforms = {MATRIX: matrix, FALLBACK: fallback}
    partition = optax.partition(transforms, _labels(routing, f"optorth.{name}"))
    guarded = warn_routing_at_init(
        f"optorth.{name}", guard(name, run_in_dtype(partition, mu_dtype), routing),
        routing.rules)
    if clip is None:
        return guarded
    if not isinstance(clip, QKClip):
        raise ValueError(f"optorth.{name}: qk_clip must be an optorth.QKClip (e.g. "
                         f"optorth.QKClip(100.0)) or None; got {clip!r}.")
    return optax.chain(guarded, qk_clip(clip))


def _once(routing: RoutingOnce | None, params):
    """``routing.once(params)``, or a scope that does nothing without ``routing``."""
    return contextlib.nullcontext() if routing is None else routing.once(params)

