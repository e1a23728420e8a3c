"""Recording singular-value spectra of the matrices an optimizer sees, cheaply, in its state.

``record_spectra`` is an ``optax.GradientTransformation`` that returns its updates unchanged
and, every ``every`` updates, stores the singular values of a few of them (float32 SVD,
``lax.cond``-gated so the other steps pay nothing but a predicate) in a ring buffer of plain
arrays, so the record is jit-compatible and checkpointable. Put it right after the momentum
block to record momentum spectra:

    optax.chain(optax.trace(0.95, nesterov=True), optorth.record_spectra(every=50),
                optorth.orthogonalize(), ...)

Each record keeps, per sampled matrix M, its singular values divided by ‖M‖_F (the
normalization the Newton–Schulz engine applies with ``precondition="frobenius"``), all of
them for small matrices or ``num_values`` rank quantiles (always including σ_max and σ_min)
for large ones. ``recorded_spectra(state)`` returns them for
``optorth.fit_schedule(steps, spectra=...)``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optorth.blocks._find_states import find_states
from optorth.matrices._paths import dtype_of, shape_of, unwrap
from optorth.matrices._resolve import Specs, resolve_leaf_specs
from optorth.matrices._specs import MatrixSpec


class SpectraState(NamedTuple):
    """State of `record_spectra` (plain arrays; checkpointable).

    Attributes:
      count: int32 scalar, updates seen.
      steps: ``(capacity,)`` int32, the update index of each record (−1: empty slot).
      values: ``(capacity, L, num_values)`` float32, σ / ‖M‖_F in descending order for each
        of the ``L`` sampled matrices, NaN-padded for matrices with fewer singular values.
      norms: ``(capacity, L)`` float32, ‖M‖_F of each sampled matrix.
    """

    count: jax.Array
    steps: jax.Array
    values: jax.Array
    norms: jax.Array


def _matrix_dims(leaf, spec) -> tuple[int, int] | None:
    """``(m, n)`` of the matrices a leaf is sampled from, or ``None`` if it has none."""
    dtype = dtype_of(leaf)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        return None
    shape = shape_of(leaf)
    if isinstance(spec, MatrixSpec):
        return spec.matrix_shapes(shape)[0][1:]
    return shape[-2:] if len(shape) >= 2 else None


def sampled_leaves(tree, max_matrices: int = 8,
                   select: Callable[[str, Any], bool] | None = None,
                   specs: Specs = "fallback") -> list[tuple[int, str]]:
    """``(flat index, path)`` of the leaves `record_spectra` samples from ``tree``.

    Candidates are real floating-point leaves with matrices (a ``MatrixSpec`` leaf, or a
    ``"fallback"`` leaf of rank ≥ 2 seen as a batch of matrices over its last two axes) of
    nonzero size, for which ``select(path, leaf)`` is true (``path`` is ``/``-joined, as in
    ``optorth.describe_routing``); at most ``max_matrices`` of them, evenly spaced in
    flattening order.
    """
    spec_list, paths = resolve_leaf_specs(specs, tree, who="record_spectra")
    flat = jax.tree.leaves(tree)
    candidates = []
    for i, (leaf, spec, path) in enumerate(zip(flat, spec_list, paths, strict=True)):
        dims = _matrix_dims(leaf, spec)
        if dims and min(dims) >= 1 and (select is None or select(path, leaf)):
            candidates.append((i, path))
    if len(candidates) <= max_matrices:
        return candidates
    picks = np.round(np.linspace(0, len(candidates) - 1, max_matrices)).astype(int)
    return [candidates[i] for i in picks]


def matrix_spectrum(mat, num_values: int) -> tuple[jax.Array, jax.Array]:
    """``(σ / ‖M‖_F, ‖M‖_F)`` of one matrix: ``num_values`` values, float32, descending.

    All singular values (NaN-padded) if ``min(m, n) <= num_values``, else the values at
    ``num_values`` evenly spaced ranks from the largest to the smallest.
    """
    sigma = jnp.linalg.svd(mat.astype(jnp.float32), compute_uv=False)
    norm = jnp.sqrt(jnp.sum(jnp.square(sigma)))
    rel = sigma / jnp.where(norm > 0, norm, jnp.nan)
    r = sigma.shape[0]
    if r <= num_values:
        return jnp.concatenate([rel, jnp.full((num_values - r,), jnp.nan, rel.dtype)]), norm
    ranks = np.round(np.linspace(0, r - 1, num_values)).astype(int)
    return rel[ranks], norm


def _pick_matrix(leaf, spec, index):
    """Matrix number ``index`` (mod the batch size) of a leaf (of its first block when a
    spec splits it into blocks of different shapes)."""
    if isinstance(spec, MatrixSpec):
        groups = spec.to_groups(leaf)
        same = len({g.shape[1:] for g in groups}) == 1
        mats = jnp.concatenate(groups) if same and len(groups) > 1 else groups[0]
    else:
        mats = jnp.reshape(leaf, (-1,) + leaf.shape[-2:])
    return jax.lax.dynamic_index_in_dim(mats, index % mats.shape[0], keepdims=False)


def record_spectra(
    every: int = 100,
    *,
    max_matrices: int = 8,
    num_values: int = 64,
    capacity: int = 64,
    select: Callable[[str, Any], bool] | None = None,
    specs: Specs = "fallback",
) -> optax.GradientTransformation:
    """Records spectra of the updates passing through (which it returns unchanged).

    At updates 0, every, 2·every, … it computes, for up to ``max_matrices`` leaves
    (`sampled_leaves`; for a stacked leaf one matrix of its batch, rotating with each
    record), σ(M) / ‖M‖_F by a float32 SVD, and writes them to slot
    ``(count // every) % capacity`` of the state.

    Args:
      every: record period in updates (static).
      max_matrices: how many leaves are sampled.
      num_values: singular values kept per matrix (all of them if the matrix has fewer).
      capacity: number of records kept (a ring buffer: the oldest is overwritten).
      select: optional ``select(path, leaf) -> bool`` restricting the candidate leaves
        (``path`` is ``/``-joined, e.g. ``"layers/0/mlp/kernel"``).
      specs: which matrices each leaf holds, read by ``optorth.matrices.resolve_specs``. The
        default ``"fallback"`` sees every leaf of rank ≥ 2 over its last two axes; pass the
        optimizer's specs (e.g. ``None`` for ``optorth.route``) to record exactly the matrices
        it orthogonalizes.

    Returns:
      An ``optax.GradientTransformation`` with state `SpectraState`.

    Example:
      >>> import jax.numpy as jnp, optax, optorth
      >>> opt = optax.chain(optax.trace(0.95), optorth.record_spectra(every=50))
      >>> params = {"w": jnp.eye(4, 8), "b": jnp.zeros(8)}
      >>> state = opt.init(params)
      >>> _, state = opt.update(params, state)   # update 0 is recorded
      >>> [s.round(3).tolist() for s in optorth.recorded_spectra(state)]
      [[0.5, 0.5, 0.5, 0.5]]

      The records feed ``optorth.fit_schedule(steps, spectra=optorth.recorded_spectra(...))``.
    """
    for name, value in (("every", every), ("max_matrices", max_matrices),
                        ("num_values", num_values), ("capacity", capacity)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"record_spectra: {name} must be a positive int; got {value!r}.")

    def init_fn(params):
        leaves = sampled_leaves(params, max_matrices, select, specs)
        count = len(leaves)
        return SpectraState(
            count=jnp.zeros([], jnp.int32),
            steps=jnp.full((capacity,), -1, jnp.int32),
            values=jnp.full((capacity, count, num_values), jnp.nan, jnp.float32),
            norms=jnp.full((capacity, count), jnp.nan, jnp.float32),
        )

    def record(state, updates):
        flat = jax.tree_util.tree_leaves(updates)
        spec_list, _ = resolve_leaf_specs(specs, updates, who="record_spectra")
        leaves = sampled_leaves(updates, max_matrices, select, specs)
        index = state.count // every
        slot = index % capacity
        if not leaves:
            return state._replace(steps=state.steps.at[slot].set(state.count))
        records = [matrix_spectrum(_pick_matrix(flat[i], spec_list[i], index),
                                   num_values) for i, _ in leaves]
        return state._replace(
            steps=state.steps.at[slot].set(state.count),
            values=state.values.at[slot].set(jnp.stack([r[0] for r in records])),
            norms=state.norms.at[slot].set(jnp.stack([r[1] for r in records])),
        )

    def update_fn(updates, state, params=None):
        del params
        new = jax.lax.cond(state.count % every == 0, record, lambda s, _: s, state, updates)
        return updates, new._replace(count=state.count + 1)

    return optax.GradientTransformation(init_fn, update_fn)


def _find_states(tree) -> list[SpectraState]:
    return find_states(tree, SpectraState)


def recorded_spectra(state, *, min_norm: float = 0.0) -> list[np.ndarray]:
    """The recorded spectra as a list of 1-D float64 arrays of σ / ‖M‖_F (NaNs dropped).

    Args:
      state: a `SpectraState` or any optimizer state containing some (e.g. an
        ``optax.chain`` state, also inside ``optax.partition`` / ``inject_hyperparams``, or
        a Flax NNX ``Optimizer.opt_state``).
      min_norm: skip matrices whose Frobenius norm is at most this (e.g. all-zero momenta).

    Returns:
      One array per (record, sampled matrix), oldest record first, ready for
      ``optorth.fit_schedule(steps, spectra=...)``.
    """
    states = _find_states(state)
    if not states:
        raise ValueError("recorded_spectra: no SpectraState found in the given state; add "
                         "optorth.record_spectra(...) to the optimizer chain.")
    out = []
    for s in states:
        steps, values, norms = (np.asarray(unwrap(a)) for a in (s.steps, s.values, s.norms))
        for slot in np.argsort(np.where(steps < 0, np.iinfo(np.int32).max, steps)):
            if steps[slot] < 0:
                continue
            for row, norm in zip(values[slot], norms[slot], strict=True):
                row = row[np.isfinite(row)].astype(np.float64)
                if row.size and np.isfinite(norm) and norm > min_norm:
                    out.append(row)
    return out
