"""Leaf paths and shapes of parameter trees, for plain arrays and Flax wrappers alike.

``nnx.Optimizer(model, tx, wrt=nnx.Param)`` calls ``tx.init`` on an ``nnx.State`` whose
leaves are ``nnx.Param`` variables, and ``tx.update`` on the same tree holding plain arrays.
Flax Linen boxes parameters in metadata wrappers (``nn.Partitioned``,
``nn.LogicallyPartitioned``, any ``flax.core.meta.AxisMetadata``) that hold the array as a
``value`` child. The helpers here treat a variable or a box as one leaf (its value's shape,
its path without a trailing ``value``), so a rule ending in ``kernel$`` matches the kernel
whatever wraps it.
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import numpy as np


def _is_nnx_variable(x) -> bool:
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(x, nnx.Variable)


def is_box(x) -> bool:
    """Whether ``x`` is a Flax Linen metadata box (``nn.Partitioned``, ...)."""
    meta = sys.modules.get("flax.core.meta")
    return meta is not None and isinstance(x, meta.AxisMetadata)


def is_variable(x) -> bool:
    """Whether ``x`` wraps one parameter array: a Flax NNX variable or a Linen metadata box
    (``nn.Partitioned``, ...), detected without importing flax when it is not loaded."""
    return _is_nnx_variable(x) or is_box(x)


def unwrap(x):
    """The array held by an NNX variable or a Linen metadata box, or ``x`` itself."""
    if _is_nnx_variable(x):
        return x.get_value()
    if is_box(x):
        return x.value if hasattr(x, "value") else x.unbox()
    return x


def shape_of(x) -> tuple[int, ...]:
    """The shape of an array, an NNX variable's value or a ``jax.ShapeDtypeStruct``."""
    x = unwrap(x)
    shape = getattr(x, "shape", None)
    return tuple(shape) if shape is not None else tuple(np.shape(x))


def dtype_of(x):
    """The dtype of an array or an NNX variable's value (``None`` for non-arrays)."""
    x = unwrap(x)
    dtype = getattr(x, "dtype", None)
    return None if dtype is None else np.dtype(dtype)


def _key_str(key) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_keys(path) -> tuple[str, ...]:
    """The components of a jax key path as strings, e.g. ``("layers", "0", "kernel")``."""
    return tuple(_key_str(k) for k in path)


def path_to_str(path) -> str:
    """A ``/``-joined path string such as ``"layers/0/attn/kernel"`` from a jax key path."""
    return "/".join(path_keys(path))


def flatten_with_paths(tree) -> tuple[list[tuple[str, Any]], Any]:
    """``([(path_string, leaf), ...], treedef)`` with NNX variables kept as single leaves."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_variable)
    return [(path_to_str(p), leaf) for p, leaf in leaves], treedef


def flatten_with_keys(tree, is_leaf=None) -> tuple[list[tuple[tuple[str, ...], Any]], Any]:
    """``([(path_components, leaf), ...], treedef)`` with NNX variables kept as single leaves.

    Like `flatten_with_paths`, but each path is a tuple of strings, so that keys holding
    a ``/`` cannot collide with nested keys. ``is_leaf`` may mark further leaves.
    """
    def stop(x):
        return is_variable(x) or (is_leaf is not None and is_leaf(x))

    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=stop)
    return [(path_keys(p), leaf) for p, leaf in leaves], treedef


def map_with_path(fn, tree):
    """``fn(path_string, leaf)`` on every leaf (NNX variables are leaves); same structure."""
    items, treedef = flatten_with_paths(tree)
    return jax.tree_util.tree_unflatten(treedef, [fn(path, leaf) for path, leaf in items])


def as_params_tree(params):
    """Accepts an ``nnx.Module`` (its ``nnx.Param`` state) or any pytree (unchanged)."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(params, nnx.Module):
        return nnx.state(params, nnx.Param)
    return params
