"""How a parameter of any rank is seen as a batch of matrices.

A `MatrixSpec` names the *reduction* (fan-in) axes and the *output* (fan-out) axes of a
weight; every other axis is a batch axis. A leaf of shape ``S`` becomes ``B`` matrices of shape
``m × n`` with ``m = ∏ S[reduction]`` and ``n = ∏ S[output]``. An axis may also be split into
heads (each head becomes a batch entry: per-head orthogonalization) or into fused blocks of
given sizes (e.g. a fused QKV projection: each block is its own matrix).

Flattening order of the ``B`` matrices: blocks outermost, then the batch axes in order, then
heads. ``to_matrices`` / ``from_matrices`` are exact inverses (a transpose and a reshape).

Reference: the ``MuonDimensionNumbers`` of optax 0.2.8 (``reduction_axis``/``output_axis``),
extended with head and block splits and with errors that name the leaf.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _as_axes(value, name) -> tuple[int, ...]:
    if isinstance(value, int):
        value = (value,)
    axes = tuple(value)
    if not axes or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise ValueError(f"MatrixSpec.{name} must be a non-empty tuple of ints; got {value!r}.")
    return axes


class _Piece(NamedTuple):
    """The static plan for one block: where it sits and how it becomes (B, m, n)."""

    start: int  # offset of the block along the block axis (0 without blocks)
    block_shape: tuple[int, ...]  # the block's shape before the head split
    split_shape: tuple[int, ...]  # after splitting the head axis in two
    perm: tuple[int, ...]  # transpose of split_shape to batch + reduction + output
    matrix: tuple[int, int, int]  # (B, m, n)


@dataclasses.dataclass(frozen=True)
class MatrixSpec:
    """Which axes of a weight are fan-in, fan-out, batch, heads and fused blocks.

    Immutable and hashable: static under ``jax.jit`` and never taken for a schedule or a
    hyperparameter by ``optax.inject_hyperparams``.

    Attributes:
      reduction: fan-in axes (contracted with the layer input); negative values count from the
        end. Default ``(0,)``: a Flax kernel ``(in, out)``.
      output: fan-out axes. Default ``(1,)``.
      heads: optional ``(axis, num_heads)``: split ``axis`` (a reduction or output axis) into
        ``num_heads`` equal heads, head ``h`` owning indices ``[h·d, (h+1)·d)``; heads become a
        batch axis, so each head is orthogonalized on its own.
      blocks: optional ``(axis, sizes)``: split ``axis`` (a reduction or output axis) into
        consecutive blocks of the given sizes (e.g. ``(1, (d, d, d))`` for a fused QKV kernel
        ``(d, 3d)``); each block is a separate matrix. With ``heads`` on the same axis the head
        split applies inside each block.

    Example:
      >>> spec = MatrixSpec(reduction=(0,), output=(1,), heads=(1, 4))
      >>> spec.matrix_shape((64, 128))    # 4 heads of 64×32
      (4, 64, 32)
    """

    reduction: tuple[int, ...] = (0,)
    output: tuple[int, ...] = (1,)
    heads: tuple[int, int] | None = None
    blocks: tuple[int, tuple[int, ...]] | None = None

    def __post_init__(self):
        object.__setattr__(self, "reduction", _as_axes(self.reduction, "reduction"))
        object.__setattr__(self, "output", _as_axes(self.output, "output"))
        if self.heads is not None:
            heads = tuple(self.heads) if isinstance(self.heads, (tuple, list)) else ()
            if not (len(heads) == 2 and _is_int(heads[0]) and _is_int(heads[1])
                    and heads[1] >= 1):
                raise ValueError(f"MatrixSpec.heads must be (axis, num_heads) with num_heads >= "
                                 f"1, e.g. heads=(1, 8); got {self.heads!r}.")
            object.__setattr__(self, "heads", heads)
        if self.blocks is not None:
            blocks = tuple(self.blocks) if isinstance(self.blocks, (tuple, list)) else ()
            sizes = blocks[1] if len(blocks) == 2 else None
            sizes = (sizes,) if _is_int(sizes) else sizes
            if not (len(blocks) == 2 and _is_int(blocks[0])
                    and isinstance(sizes, (tuple, list)) and sizes
                    and all(_is_int(s) and s >= 1 for s in sizes)):
                raise ValueError(f"MatrixSpec.blocks must be (axis, (size, ...)) with positive "
                                 f"sizes, e.g. blocks=(1, (512, 512, 512)) for a fused QKV "
                                 f"kernel; got {self.blocks!r}.")
            object.__setattr__(self, "blocks", (blocks[0], tuple(sizes)))

    # ----- constructors -------------------------------------------------------------------
    @classmethod
    def dense(cls) -> "MatrixSpec":
        """A Flax dense kernel ``(in, out)``: reduction ``(0,)``, output ``(1,)``."""
        return cls((0,), (1,))

    @classmethod
    def conv(cls, spatial_dims: int = 2) -> "MatrixSpec":
        """A Flax conv kernel ``(*spatial, cin, cout)``: reduction spatial + cin, output cout.

        ``spatial_dims=2`` gives reduction ``(0, 1, 2)``, output ``(3,)`` for
        ``(kh, kw, cin, cout)``; ``spatial_dims=1`` is a conv1d kernel ``(k, cin, cout)``.
        """
        return cls(tuple(range(spatial_dims + 1)), (spatial_dims + 1,))

    @classmethod
    def stacked(cls, stack_dims: int = 1) -> "MatrixSpec":
        """Stacked / scanned dense kernels ``(L, in, out)``: reduction ``(1,)``, output ``(2,)``.

        ``stack_dims`` leading axes are batch axes (e.g. 2 for ``(experts, L, in, out)``).
        """
        return cls((stack_dims,), (stack_dims + 1,))

    # ----- validation ---------------------------------------------------------------------
    def _error(self, shape, path, why, fix) -> ValueError:
        where = f"leaf {path!r} " if path else "a leaf "
        return ValueError(f"{self!r} does not fit {where}of shape {tuple(shape)}: {why}. {fix}")

    def _normalize(self, axes, ndim, shape, path, what) -> tuple[int, ...]:
        bad = [a for a in axes if not -ndim <= a < ndim]
        if bad:
            raise self._error(shape, path, f"{what} axes {bad} do not exist for rank {ndim}",
                              "Give axes within the leaf's rank (negative axes count from the "
                              "end), or route this leaf with another MatrixSpec / 'fallback'.")
        norm = tuple(a % ndim for a in axes)
        if len(set(norm)) != len(norm):
            raise self._error(shape, path, f"{what} axes {axes} repeat an axis",
                              "List each axis once.")
        return norm

    def _roles(self, shape, path=""):
        """Normalized (reduction, output, batch) axes, after checking the splits."""
        ndim = len(shape)
        red = self._normalize(self.reduction, ndim, shape, path, "reduction")
        out = self._normalize(self.output, ndim, shape, path, "output")
        if set(red) & set(out):
            raise self._error(shape, path, f"reduction {red} and output {out} overlap",
                              "An axis is either fan-in or fan-out, not both.")
        batch = tuple(a for a in range(ndim) if a not in red and a not in out)
        block_axis = self._split_axis(self.blocks, "blocks", red + out, shape, path)
        head_axis = self._split_axis(self.heads, "heads", red + out, shape, path)
        sizes = self._block_sizes(shape, path, block_axis)
        if head_axis is not None:
            num = self.heads[1]
            lengths = sizes if head_axis == block_axis else (shape[head_axis],)
            if any(length % num for length in lengths):
                raise self._error(shape, path, f"axis {head_axis} (length(s) {lengths}) does not "
                                  f"split into {num} equal heads",
                                  "Pass the number of heads that divides the axis.")
        return red, out, batch, block_axis, head_axis, sizes

    def _split_axis(self, split, name, matrix_axes, shape, path):
        if split is None:
            return None
        (axis,) = self._normalize((split[0],), len(shape), shape, path, name)
        if axis not in matrix_axes:
            raise self._error(shape, path, f"{name} axis {split[0]} is a batch axis",
                              "Split a reduction or output axis; a batch axis is already "
                              "one matrix per entry.")
        return axis

    def _block_sizes(self, shape, path, block_axis) -> tuple[int, ...]:
        if block_axis is None:
            return ()
        sizes = self.blocks[1]
        if sum(sizes) != shape[block_axis]:
            raise self._error(shape, path, f"block sizes {sizes} sum to {sum(sizes)}, but axis "
                              f"{block_axis} has length {shape[block_axis]}",
                              "Give block sizes that add up to the axis length.")
        return sizes

    def check(self, shape, path: str = "") -> None:
        """Raises ``ValueError`` (naming ``path``, the shape and a fix) if the spec does not fit."""
        self._plan(tuple(int(d) for d in shape), path)

    # ----- the static plan ----------------------------------------------------------------
    def _plan(self, shape, path="") -> tuple[_Piece, ...]:
        red, out, batch, block_axis, head_axis, sizes = self._roles(shape, path)
        if block_axis is None:
            starts, sizes = (0,), (None,)
        else:
            starts = tuple(sum(sizes[:i]) for i in range(len(sizes)))
        pieces = []
        for start, size in zip(starts, sizes, strict=True):
            block = list(shape)
            if size is not None:
                block[block_axis] = size
            pieces.append(self._piece(tuple(block), start, red, out, batch, head_axis))
        return tuple(pieces)

    def _piece(self, block, start, red, out, batch, head_axis) -> _Piece:
        if head_axis is None:
            split, extra, cut = block, (), len(block)
        else:
            num = self.heads[1]
            split = block[:head_axis] + (num, block[head_axis] // num) + block[head_axis + 1:]
            extra, cut = (head_axis,), head_axis  # the head axis sits where the split axis was

        def moved(axes):
            return tuple(a + 1 if a >= cut else a for a in axes)

        batch_s, red_s, out_s = moved(batch) + extra, moved(red), moved(out)

        def size(axes):
            return math.prod(split[a] for a in axes)

        perm = batch_s + red_s + out_s
        return _Piece(start, block, split, perm, (size(batch_s), size(red_s), size(out_s)))

    # ----- conversions --------------------------------------------------------------------
    def matrix_shapes(self, shape) -> tuple[tuple[int, int, int], ...]:
        """``(B_k, m_k, n_k)`` for each group of equally shaped matrices (one per block)."""
        return tuple(p.matrix for p in self._plan(tuple(shape)))

    def matrix_shape(self, shape) -> tuple[int, int, int]:
        """``(B, m, n)`` of `to_matrices`; raises if blocks differ in shape."""
        groups = self.matrix_shapes(shape)
        if len({g[1:] for g in groups}) != 1:
            raise ValueError(f"{self!r} splits shape {tuple(shape)} into matrices of different "
                             f"shapes {groups}; use to_groups / map_matrices instead of "
                             f"to_matrices.")
        return (sum(g[0] for g in groups),) + groups[0][1:]

    def num_matrices(self, shape) -> int:
        """How many matrices the leaf holds (batch entries × heads × blocks)."""
        return sum(g[0] for g in self.matrix_shapes(shape))

    def fan_in(self, shape) -> int:
        """``m``: the fan-in of each matrix (after head / block splits)."""
        return self.matrix_shape(shape)[1]

    def fan_out(self, shape) -> int:
        """``n``: the fan-out of each matrix (after head / block splits)."""
        return self.matrix_shape(shape)[2]

    def to_groups(self, x) -> list[jax.Array]:
        """One ``(B_k, m_k, n_k)`` array per block (a single array without blocks)."""
        pieces = self._plan(tuple(x.shape))
        axis = None if self.blocks is None else self.blocks[0] % x.ndim
        groups = []
        for p in pieces:
            xb = x if axis is None else jax.lax.slice_in_dim(
                x, p.start, p.start + p.block_shape[axis], axis=axis)
            groups.append(jnp.reshape(jnp.transpose(jnp.reshape(xb, p.split_shape), p.perm),
                                      p.matrix))
        return groups

    def from_groups(self, groups, shape) -> jax.Array:
        """Inverse of `to_groups`: the leaf of ``shape`` rebuilt from its groups."""
        shape = tuple(shape)
        pieces = self._plan(shape)
        if len(groups) != len(pieces):
            raise ValueError(f"{self!r}: expected {len(pieces)} groups for shape {shape}, "
                             f"got {len(groups)}.")
        blocks = []
        for p, y in zip(pieces, groups, strict=True):
            transposed_shape = tuple(p.split_shape[a] for a in p.perm)
            inverse = tuple(sorted(range(len(p.perm)), key=p.perm.__getitem__))
            y = jnp.transpose(jnp.reshape(y, transposed_shape), inverse)
            blocks.append(jnp.reshape(y, p.block_shape))
        if len(blocks) == 1:
            return blocks[0]
        return jnp.concatenate(blocks, axis=self.blocks[0] % len(shape))

    def to_matrices(self, x) -> jax.Array:
        """The leaf as one ``(B, m, n)`` array (all blocks must share a matrix shape)."""
        self.matrix_shape(x.shape)
        groups = self.to_groups(x)
        return groups[0] if len(groups) == 1 else jnp.concatenate(groups, axis=0)

    def from_matrices(self, y, shape) -> jax.Array:
        """Inverse of `to_matrices`: ``(B, m, n)`` back to the leaf's ``shape``."""
        sizes = [g[0] for g in self.matrix_shapes(shape)]
        splits = [sum(sizes[:i]) for i in range(1, len(sizes))]
        return self.from_groups(jnp.split(y, splits, axis=0) if splits else [y], shape)

    def describe(self, shape=None) -> str:
        """A short description such as ``"in(0,1,2) out(3) heads(1:4)"``."""
        text = (f"in({','.join(map(str, self.reduction))}) "
                f"out({','.join(map(str, self.output))})")
        if self.heads is not None:
            text += f" heads({self.heads[0]}:{self.heads[1]})"
        if self.blocks is not None:
            text += f" blocks({self.blocks[0]}:{'+'.join(map(str, self.blocks[1]))})"
        return text


def is_spec_leaf(x) -> bool:
    """Leaves of a specs tree: a `MatrixSpec`, the string ``"fallback"`` or ``None``."""
    return x is None or isinstance(x, (MatrixSpec, str))
