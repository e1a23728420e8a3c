"""Per-matrix RMS blocks: update clipping and the relative (parameter-scale) step size.

Adafactor (Shazeer & Stern 2018, arXiv 1804.04235, section 6 and 8) defines both per weight
matrix:

    Û_t = U_t / max(1, RMS(U_t) / d)                 (update clipping)
    α_t = max(ε2, RMS(X_{t−1})) · ρ_t                 (relative step size)

``optax.clip_by_block_rms`` and ``optax.scale_by_param_block_rms`` take the RMS of the whole
leaf. That is the same on a single matrix, but on a stacked ``(L, m, n)`` leaf or a conv
kernel it couples the L matrices: one matrix with a large update shrinks the updates of all
the others (shown in ``tests/test_adafactor.py``). The blocks here take the RMS of each matrix
of the leaf's matrix view (its ``MatrixSpec``, or for a ``"fallback"`` leaf its last two
axes); scalars and vectors are one block each, as in optax.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from optorth._checks import check_positive
from optorth.matrices._per_matrix import leaf_rms, statistics_leaves


def clip_by_rms(threshold: float = 1.0, *, specs: Any = None) -> optax.GradientTransformation:
    """Clips each matrix of each update leaf to RMS at most ``threshold``.

    Û = U / max(1, RMS(U) / d), with RMS taken per matrix (per batch element of stacked or
    convolutional leaves); vectors and scalars are one block each.

    Args:
      threshold: d, the largest RMS an update matrix keeps (Adafactor: 1.0).
      specs: read by ``optorth.matrices.resolve_specs``: ``None`` (``optorth.route``), a
        pytree (or prefix) of ``optorth.MatrixSpec`` / ``"fallback"`` / ``None``, or a callable
        ``tree -> such a pytree``. A ``"fallback"`` leaf of rank ≥ 2 is a batch of matrices
        over its last two axes (``specs="fallback"``: Adafactor's convention for every leaf).

    Returns:
      A stateless ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp, optorth
      >>> tx = optorth.clip_by_rms(1.0, specs="fallback")
      >>> u = {"layers": jnp.stack([jnp.full((2, 3), 10.0), jnp.full((2, 3), 0.5)])}
      >>> out, _ = tx.update(u, tx.init(u))
      >>> out["layers"][:, 0, 0].tolist()    # the loud matrix is clipped, not the quiet one
      [1.0, 0.5]

    References:
      Shazeer & Stern, "Adafactor" (arXiv 1804.04235), section 6.
    """
    check_positive("clip_by_rms", "threshold", threshold)

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef, specs_, _ = statistics_leaves(updates, specs, who="clip_by_rms")
        d = jnp.asarray(threshold, jnp.float32)
        out = [
            (u.astype(jnp.float32) / jnp.maximum(1.0, leaf_rms(u, s) / d)).astype(u.dtype)
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
      specs: as in `clip_by_rms`.

    Returns:
      A stateless ``optax.GradientTransformation``; ``update`` requires ``params``.

    Example:
      >>> import jax.numpy as jnp, optorth
      >>> tx = optorth.scale_by_param_rms(1e-3)
      >>> params = {"w": jnp.full((2, 3), 4.0), "b": jnp.zeros(3)}
      >>> out, _ = tx.update({"w": jnp.ones((2, 3)), "b": jnp.ones(3)}, None, params)
      >>> float(out["w"][0, 0]), float(out["b"][0])
      (4.0, 0.001)

    References:
      Shazeer & Stern, "Adafactor" (arXiv 1804.04235), section 8.
    """
    check_positive("scale_by_param_rms", "min_scale", min_scale)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "scale_by_param_rms needs the parameters: call update(updates, state, params)."
            )
        leaves, treedef, specs_, _ = statistics_leaves(updates, specs,
                                                          who="scale_by_param_rms")
        p_leaves = treedef.flatten_up_to(params)
        eps2 = jnp.asarray(min_scale, jnp.float32)
        out = [
            (u.astype(jnp.float32) * jnp.maximum(eps2, leaf_rms(p, s))).astype(u.dtype)
            for u, p, s in zip(leaves, p_leaves, specs_, strict=True)
        ]
        return treedef.unflatten(out), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
