"""Matrix views of leaves for the statistics blocks (second moments, factored, per-matrix RMS).

`optorth.matrices.map_matrices` is the way to apply a function to every matrix of a
tree. The statistics blocks need something else: their state holds arrays of *other* shapes
than the matrices (row and column statistics, one value per neuron), kept per leaf, so they
walk the leaves themselves and see each one through `to_view`. This module is that
internal primitive; it is not a second mapper.

A leaf is seen as a batch of matrices ``(..., m, n)``:

* with an ``optorth.MatrixSpec``, through ``spec.to_matrices(x)`` → ``(B, m, n)`` with
  m the fan-in (reduction axes) and n the fan-out (output axes);
* with ``"fallback"``, a leaf of rank ≥ 2 is its own view: the last two axes are the matrix,
  every leading axis a batch axis (Adafactor's convention);
* scalars and vectors have no matrix view (``None``).

Specs come from the one resolver, `optorth.matrices.resolve_specs`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from optorth.matrices._paths import dtype_of, shape_of
from optorth.matrices._resolve import Specs, resolve_leaf_specs
from optorth.matrices._specs import MatrixSpec


def _check_equal_blocks(spec: MatrixSpec, shape, path: str, who: str) -> None:
    try:
        spec.matrix_shape(tuple(shape))
    except ValueError as err:
        raise ValueError(
            f"{who}: leaf {path!r} of shape {tuple(shape)}: {err} Per-matrix statistics need "
            f"equally shaped matrices; give this leaf a spec without unequal blocks."
        ) from None


def _check_real(leaf, path: str, who: str) -> None:
    dtype = dtype_of(leaf)
    if dtype is not None and jnp.issubdtype(dtype, jnp.complexfloating):
        raise ValueError(
            f"{who}: leaf {path!r} of shape {shape_of(leaf)} has dtype {dtype}; second-moment "
            f"statistics are defined here for real numbers only (the imaginary part would be "
            f"dropped). Split it into real and imaginary parts, or give it an optimizer that "
            f"supports complex numbers (e.g. optax.adam) through optax.partition."
        )


def statistics_leaves(tree, specs: Specs, *, who: str, fallback_stats: bool = True):
    """``(leaves, treedef, specs, paths)`` of ``tree`` for a statistics block.

    ``specs`` is resolved by `optorth.matrices.resolve_specs` (one ``MatrixSpec`` or
    ``"fallback"`` per leaf, in ``jax.tree.leaves`` order). Complex leaves that get statistics
    are refused (their second moments would drop the imaginary part): every leaf when
    ``fallback_stats`` (factored, per-matrix RMS), else the ``MatrixSpec`` leaves only (which
    the resolver already refuses). Specs that split a leaf into matrices of unequal shapes are
    refused too.
    """
    leaves, treedef = jax.tree.flatten(tree)
    spec_list, paths = resolve_leaf_specs(specs, tree, who=who)
    for leaf, spec, path in zip(leaves, spec_list, paths, strict=True):
        if fallback_stats:
            _check_real(leaf, path, who)
        if isinstance(spec, MatrixSpec):
            _check_equal_blocks(spec, shape_of(leaf), path, who)
    return leaves, treedef, spec_list, paths


def matrix_shape(spec, shape) -> tuple[int, ...] | None:
    """Shape ``(*batch, m, n)`` of the matrix view of a leaf of ``shape``; ``None`` if the
    leaf has no matrix view (a scalar or vector without a ``MatrixSpec``)."""
    if isinstance(spec, MatrixSpec):
        return tuple(spec.matrix_shape(tuple(shape)))
    return tuple(shape) if len(shape) >= 2 else None


def to_view(x, spec) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
    """The ``(..., m, n)`` view of ``x`` and the function mapping such a view back to
    ``x.shape``. Only call for leaves that have a matrix view (see `matrix_shape`)."""
    if not isinstance(spec, MatrixSpec):
        return x, lambda y: y
    shape = x.shape
    return spec.to_matrices(x), lambda y: spec.from_matrices(y, shape)


def per_matrix_rms(view) -> jax.Array:
    """RMS of each matrix of a ``(..., m, n)`` view, shape ``(..., 1, 1)``, in float32."""
    v = view.astype(jnp.float32)
    return jnp.sqrt(jnp.mean(jnp.square(v), axis=(-2, -1), keepdims=True))


def leaf_rms(x, spec) -> jax.Array:
    """Per-matrix RMS of a leaf, broadcastable to ``x`` (float32). Scalars and vectors
    without a ``MatrixSpec`` are one block."""
    if matrix_shape(spec, jnp.shape(x)) is None:
        return jnp.sqrt(jnp.mean(jnp.square(jnp.asarray(x, jnp.float32))))
    view, back = to_view(x, spec)
    rms = jnp.broadcast_to(per_matrix_rms(view), view.shape)
    return back(rms)
