"""Per-matrix views of pytree leaves, shared by the second-moment and RMS blocks.

A leaf is seen as a batch of matrices ``(..., m, n)``:

* with an ``optorth.MatrixSpec``, through ``spec.to_matrices(x)`` → ``(B, m, n)`` with
  m the fan-in (reduction axes) and n the fan-out (output axes);
* without one (``None`` or the routing label ``"fallback"``), a leaf of rank ≥ 2 is
  its own view: the last two axes are the matrix, every leading axis is a batch axis;
* scalars and vectors have no matrix view (``None``).

Specs are matched to leaves by their pytree path, so a spec tree computed from the full
parameter tree also works inside ``optax.partition`` (masked leaves have no path) and
under Flax NNX (``nnx.Param`` wrappers add a ``.value`` key at init only; it is ignored).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from optorth.matrices._specs import MatrixSpec, is_spec_leaf


def is_spec(x: Any) -> bool:
    """True for an ``optorth.MatrixSpec``."""
    return isinstance(x, MatrixSpec)


def _normalize(path) -> tuple:
    """Drops ``GetAttrKey('value')`` (Flax NNX Variable wrappers) so paths of wrapped and
    plain trees agree."""
    return tuple(
        k for k in path if not (isinstance(k, jax.tree_util.GetAttrKey) and k.name == "value")
    )


def leaf_paths(tree) -> list[str]:
    """Readable paths of the array leaves of ``tree``, in ``jax.tree.leaves`` order."""
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def leaf_specs(tree, specs, *, who: str) -> list:
    """One spec (or ``None``) per array leaf of ``tree``, in ``jax.tree.leaves`` order.

    Args:
      tree: parameters or updates (may hold ``optax.MaskedNode`` or ``nnx.Param`` nodes).
      specs: ``None`` (every leaf uses the default view), a pytree with the structure of
        the parameters whose leaves are a spec, ``None`` or ``"fallback"``, or a callable
        ``tree -> such a pytree`` (e.g. ``optorth.route``; under ``optax.inject_hyperparams``
        list it in ``static_args``, or it is taken for a schedule).
      who: name of the calling transform, for error messages.

    Returns:
      A list with a spec object or ``None`` for each leaf.
    """
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    if specs is None:
        return [None] * len(flat)
    if callable(specs):
        specs = specs(tree)
    spec_flat = jax.tree_util.tree_flatten_with_path(specs, is_leaf=is_spec_leaf)[0]
    by_path = {_normalize(p): s for p, s in spec_flat}
    out = []
    for path, leaf in flat:
        key = _normalize(path)
        if key not in by_path:
            raise ValueError(
                f"{who}: no spec for leaf {jax.tree_util.keystr(path)} of shape "
                f"{jnp.shape(leaf)}. specs must have the structure of the parameters (one "
                f"MatrixSpec, None or 'fallback' per leaf); build it with optorth.route(params)."
            )
        spec = by_path[key]
        if spec is not None and not isinstance(spec, str) and not is_spec(spec):
            raise ValueError(
                f"{who}: the spec for leaf {jax.tree_util.keystr(path)} is {spec!r}; expected "
                f"an optorth.MatrixSpec, None or 'fallback'."
            )
        out.append(spec if is_spec(spec) else None)
    return out


def check_leaf(spec, shape, path: str, *, who: str) -> None:
    """Raises ``ValueError`` naming the leaf when ``spec`` does not fit ``shape`` or splits it
    into matrices of different shapes (blocks of unequal sizes)."""
    if spec is None:
        return
    spec.check(tuple(shape), path)
    try:
        spec.matrix_shape(tuple(shape))
    except ValueError as err:
        raise ValueError(
            f"{who}: leaf {path} of shape {tuple(shape)}: {err} Per-matrix statistics need "
            f"equally shaped matrices; give this leaf a spec without unequal blocks."
        ) from None


def matrix_shape(spec, shape) -> tuple[int, ...] | None:
    """Shape ``(*batch, m, n)`` of the matrix view of a leaf of ``shape``; ``None`` if the
    leaf has no matrix view (scalar or vector without spec)."""
    if spec is not None:
        return tuple(spec.matrix_shape(tuple(shape)))
    return tuple(shape) if len(shape) >= 2 else None


def to_view(x, spec) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
    """The ``(..., m, n)`` view of ``x`` and the function mapping such a view back to
    ``x.shape``. Only call for leaves that have a matrix view."""
    if spec is None:
        return x, lambda y: y
    shape = x.shape
    return spec.to_matrices(x), lambda y: spec.from_matrices(y, shape)


def per_matrix_rms(view) -> jax.Array:
    """RMS of each matrix of a ``(..., m, n)`` view, shape ``(..., 1, 1)``, in float32."""
    v = view.astype(jnp.float32)
    return jnp.sqrt(jnp.mean(jnp.square(v), axis=(-2, -1), keepdims=True))


def leaf_rms(x, spec) -> jax.Array:
    """Per-matrix RMS of a leaf, broadcastable to ``x`` (float32). Scalars and vectors
    without spec are one block."""
    if spec is None and jnp.ndim(x) < 2:
        return jnp.sqrt(jnp.mean(jnp.square(jnp.asarray(x, jnp.float32))))
    view, back = to_view(x, spec)
    rms = jnp.broadcast_to(per_matrix_rms(view), view.shape)
    return back(rms)
