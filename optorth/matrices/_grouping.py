"""Grouping: one batched call per matrix shape and dtype instead of one call per leaf.

This is the grouping step of `optorth.matrices.map_matrices`. A transformer has a
handful of matrix shapes repeated over many layers (GPT-2 small: 48 matrices of 4 shapes), so
calling Newton–Schulz once per leaf traces, compiles and runs 48 separate iterations. Here every
leaf is first seen as its ``(B, m, n)`` matrix groups (through its `MatrixSpec`), the
groups of all leaves that share ``(m, n)`` and dtype are concatenated into one stack
``(ΣB, m, n)``, the function runs once per stack, and the results are split and put back.

Because the function sees each matrix as one entry of a batch, any per-matrix function gives
the same values either way (``tests/test_grouping.py`` checks bit equality against one call
per leaf).

``transpose_tall=True`` also merges the two orientations of a shape: a tall ``n×m`` matrix
enters the ``m×n`` stack as its transpose and comes back transposed. That is only valid for
functions that commute with transposition, f(Xᵀ) = f(X)ᵀ — Newton–Schulz (p(Xᵀ) = p(X)ᵀ,
and the engine itself transposes tall inputs first), the dual-norm scaling ⟨M, O⟩ — but not
for shape-dependent ones such as ``scale_by_shape``. GPT-2's 768×3072 and 3072×768 weights
then form one stack of 24, which also divides evenly over 8 devices (see
``optorth.matrices._sharding``).
"""

from __future__ import annotations

import functools

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optorth.matrices._resolve import resolve_specs
from optorth.matrices._specs import MatrixSpec, is_spec_leaf


class Member(NamedTuple):
    """One ``(B, m, n)`` matrix group of one leaf, as a slice of a stack."""

    leaf: int  # index of the leaf in the flattened specs tree
    block: int  # index of the group in ``spec.to_groups(leaf)``
    start: int  # first row of the stack it occupies
    count: int  # B: number of matrices
    transposed: bool  # whether it enters the stack as its transpose


class Group(NamedTuple):
    """A stack of equally shaped matrices: ``shape = (m, n)`` (wide when merged), dtype."""

    shape: tuple[int, int]
    dtype: Any
    members: tuple[Member, ...]

    @property
    def size(self) -> int:
        """Number of matrices in the stack (ΣB)."""
        return sum(m.count for m in self.members)


def plan_groups(leaf_shapes, leaf_dtypes, leaf_specs, *, transpose_tall=False) -> list[Group]:
    """Buckets the matrix groups of the leaves by ``(m, n)`` and dtype (static, trace-time).

    Args:
      leaf_shapes, leaf_dtypes, leaf_specs: per-leaf shape, dtype and spec; leaves whose
        spec is not a `MatrixSpec` (``"fallback"``, ``None``) or that are not arrays
        (shape ``None``) are skipped.
      transpose_tall: put a tall ``(n, m)`` group (n > m) into the ``(m, n)`` stack.

    Returns:
      Groups in order of first appearance. In each stack the members that keep their
      orientation come first and the transposed ones after them, each part in leaf order,
      so the transposed part is transposed as one block (one relayout when sharded).
    """
    buckets: dict[tuple, list[tuple[int, int, int, bool]]] = {}
    for i, (shape, dtype, spec) in enumerate(zip(leaf_shapes, leaf_dtypes, leaf_specs,
                                                 strict=True)):
        if not isinstance(spec, MatrixSpec) or shape is None:
            continue
        for j, (count, m, n) in enumerate(spec.matrix_shapes(shape)):
            flip = transpose_tall and m > n
            key = ((n, m) if flip else (m, n), np.dtype(dtype))
            buckets.setdefault(key, []).append((i, j, count, flip))
    groups = []
    for (shape, dtype), entries in buckets.items():
        members, start = [], 0
        for i, j, count, flip in sorted(entries, key=lambda e: e[3]):  # stable: leaf order
            members.append(Member(i, j, start, count, flip))
            start += count
        groups.append(Group(shape, dtype, tuple(members)))
    return groups


def regroup(group: Group, member_lists) -> list[Group]:
    """``group`` split into one group per list of its members (starts recomputed; in each,
    the members that keep their orientation first, as `plan_groups` orders them)."""
    groups = []
    for members in member_lists:
        ordered, start = [], 0
        for m in sorted(members, key=lambda m: (m.transposed, m.leaf, m.block)):
            ordered.append(m._replace(start=start))
            start += m.count
        groups.append(Group(group.shape, group.dtype, tuple(ordered)))
    return groups


def _swap(x):
    return jnp.swapaxes(x, -1, -2)


def _concat(parts):
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)


def _stack(group: Group, pieces) -> jax.Array:
    """The ``(ΣB, m, n)`` stack of a group from its members' ``(B, ·, ·)`` arrays."""
    kept = [p for mem, p in zip(group.members, pieces, strict=True) if not mem.transposed]
    flipped = [p for mem, p in zip(group.members, pieces, strict=True) if mem.transposed]
    return _concat(kept + ([_swap(_concat(flipped))] if flipped else []))


def _stacks(group: Group, inputs) -> list[jax.Array]:
    """One stack per tree from the members' pieces of each tree."""
    return [_stack(group, pieces) for pieces in inputs]


