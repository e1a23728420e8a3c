"""One matrix iterated by several devices: each holds a block of its columns.

When a mesh has more devices than a stack has matrices, whole matrices leave devices idle
(64 devices and 12 matrices of a shape: 52 idle). Newton–Schulz needs a matrix's columns only
through reductions: the Gram matrix A = XXᵀ = Σⱼ XⱼXⱼᵀ sums the column blocks' partial Gram
matrices, and every other product multiplies X from the left by an m×m polynomial in A, which
acts on each column block alone. So ``k`` devices can share a wide ``m×n`` matrix, each
holding ``m×(n/k)`` columns: partial Gram matrices are summed across the ``k`` devices, and
every m×m product is split by rows (each device computes ``m/k`` rows of it, then the rows
are gathered), so the dot work of one matrix divides by ``k`` exactly.

The collectives run inside ``jax.shard_map`` over the mesh axes carrying the stack, among
the ``k`` consecutive devices that share a matrix, as butterflies of
``jax.lax.ppermute`` (log₂ k exchanges; ``k`` is a power of two). IEEE addition is
commutative, so every device of a group ends with bit-identical sums.

While a split is active (`splitting`), `sum_columns`, `max_columns`, `square_matmul` and
`full_shape` act on the group; outside they are the plain single-device operations, so the
Newton–Schulz engine is written once for both.

References:
  Amsel et al., "The Polar Express" (arXiv 2505.16932): iterating on the Gram matrix.
  Liu et al., "Muon is Scalable for LLM Training" (arXiv 2502.16982): distributed Muon.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import NamedTuple

import jax
import jax.numpy as jnp


class ColumnSplit(NamedTuple):
    """``parts`` consecutive devices of the mesh axes ``axes`` (``devices`` in all) share
    each matrix, device ``i`` holding column block ``i mod parts``."""

    axes: tuple[str, ...]
    devices: int
    parts: int

    def _index(self):
        return jax.lax.axis_index(self.axes)

    def _exchange(self, x, bit: int):
        perm = [(i, i ^ (1 << bit)) for i in range(self.devices)]
        return jax.lax.ppermute(x, self.axes, perm)

    def _stages(self) -> range:
        return range(self.parts.bit_length() - 1)

    def reduce(self, x, op):
        for bit in self._stages():
            x = op(x, self._exchange(x, bit))
        return x

    def gather_rows(self, rows):
        """The full matrices from each device's block of ``m/parts`` rows (axis -2)."""
        for bit in self._stages():
            other = self._exchange(rows, bit)
            upper = (self._index() >> bit) & 1
            rows = jnp.where(upper == 0, jnp.concatenate([rows, other], axis=-2),
                             jnp.concatenate([other, rows], axis=-2))
        return rows

    def own_rows(self, x):
        """This device's block of ``m/parts`` rows of replicated matrices ``x``."""
        size = x.shape[-2] // self.parts
        start = (self._index() % self.parts) * size
        return jax.lax.dynamic_slice_in_dim(x, start, size, axis=-2)


_ACTIVE: contextvars.ContextVar[ColumnSplit | None] = contextvars.ContextVar(
    "optorth_column_split", default=None)


@contextlib.contextmanager
def splitting(split: ColumnSplit):
    """Traces the enclosed code as running on one column block of ``split``."""
    token = _ACTIVE.set(split)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def sum_columns(x):
    """``x`` (a per-block partial sum over columns) summed over the matrix's column blocks
    (in float32 at least, so 16-bit partial sums round once, as one device's product does)."""
    split = _ACTIVE.get()
    if split is None:
        return x
    return split.reduce(x.astype(jnp.promote_types(x.dtype, jnp.float32)), jnp.add
                        ).astype(x.dtype)


def max_columns(x):
    """``x`` (a per-block maximum) maximized over the matrix's column blocks."""
    split = _ACTIVE.get()
    return x if split is None else split.reduce(x, jnp.maximum)


def square_matmul(a, b):
    """``a @ b`` for replicated m×m matrices; split by rows over the group when active."""
    split = _ACTIVE.get()
    if split is None:
        return a @ b
    return split.gather_rows(split.own_rows(a) @ b)


def full_shape(shape) -> tuple[int, ...]:
    """The shape of the whole matrices whose column block has shape ``shape``."""
    split = _ACTIVE.get()
    shape = tuple(shape)
    return shape if split is None else shape[:-1] + (shape[-1] * split.parts,)
