"""Run a transformation in a compute dtype and check its updates against the parameters."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optorth._checks import check_dtype
from optorth.matrices._paths import flatten_with_paths, shape_of


def _cast_floats(tree, dtype):
    def cast(x):
        floating = jnp.issubdtype(jnp.result_type(x), jnp.floating)
        return jnp.asarray(x).astype(dtype) if floating else x

    return jax.tree.map(cast, tree)


def check_updates_match_params(updates, params) -> None:
    """Raises ``ValueError`` naming the first leaf where ``updates`` and ``params`` disagree.

    Checked at trace time (paths and shapes), so a gradient tree of another model or a
    transposed gradient fails with its path instead of a broadcasting error deep inside.
    """
    u_items, _ = flatten_with_paths(updates)
    p_items, _ = flatten_with_paths(params)
    u_paths, p_paths = [p for p, _ in u_items], [p for p, _ in p_items]
    if u_paths != p_paths:
        extra = sorted(set(u_paths) - set(p_paths))[:5]
        missing = sorted(set(p_paths) - set(u_paths))[:5]
        raise ValueError(
            f"The updates and the params have different trees: leaves only in the updates "
            f"{extra}, only in the params {missing}. Pass gradients of the parameter tree the "
            f"optimizer was initialized with (same keys, same order).")
    for (path, u), (_, p) in zip(u_items, p_items, strict=True):
        if shape_of(u) != shape_of(p):
            raise ValueError(
                f"The update of leaf {path!r} has shape {shape_of(u)} but the parameter has "
                f"shape {shape_of(p)}. Pass gradients with the parameters' shapes (a transposed "
                f"or reshaped gradient is not accepted).")


def with_compute_dtype(inner: optax.GradientTransformation,
                       dtype: Any = None) -> optax.GradientTransformation:
    """Runs ``inner`` in ``dtype`` (state included) and returns updates in the input dtypes.

    With ``dtype=None`` only the output cast applies, so bf16 gradients give bf16 updates.
    State leaves keep the dtypes ``init`` gave them (e.g. optax's AdamW moments would otherwise
    turn float32 under ``inject_hyperparams(hyperparam_dtype=jnp.float32)`` with bf16 params).
    """
    run = run_in_dtype(inner, dtype)

    def update_fn(updates, state, params=None):
        if params is not None:
            check_updates_match_params(updates, params)
        return run.update(updates, state, params)

    return optax.GradientTransformation(run.init, update_fn)


def run_in_dtype(inner: optax.GradientTransformation,
                 dtype: Any = None) -> optax.GradientTransformation:
    """`with_compute_dtype` without its check of the updates against the parameters, for a
    caller that has made that check already (the ready optimizers' guard)."""
    dtype = check_dtype("with_compute_dtype", "dtype", dtype)
    dtype = None if dtype is None else jnp.dtype(dtype)

    def init_fn(params):
        return inner.init(params if dtype is None else _cast_floats(params, dtype))

    def update_fn(updates, state, params=None):
        if dtype is not None:
            inner_updates = _cast_floats(updates, dtype)
            params = None if params is None else _cast_floats(params, dtype)
        else:
            inner_updates = updates
        out, new_state = inner.update(inner_updates, state, params)
        new_state = jax.tree.map(
            lambda n, o: jnp.asarray(n).astype(o.dtype) if hasattr(o, "dtype") else n,
            new_state, state)
        back = jax.tree.map(lambda o, u: jnp.asarray(o).astype(jnp.result_type(u)), out, updates)
        return back, new_state

    return optax.GradientTransformation(init_fn, update_fn)
