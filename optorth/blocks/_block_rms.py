"""Per-matrix RMS blocks: update clipping and the relative (parameter-scale) step size.

Adafactor (Shazeer & Stern 2018, arXiv 1804.04235, section 6 and 8) defines both per weight
matrix::

    Û_t = U_t / max(1, RMS(U_t) / d)                 (update clipping)
    α_t = max(ε2, RMS(X_{t−1})) · ρ_t                 (relative step size)

``optax.clip_by_block_rms`` and ``optax.scale_by_param_block_rms`` take the RMS of the whole
leaf. That is the same on a single matrix, but on a stacked ``(L, m, n)`` leaf or a conv
kernel it couples the L matrices: one matrix with a large update shrinks the updates of all
the others (shown in ``tests/test_adafactor.py``). The blocks here take the RMS of each matrix
of the leaf's matrix view (``MatrixSpec`` or, by default, the last two axes); scalars and
vectors are one block each, as in optax.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optorth.matrices import _per_matrix as pm


def clip_by_rms(threshold: float = 1.0, *, specs: Any = None) -> optax.GradientTransformation:
    """Clips each matrix of each update leaf to RMS at most ``threshold``.

    Û = U / max(1, RMS(U) / d), with RMS taken per matrix (per batch element of stacked or
    convolutional leaves); vectors and scalars are one block each.

    Args:
      threshold: d, the largest RMS an update matrix keeps (Adafactor: 1.0).
      specs: ``None`` or a pytree of ``optorth.MatrixSpec`` / ``None`` / ``"fallback"`` per
        leaf; ``None`` uses the last two axes of rank ≥ 2 leaves.

    Returns:
      A stateless ``optax.GradientTransformation``.

    References:
      Shazeer & Stern, "Adafactor" (arXiv 1804.04235), section 6.
    """

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        specs_ = pm.leaf_specs(updates, specs, who="clip_by_rms")
        d = jnp.asarray(threshold, jnp.float32)
        out = [
            (u.astype(jnp.float32) / jnp.maximum(1.0, pm.leaf_rms(u, s) / d)).astype(u.dtype)
            for u, s in zip(leaves, specs_, strict=True)
        ]
        return treedef.unflatten(out), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def scale_by_param_rms(
    min_scale: float = 1e-3, *, specs: Any = None
) -> optax.GradientTransformation:
    """Multiplies each update matrix by max(ε2, RMS(X)) of its parameter matrix.

    This is Adafactor's relative step size without ρ_t (apply ρ_t with a learning rate).

    Args:
      min_scale: ε2, the floor of the parameter scale (Adafactor: 1e-3), so that parameters
        initialized at zero still move.
      specs: as in :func:`clip_by_rms`.

    Returns:
      A stateless ``optax.GradientTransformation``; ``update`` requires ``params``.

    References:
      Shazeer & Stern, "Adafactor" (arXiv 1804.04235), section 8.
    """

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "scale_by_param_rms needs the parameters: call update(updates, state, params)."
            )
        leaves, treedef = jax.tree.flatten(updates)
        p_leaves = treedef.flatten_up_to(params)
        specs_ = pm.leaf_specs(updates, specs, who="scale_by_param_rms")
        eps2 = jnp.asarray(min_scale, jnp.float32)
        out = [
            (u.astype(jnp.float32) * jnp.maximum(eps2, pm.leaf_rms(p, s))).astype(u.dtype)
            for u, p, s in zip(leaves, p_leaves, specs_, strict=True)
        ]
        return treedef.unflatten(out), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