def _unstack(group: Group, stack) -> list[jax.Array]:
    """Inverse of `_stack`: the members' arrays in their own orientation."""
    first_flipped = next((m.start for m in group.members if m.transposed), group.size)
    flipped = _swap(stack[first_flipped:]) if first_flipped < group.size else None
    parts = []
    for m in group.members:
        source, offset = (flipped, first_flipped) if m.transposed else (stack, 0)
        whole = m.count == source.shape[0]
        parts.append(source if whole else jax.lax.slice_in_dim(
            source, m.start - offset, m.start - offset + m.count, axis=0))
    return parts


def _flatten(specs_tree, tree, rest):
    spec_leaves, treedef = jax.tree.flatten(specs_tree, is_leaf=is_spec_leaf)
    leaves = treedef.flatten_up_to(tree)
    return spec_leaves, treedef, leaves, [treedef.flatten_up_to(r) for r in rest]


def _is_matrix_leaf(spec, x) -> bool:
    return isinstance(spec, MatrixSpec) and hasattr(x, "shape")


def _plan(spec_leaves, leaves, transpose_tall) -> tuple[list[bool], list[Group]]:
    matrix = [_is_matrix_leaf(s, x) for s, x in zip(spec_leaves, leaves, strict=True)]
    shapes = [tuple(x.shape) if ok else None for x, ok in zip(leaves, matrix, strict=True)]
    dtypes = [x.dtype if ok else None for x, ok in zip(leaves, matrix, strict=True)]
    return matrix, plan_groups(shapes, dtypes, spec_leaves, transpose_tall=transpose_tall)


def map_stacks(
    fn: Callable[..., Any],
    tree,
    specs_tree,
    rest=(),
    *,
    transpose_tall: bool = False,
    schedule: Callable[[list[Group]], list[tuple[Group, Callable]]] | None = None,
):
    """The grouping step of `optorth.matrices.map_matrices`, on a resolved specs tree.

    ``fn(stack, *rest_stacks)`` runs once per `Group`. ``schedule(groups)``, if given,
    returns ``[(group, wrap)]``: the groups to run (it may split them) and for each a wrapper
    (the sharding step places each stack on devices with it): ``wrap(fn)(inputs, stacks_of)``
    gets the members' pieces per tree and the function that stacks them, so it decides when
    the stacks are built.
    ``specs_tree`` must be a prefix of ``tree`` (as `resolve_specs` returns it); leaves
    without a `MatrixSpec` and non-array entries are returned unchanged.
    """
    spec_leaves, treedef, leaves, rest_leaves = _flatten(specs_tree, tree, rest)
    matrix, groups = _plan(spec_leaves, leaves, transpose_tall)
    split = [s.to_groups(x) if ok else None
             for s, x, ok in zip(spec_leaves, leaves, matrix, strict=True)]
    split_rest = [[s.to_groups(x) if ok else None
                   for s, x, ok in zip(spec_leaves, r, matrix, strict=True)] for r in rest_leaves]
    results = [None if p is None else [None] * len(p) for p in split]
    scheduled = [(g, None) for g in groups] if schedule is None else schedule(groups)
    for group, wrap in scheduled:
        inputs = [[pieces[m.leaf][m.block] for m in group.members]
                  for pieces in (split, *split_rest)]
        stacks_of = functools.partial(_stacks, group)
        out = fn(*stacks_of(inputs)) if wrap is None else wrap(fn)(inputs, stacks_of)
        expected = (group.size, *group.shape)
        if tuple(getattr(out, "shape", ())) != expected:
            raise ValueError(f"map_matrices: fn changed a stack of shape {expected} "
                             f"into {getattr(out, 'shape', type(out).__name__)}; it must keep "
                             f"the shape (one output matrix per input matrix).")
        for mem, part in zip(group.members, _unstack(group, out), strict=True):
            results[mem.leaf][mem.block] = part
    new_leaves = [spec.from_groups(res, x.shape) if ok else x
                  for spec, x, res, ok in zip(spec_leaves, leaves, results, matrix, strict=True)]
    return treedef.unflatten(new_leaves)


def describe_groups(tree, specs=None, *, transpose_tall: bool = False) -> str:
    """One line per stack `optorth.matrices.map_matrices` would form, for logs and docs.

    Args:
      tree: the parameters or updates.
      specs: as in `optorth.matrices.resolve_specs` (``None``: `optorth.route`).
      transpose_tall: merge tall matrices into the wide stack of the same shape.

    Returns:
      Lines ``m×n dtype: ΣB matrices from k leaves``, in order of first appearance.

    Example:
      >>> import jax.numpy as jnp
      >>> tree = {"up": jnp.ones((4, 8)), "down": jnp.ones((8, 4)), "bias": jnp.ones(4)}
      >>> print(describe_groups(tree, transpose_tall=True))
      4x8 float32: 2 matrices from 2 leaves
    """
    specs_tree = resolve_specs(specs, tree, who="describe_groups")
    spec_leaves, _, leaves, _ = _flatten(specs_tree, tree, ())
    _, groups = _plan(spec_leaves, leaves, transpose_tall)
    return "\n".join(f"{g.shape[0]}x{g.shape[1]} {g.dtype}: {g.size} matrices from "
                     f"{len({m.leaf for m in g.members})} leaves" for g in groups)
