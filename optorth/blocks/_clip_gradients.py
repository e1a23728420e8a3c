"""Gradient entries clipped before an optimizer whose second moment squares them.

Adam-style second moments hold g², which overflows float32 / bfloat16 (max ≈ 3.4e38) for
|g| ≳ 1.8e19; v = inf then gives zero updates for good (a silent, permanent freeze of the
leaf). `clip_gradients` clips every entry to ±`MAX_GRADIENT` = 2⁶⁰ (≈1.2e18)
first, where g² is still finite; below the bound nothing changes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from optorth.matrices._paths import dtype_of

#: The largest gradient entry passed on (2⁶⁰ ≈ 1.2e18; its square is finite in float32).
MAX_GRADIENT = 2.0**60


def clip_gradients(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner`` with every gradient entry clipped to ±`MAX_GRADIENT` (same
    state as ``inner``, so earlier checkpoints restore into it)."""

    def update_fn(updates, state, params=None):
        clipped = jax.tree.map(
            lambda g: jnp.clip(g, -MAX_GRADIENT, MAX_GRADIENT)
            if jnp.issubdtype(dtype_of(g), jnp.floating) else g, updates)
        return inner.update(clipped, state, params)

    return optax.GradientTransformation(inner.init, update_fn)
