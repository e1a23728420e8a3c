"""The one per-matrix mapper: a function of matrix stacks applied to every matrix of a tree."""

from __future__ import annotations

from typing import Any, Callable

from optorth._distribution import Distribution
from optorth.matrices._resolve import Specs, resolve_specs
from optorth.matrices._sharding import map_sharded


def map_matrices(
    fn: Callable[..., Any],
    tree,
    specs: Specs,
    *rest,
    consts: Any = None,
    transpose_tall: bool = False,
    distribute: Distribution | bool | None = None,
):
    """Applies a per-matrix function to every matrix of ``tree``, one batched call per shape.

    1. resolve: ``specs`` is read by `resolve_specs` (``None``: `optorth.route`);
       leaves with ``"fallback"`` and ``optax.MaskedNode`` entries are returned unchanged;
    2. group: each matrix leaf is seen as ``(B, m, n)`` matrices through its
       `MatrixSpec`, and the matrices of all leaves with the same ``(m, n)`` and dtype
       are concatenated into one stack ``(ΣB, m, n)``;
    3. distribute: on a device mesh each stack is sharded on its stack axis over the axes an
       `optorth.Distribution` allows, so that every device holds whole matrices
       (``optorth.matrices._sharding``, ``optorth.matrices._placement``);
    4. ``fn`` runs once per stack and the results are split and put back in place.

    ``fn`` sees each matrix as one entry of a batch, so a per-matrix function (one whose
    result for a matrix depends on that matrix only) gives bit-identical values to one call per
    leaf. Calling convention: ``fn(stack, *rest_stacks)``; when ``consts`` is given it is bound
    as the first argument, ``fn(consts, stack, *rest_stacks)`` (like ``functools.partial``).

    Args:
      fn: maps ``(ΣB, m, n)`` arrays to an array of the same shape, one matrix per entry.
      tree: the pytree whose matrices are mapped (e.g. updates).
      specs: ``None``, a pytree (or prefix) of ``MatrixSpec`` / ``"fallback"`` / ``None``, or a
        callable ``tree -> such a pytree``; see `resolve_specs`.
      *rest: further trees with ``tree``'s structure whose matrices are stacked alike and
        passed to ``fn`` after the stack of ``tree``.
      consts: a pytree of arrays ``fn`` reads (e.g. coefficient tables). Pass arrays here
        rather than closing over them: under explicit mesh axes they must enter the
        ``auto_axes`` region together with the stacks.
      transpose_tall: put a tall ``n × m`` matrix into the ``m × n`` stack as its transpose.
        Only valid for ``fn`` with f(Xᵀ) = f(X)ᵀ (Newton–Schulz, the spectral lmo), not for
        shape-dependent functions.
      distribute: an `optorth.Distribution`, or a shorthand for its mode: ``None``
        (``"auto"``: the stacks holding sharded leaves when the layouts are visible under
        explicit axes, every stack under automatic axes), ``True`` (every stack), ``False``
        (none: XLA partitions the products itself).

    Returns:
      A tree like ``tree`` with every matrix replaced by ``fn``'s result; matrix leaves keep
      their input shardings.

    Raises:
      ValueError: from `resolve_specs` (naming the leaf), for a ``distribute`` that is
        not a ``Distribution``/``None``/``True``/``False`` or names an axis the mesh does not
        have, or when ``fn`` changes a stack's shape.

    Example:
      >>> import jax.numpy as jnp
      >>> from optorth.matrices import MatrixSpec
      >>> tree = {"a": jnp.ones((8, 4)), "b": jnp.ones((3, 8, 4)), "bias": jnp.ones(4)}
      >>> specs = {"a": MatrixSpec(), "b": MatrixSpec.stacked(), "bias": "fallback"}
      >>> calls = []
      >>> out = map_matrices(lambda s: calls.append(s.shape) or s / s.shape[-1], tree, specs)
      >>> calls                                 # one call for the four 8×4 matrices
      [(4, 8, 4)]
      >>> float(out["b"][0, 0, 0]), float(out["bias"][0])
      (0.25, 1.0)
      >>> out = map_matrices(lambda c, s: c * s, tree, specs, consts=jnp.float32(2))
      >>> float(out["a"][0, 0])
      2.0
    """
    specs_tree = resolve_specs(specs, tree, who="map_matrices")
    call = fn if consts is not None else (lambda _, *stacks: fn(*stacks))
    return map_sharded(call, tree, specs_tree, rest, consts=consts,
                       transpose_tall=transpose_tall, distribute=distribute)
