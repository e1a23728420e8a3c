"""Factored second moments: Adafactor's row and column statistics, per matrix, in float32.

For every matrix G (m × n) of a leaf's matrix view, with β̂2_t = 1 − t^(−c):

    R_t = β̂2_t R_{t−1} + (1 − β̂2_t) · rowmean(G² + ε1)      (m values)
    C_t = β̂2_t C_{t−1} + (1 − β̂2_t) · colmean(G² + ε1)      (n values)
    V̂_t = R_t C_tᵀ / mean(R_t)
    U_t = G / sqrt(V̂_t)

Scalars, vectors and matrices smaller than ``min_dim_size_to_factor`` keep an unfactored
V_t = β̂2_t V_{t−1} + (1 − β̂2_t)(G² + ε1) and U_t = G / sqrt(V_t). β̂2_1 = 0, so no bias
correction is needed.

Differences from ``optax.scale_by_factored_rms`` (identical updates on a 2-D float32 matrix
with ``step_offset=0`` when both factor it; see ``tests/test_factored.py``):

* statistics are kept in ``stats_dtype`` (float32) whatever the parameter dtype; optax keeps
  them in the parameter dtype (bf16 parameters → bf16 statistics);
* the factored axes are the two axes of each matrix of the leaf's ``MatrixSpec`` (for a
  ``"fallback"`` leaf: the last two axes, every leading axis a batch axis); optax factors the
  two largest axes of the leaf and only when the second largest is ≥ 128;
* the step offset is clamped, t = max(count + 1 − step_offset, 1), so steps before the
  offset behave like step 1 (β̂2 = 0); optax computes t = count + 1 − offset, which is ≤ 0 at
  the first step when offset > 0 and gives non-finite updates;
* ``update(updates, state, params=None)``: parameters are not needed;
* ``beta2`` optionally caps β̂2_t (Zhai et al. 2021 cap it at 0.999), the β2 of the EMA
  that `optorth.factored_muon` and Adam-style optimizers name so.

References:
  Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost"
  (arXiv 1804.04235), Algorithms 4 and 5.
  Zhai et al., "Scaling Vision Transformers" (arXiv 2106.04560), the capped decay.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optorth._checks import check_decay, check_nonnegative, check_positive, renamed_keywords
from optorth.matrices._per_matrix import matrix_shape, statistics_leaves, to_view

_WHO = "scale_by_factored_rms"


class ScaleByFactoredRMSState(NamedTuple):
    """State of `scale_by_factored_rms`.

    Attributes:
      count: number of updates applied so far (int32).
      v_row: per factored leaf, the row statistics R of each matrix, shape ``(*batch, m)``;
        ``optax.MaskedNode()`` for unfactored leaves.
      v_col: per factored leaf, the column statistics C, shape ``(*batch, n)``.
      v: per unfactored leaf, the full second moment V (the leaf's shape).
    """

    count: chex.Array
    v_row: Any
    v_col: Any
    v: Any


def factored_decay(count, decay_rate=0.8, step_offset=0, beta2=None) -> jax.Array:
    """β̂2_t = min(beta2, 1 − t^(−decay_rate)), t = max(count + 1 − step_offset, 1).

    ``count`` counts updates already applied (0 at the first step), so β̂2 = 0 at the first
    step and at every step before ``step_offset``. Always finite (t ≥ 1).
    """
    t = jnp.maximum(
        jnp.asarray(count, jnp.float32) + 1.0 - jnp.asarray(step_offset, jnp.float32), 1.0
    )
    beta = 1.0 - t ** (-jnp.asarray(decay_rate, jnp.float32))
    if beta2 is not None:
        beta = jnp.minimum(beta, jnp.asarray(beta2, jnp.float32))
    return beta


def _factored_shapes(spec, shape, min_dim: int | None):
    """(row shape, col shape) of a leaf's factored statistics, or None if unfactored."""
    mshape = matrix_shape(spec, shape)
    if mshape is None or min(mshape[-2:]) < int(min_dim or 1):
        return None
    return mshape[:-1], mshape[:-2] + mshape[-1:]


def _init_leaf(param, spec, min_dim, stats_dtype):
    shapes = _factored_shapes(spec, jnp.shape(param), min_dim)
    if shapes is None:
        return optax.MaskedNode(), optax.MaskedNode(), jnp.zeros_like(param, stats_dtype)
    return jnp.zeros(shapes[0], stats_dtype), jnp.zeros(shapes[1], stats_dtype), optax.MaskedNode()


def _ema(old, new32, beta):
    """β·old + (1 − β)·new, computed in float32."""
    return beta * old.astype(jnp.float32) + (1.0 - beta) * new32


def _update_factored(g, spec, v_row, v_col, beta, eps1):
    view, back = to_view(g, spec)
    chex.assert_shape(v_row, view.shape[:-1])
    g32 = view.astype(jnp.float32)
    # Saturate |g| where the row/column means of G² would overflow float32 (inf/inf = NaN in
    # V̂ below): |g| ≤ sqrt(max/(2·max(m, n))) ≈ 1e18 here; ordinary gradients are untouched.
    limit = math.sqrt(float(jnp.finfo(jnp.float32).max) / (2 * max(*view.shape[-2:], 1)))
    g2 = jnp.square(jnp.clip(g32, -limit, limit)) + eps1
    row32 = _ema(v_row, jnp.mean(g2, axis=-1), beta)
    col32 = _ema(v_col, jnp.mean(g2, axis=-2), beta)
    row_factor = jax.lax.rsqrt(row32 / jnp.mean(row32, axis=-1, keepdims=True))
    u = g32 * row_factor[..., :, None] * jax.lax.rsqrt(col32)[..., None, :]
    return back(u).astype(g.dtype), row32.astype(v_row.dtype), col32.astype(v_col.dtype)


def _update_full(g, v, beta, eps1):
    g32 = g.astype(jnp.float32)
    v32 = _ema(v, jnp.minimum(jnp.square(g32) + eps1, jnp.finfo(jnp.float32).max), beta)
    return (g32 * jax.lax.rsqrt(v32)).astype(g.dtype), v32.astype(v.dtype)


def _check_hparams(decay_rate, min_dim_size_to_factor):
    if isinstance(decay_rate, Real) and decay_rate < 0:
        raise ValueError(
            f"{_WHO}: decay_rate={decay_rate} must be >= 0 (β̂2_t = 1 − t^(−decay_rate); the "
            f"paper uses 0.8)."
        )
    if min_dim_size_to_factor is not None and not isinstance(min_dim_size_to_factor, Integral):
        raise ValueError(
            f"{_WHO}: min_dim_size_to_factor={min_dim_size_to_factor!r} must be a Python int or "
            f"None; under optax.inject_hyperparams list it in static_args."
        )


@renamed_keywords("scale_by_factored_rms", max_decay="beta2")
def scale_by_factored_rms(
    *,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    eps: float = 1e-30,
    specs: Any = None,
    min_dim_size_to_factor: int | None = None,
    beta2: float | None = None,
    stats_dtype: Any = "float32",
) -> optax.GradientTransformation:
    """Scales updates by Adafactor's factored estimate of the gradient RMS, per matrix.

    Memory: ``m + n`` statistics per m × n matrix (times the batch size of stacked leaves);
    unfactored leaves keep one statistic per element.

    Args:
      decay_rate: c in β̂2_t = 1 − t^(−c) (paper: 0.8).
      step_offset: the step at which the decay schedule restarts (fine-tuning); steps before
        it use β̂2 = 0. Never produces non-finite values.
      eps: ε1 added to G² (paper: 1e-30).
      specs: which matrices each leaf holds, read by ``optorth.matrices.resolve_specs``:
        ``None`` (``optorth.route``), a pytree (or prefix) of ``optorth.MatrixSpec`` /
        ``"fallback"`` / ``None``, or a callable ``tree -> such a pytree``. A ``MatrixSpec``
        factors the two axes of each of its matrices; a ``"fallback"`` leaf of rank ≥ 2 is
        factored over its last two axes (leading axes are batch axes), so
        ``specs="fallback"`` is Adafactor's convention for every leaf. Scalars and vectors
        are never factored. Complex leaves are refused.
      min_dim_size_to_factor: factor a matrix only if min(m, n) is at least this; ``None``
        factors every matrix (the paper).
      beta2: optional cap on β̂2_t (formerly ``max_decay=``, still accepted with a
        ``DeprecationWarning``).
      stats_dtype: dtype of R, C and V (default float32, whatever the parameter dtype).

    Returns:
      An ``optax.GradientTransformation``; ``update(updates, state, params=None)`` returns
      updates in the dtype of the incoming updates.

    Example:
      >>> import jax.numpy as jnp, optorth
      >>> tx = optorth.scale_by_factored_rms()
      >>> state = tx.init({"w": jnp.zeros((4, 8)), "b": jnp.zeros(8)})
      >>> state.v_row["w"].shape, state.v_col["w"].shape, state.v["b"].shape
      ((1, 4), (1, 8), (8,))
      >>> stacked = optorth.scale_by_factored_rms(specs="fallback")  # last two axes
      >>> stacked.init({"layers": jnp.zeros((3, 4, 8))}).v_row["layers"].shape
      (3, 4)

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost"
      (arXiv 1804.04235).
    """
    _check_hparams(decay_rate, min_dim_size_to_factor)
    check_positive(_WHO, "eps", eps)
    check_nonnegative(_WHO, "step_offset", step_offset)
    if beta2 is not None:
        check_decay(_WHO, "beta2", beta2)
    stats_dtype = jnp.dtype(stats_dtype)

    def init_fn(params):
        leaves, treedef, specs_, _ = statistics_leaves(params, specs, who=_WHO)
        stats = [
            _init_leaf(p, s, min_dim_size_to_factor, stats_dtype)
            for p, s in zip(leaves, specs_, strict=True)
        ]
        rows, cols, fulls = zip(*stats, strict=True) if stats else ((), (), ())
        return ScaleByFactoredRMSState(
            count=jnp.zeros([], jnp.int32),
            v_row=treedef.unflatten(rows),
            v_col=treedef.unflatten(cols),
            v=treedef.unflatten(fulls),
        )

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef, specs_, _ = statistics_leaves(updates, specs, who=_WHO)
        rows = treedef.flatten_up_to(state.v_row)
        cols = treedef.flatten_up_to(state.v_col)
        fulls = treedef.flatten_up_to(state.v)
        beta = factored_decay(state.count, decay_rate, step_offset, beta2)
        eps1 = jnp.asarray(eps, jnp.float32)
        out_u, out_r, out_c, out_v = [], [], [], []
        for g, s, r, c, v in zip(leaves, specs_, rows, cols, fulls, strict=True):
            if isinstance(v, optax.MaskedNode):
                u, r, c = _update_factored(g, s, r, c, beta, eps1)
            else:
                u, v = _update_full(g, v, beta, eps1)
            out_u.append(u)
            out_r.append(r)
            out_c.append(c)
            out_v.append(v)
        new_state = ScaleByFactoredRMSState(
            count=optax.safe_increment(state.count),
            v_row=treedef.unflatten(out_r),
            v_col=treedef.unflatten(out_c),
            v=treedef.unflatten(out_v),
        )
        return treedef.unflatten(out_u), new_state

    return optax.GradientTransformation(init_fn, update_fn)
