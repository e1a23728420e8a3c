"""ROOT's outlier split, per matrix. See `soft_threshold`."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from optorth._checks import check_fraction
from optorth.matrices import Specs, map_matrices, resolve_specs


def clip_at_quantile(mats, quantile):
    """clip(M, −ε, ε) with ε the ``quantile`` of |M| per matrix (``mats``: ``(B, m, n)``)."""
    if mats.size == 0:  # a zero-sized axis: no entries, no quantile
        return mats
    f32 = jnp.promote_types(mats.dtype, jnp.float32)
    flat = jnp.abs(mats.astype(f32)).reshape(mats.shape[:-2] + (-1,))
    threshold = jnp.quantile(flat, quantile, axis=-1)[..., None, None]
    return jnp.clip(mats.astype(f32), -threshold, threshold).astype(mats.dtype)


def soft_threshold(quantile: float = 0.9, *, specs: Specs = None
                   ) -> optax.GradientTransformation:
    """ROOT's outlier split: keeps the clipped base B = clip(M, −ε, ε) of each matrix.

    ε is the ``quantile`` of |M| per matrix. The outliers O = sign(M)·max(|M| − ε, 0) (the
    soft-thresholding of M, the proximal map of the ℓ1 norm) are dropped, so M = B + O and only
    B goes on to the orthogonalization.

    Args:
      quantile: in [0, 1]; 1 keeps every entry (no clipping).
      specs: how leaves become matrices (``optorth.matrices.resolve_specs``).

    Example:
      >>> import optorth, jax.numpy as jnp
      >>> tx = optorth.soft_threshold(0.5)
      >>> updates, _ = tx.update({"w": jnp.array([[1.0, -2.0, 3.0, -4.0]])}, tx.init(None))
      >>> updates["w"].tolist()
      [[1.0, -2.0, 2.5, -2.5]]

    References:
      "ROOT: Robust Orthogonalized Optimizer for Neural Network Training" (arXiv 2511.20626).
    """
    check_fraction("soft_threshold", "quantile", quantile)

    def update_fn(updates, state, params=None):
        del params
        # A quantile sorts each whole matrix: stack and distribute (see
        # optorth.matrices); it and the clip commute with transposition.
        specs_tree = resolve_specs(specs, updates, who="soft_threshold")
        return map_matrices(lambda m: clip_at_quantile(m, quantile), updates, specs_tree,
                            transpose_tall=True), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
