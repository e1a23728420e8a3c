"""The update-scale block: each matrix times a factor of its shape. See `scale_by_shape`."""

from __future__ import annotations

import optax

from optorth.matrices import Specs, map_matrices, resolve_specs
from optorth.norms._shape_scale import ShapeScale, as_shape_scale


def scale_by_shape(scale: ShapeScale | str = "keller", *,
                   specs: Specs = None) -> optax.GradientTransformation:
    """Scales each matrix by ``scale.factor(fan_in, fan_out)``, per matrix.

    Conventions (`optorth.norms.ShapeScale`): ``"keller"`` sqrt(max(1, n/m)) (Muon
    reference), ``"consistent_rms"`` rms·sqrt(max(m, n)) (Moonlight; AdamW's learning rate
    transfers), ``"spectral"`` sqrt(n/m); m is the fan-in, n the fan-out.

    Args:
      scale: a `optorth.norms.ShapeScale` or a convention name.
      specs: how leaves become matrices (``optorth.matrices.resolve_specs``); leaves routed
        to the fallback pass through unchanged.

    Example:
      >>> import optorth, jax.numpy as jnp
      >>> tx = optorth.scale_by_shape(optorth.norms.ShapeScale("consistent_rms", rms=0.2))
      >>> updates, _ = tx.update({"w": jnp.ones((4, 16))}, tx.init(None))
      >>> float(updates["w"][0, 0])
      0.8

    References:
      Liu et al., "Muon is Scalable for LLM Training" (arXiv 2502.16982).
      Yang, Simon & Bernstein, "A Spectral Condition for Feature Learning" (arXiv 2310.17813).
    """
    scale = as_shape_scale(scale)
    if scale is None:
        raise ValueError("scale_by_shape: scale is None; leave the block out of the chain "
                         "instead, or pass 'keller', 'consistent_rms' or 'spectral'.")

    def apply(mats):
        if mats.size == 0:  # a zero-sized axis: nothing to scale (and no fan-in to divide by)
            return mats
        return (mats * scale.factor(mats.shape[-2], mats.shape[-1])).astype(mats.dtype)

    def update_fn(updates, state, params=None):
        del params
        specs_tree = resolve_specs(specs, updates, who="scale_by_shape")
        return map_matrices(apply, updates, specs_tree, distribute=False), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
