"""Skew-symmetric generators and the Cayley / Cayley–Neumann maps to (near-)orthogonal matrices.

The Cayley transform ``R = (I + Q)(I − Q)^{-1}`` maps a skew-symmetric ``Q`` to a rotation.
OFTv2 replaces the inverse by the truncated Neumann series ``Σ_{i≤k} Q^i`` (Qiu et al.,
"Orthogonal Finetuning Made Scalable", arXiv 2506.19847), which converges when ``‖Q‖ < 1``.

How far the truncation is from orthogonal: since ``(I − Q) Σ_{i≤k} Q^i = I − Q^{k+1}``,
``R_k = (I + Q) Σ_{i≤k} Q^i = R (I − Q^{k+1})`` with ``R`` the exact (orthogonal) Cayley
transform. Everything here is normal and commutes, so for the eigenvalues ``iλ`` of ``Q``

* ``‖R − R_k‖₂ = ‖Q‖₂^{k+1}`` exactly, and
* the singular values of ``R_k`` are ``|1 − (iλ)^{k+1}|``, so
  ``‖R_kᵀR_k − I‖₂ = max_λ | |1 − (iλ)^{k+1}|² − 1 | ≤ 2q^{k+1} + q^{2(k+1)}``, ``q = ‖Q‖₂``.

For ``q ≤ 1`` and ``t = q^{k+1}`` the deviation is ``t²`` when ``k`` is even (``Q^{k+1}`` is
skew, so the first-order error vanishes), ``2t + t²`` (the bound, attained) when
``k ≡ 1 (mod 4)`` and ``2t − t²`` when ``k ≡ 3 (mod 4)``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

_HIGHEST = lax.Precision.HIGHEST


def packed_size(size: int) -> int:
    """Number of strictly-upper-triangular entries of a ``size × size`` matrix."""
    return size * (size - 1) // 2


def skew_from_packed(packed, size: int):
    """The skew-symmetric ``(..., size, size)`` matrices whose strictly upper triangles,
    read row by row, are ``packed`` (``(..., size (size − 1) / 2)``)."""
    rows, cols = np.triu_indices(size, k=1)
    upper = jnp.zeros(packed.shape[:-1] + (size, size), packed.dtype)
    upper = upper.at[..., rows, cols].set(packed)
    return upper - jnp.swapaxes(upper, -1, -2)


def cayley_neumann(skew, terms: int):
    """``(I + Q)(I + Q + … + Q^terms)`` for a batch of square ``Q`` (Horner's rule).

    Exactly the identity when ``Q = 0``.
    """
    eye = jnp.eye(skew.shape[-1], dtype=skew.dtype)
    series = jnp.broadcast_to(eye, skew.shape)
    for _ in range(terms):
        series = eye + jnp.matmul(skew, series, precision=_HIGHEST)
    return series + jnp.matmul(skew, series, precision=_HIGHEST)


def cayley_exact(skew):
    """The Cayley transform ``(I + Q)(I − Q)^{-1} = (I − Q)^{-1}(I + Q)`` by a linear solve."""
    eye = jnp.eye(skew.shape[-1], dtype=skew.dtype)
    return jnp.linalg.solve(eye - skew, eye + skew)
