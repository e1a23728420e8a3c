"""Dualizers (linear minimization oracles) and dual norms, as pure functions of matrices.

For a norm ‖·‖ on m×n matrices, the lmo (the "sharp", the dualizer) is

    lmo(M) = argmax_{‖D‖ ≤ 1} ⟨M, D⟩,   and   ⟨M, lmo(M)⟩ = ‖M‖_*   (the dual norm).

A trust-region step of radius η under ‖·‖ is X ← X − η·lmo(M) (Kovalev 2025, "Understanding
Gradient Orthogonalization for Deep Learning via Non-Euclidean Trust-Region Optimization",
arXiv 2503.12645). Every function here takes an array of shape ``(..., m, n)`` (leading axes
are a batch of matrices), works per matrix, computes in at least float32 and returns the
input dtype (dual and primal norms return float32 of shape ``(...)``). Matrices follow the
Flax layout ``y = x @ W``: rows are fan-in, columns fan-out.

| name          | primal norm ‖D‖                 | lmo(M)                     | dual ‖M‖_*        |
|---------------|---------------------------------|----------------------------|-------------------|
| spectral      | σ_max(D)                        | U Vᵀ (polar factor)        | Σ σ_i (nuclear)   |
| frobenius     | ‖D‖_F                           | M / ‖M‖_F                  | ‖M‖_F             |
| sign          | max |D_ij|  (ℓ∞)                | sign(M)                    | Σ |M_ij|  (ℓ1)    |
| row           | max_i ‖D_i,:‖₂ (ℓ1→ℓ2 operator) | each row / its ℓ2 norm     | Σ_i ‖M_i,:‖₂      |
| column        | max_j ‖D_:,j‖₂ (ℓ2→ℓ∞ operator) | each column / its ℓ2 norm  | Σ_j ‖M_:,j‖₂      |
| auon          | ‖D‖_F                           | see `lmo_auon`       | ⟨M, lmo_auon(M)⟩  |
| hybrid_auon   | ‖D‖_F                           | see `lmo_hybrid_auon`| ⟨M, lmo(M)⟩       |

AuON's direction is a feasible point of the Frobenius ball, within a factor r(M) ≥ 1 of its
maximizer M/‖M‖_F, not the lmo of a norm of its own; its "dual norm" here is the value it
attains, ⟨M, lmo_auon(M)⟩. Hybrid-AuON's Newton–Schulz step turns the direction away from M,
so it is only a feasible point of the Frobenius ball (value ≤ ‖M‖_F), not a maximizer.
"""

from __future__ import annotations

import jax.numpy as jnp

from optorth.ns._config import NewtonSchulz
from optorth.ns._engine import check_matrices, polar


def _f32(m):
    m = check_matrices(m, "optorth.norms")
    return m.astype(jnp.promote_types(m.dtype, jnp.float32))


def _peak(x):
    """max |M_ij| per matrix, shape ``(..., 1, 1)`` (1 for a zero matrix)."""
    peak = jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True, initial=0.0)
    return jnp.where(peak > 0, peak, 1.0)


def _safe_divide(x, norm):
    return x / jnp.where(norm > 0, norm, 1.0)


def _unit_scale(m):
    """M / max|M_ij| per matrix in float32 (zero stays zero), for the scale-invariant lmos:
    their norms of M then neither overflow (|M| ≳ 1e19) nor underflow (|M| ≲ 1e-19)."""
    x = _f32(m)
    return _safe_divide(x, jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True, initial=0.0))


def _inner(a, b):
    """⟨A, B⟩ per matrix, shape ``(...)``."""
    return jnp.sum(_f32(a) * _f32(b), axis=(-2, -1))


def _fro(m):
    """‖M‖_F per matrix, computed on M / max|M_ij| (no overflow at 1e30, no underflow at
    1e-30) and scaled back."""
    x = _f32(m)
    peak = _peak(x)
    return jnp.sqrt(jnp.sum(jnp.square(x / peak), axis=(-2, -1))) * peak[..., 0, 0]


# ----- spectral -------------------------------------------------------------------------------
def lmo_spectral(m, ns: NewtonSchulz | None = None, *, exact: bool = False):
    """U Vᵀ for M = U S Vᵀ: Newton–Schulz with ``ns`` (default ``NewtonSchulz()``), or the
    SVD polar factor when ``exact=True``."""
    return polar(m) if exact else (ns or NewtonSchulz()).apply(jnp.asarray(m))


def dual_norm_spectral(m):
    """The nuclear norm Σ σ_i (dual of the spectral norm), via SVD."""
    return jnp.sum(jnp.linalg.svd(_f32(m), compute_uv=False), axis=-1)


def primal_norm_spectral(m):
    """The spectral norm σ_max, via SVD."""
    return jnp.max(jnp.linalg.svd(_f32(m), compute_uv=False), axis=-1)


# ----- frobenius ------------------------------------------------------------------------------
def lmo_frobenius(m):
    """M / ‖M‖_F per matrix (zero for a zero matrix)."""
    x = _unit_scale(m)
    return _safe_divide(x, _fro(x)[..., None, None]).astype(jnp.asarray(m).dtype)


def dual_norm_frobenius(m):
    """‖M‖_F (the Frobenius norm is self-dual)."""
    return _fro(m)


primal_norm_frobenius = dual_norm_frobenius


# ----- sign (entrywise ℓ∞) --------------------------------------------------------------------
def lmo_sign(m):
    """sign(M): the lmo of the entrywise max norm (Signum's direction)."""
    return jnp.sign(check_matrices(m, "optorth.norms"))


def dual_norm_sign(m):
    """Σ |M_ij| (ℓ1, dual of entrywise ℓ∞)."""
    return jnp.sum(jnp.abs(_f32(m)), axis=(-2, -1))


def primal_norm_sign(m):
    """max |M_ij|."""
    return jnp.max(jnp.abs(_f32(m)), axis=(-2, -1))


# ----- row / column ---------------------------------------------------------------------------
def _vector_norms(m, axis):
    """Row (``axis=-1``) or column (``-2``) ℓ2 norms, computed on M / max|M_ij|."""
    x = _f32(m)
    peak = _peak(x)
    return jnp.sqrt(jnp.sum(jnp.square(x / peak), axis=axis, keepdims=True)) * peak


def lmo_row(m):
    """Each row divided by its ℓ2 norm (ℓ1→ℓ2 operator norm for ``y = x @ W``)."""
    x = _unit_scale(m)
    return _safe_divide(x, _vector_norms(x, -1)).astype(jnp.asarray(m).dtype)


def dual_norm_row(m):
    """Σ_i ‖M_i,:‖₂."""
    return jnp.sum(_vector_norms(m, -1)[..., 0], axis=-1)


def primal_norm_row(m):
    """max_i ‖M_i,:‖₂."""
    return jnp.max(_vector_norms(m, -1)[..., 0], axis=-1)


def lmo_column(m):
    """Each column divided by its ℓ2 norm (ℓ2→ℓ∞ operator norm for ``y = x @ W``)."""
    x = _unit_scale(m)
    return _safe_divide(x, _vector_norms(x, -2)).astype(jnp.asarray(m).dtype)


def dual_norm_column(m):
    """Σ_j ‖M_:,j‖₂."""
    return jnp.sum(_vector_norms(m, -2)[..., 0, :], axis=-1)


def primal_norm_column(m):
    """max_j ‖M_:,j‖₂."""
    return jnp.max(_vector_norms(m, -2)[..., 0, :], axis=-1)


# ----- AuON -----------------------------------------------------------------------------------
def lmo_auon(m, *, gamma: float = 1.0, eps: float = 1e-7):
    """AuON's direction: X = M/(‖M‖_F + eps), r = sqrt(mean(cosh²(γX))), X/(r + 1e-8).

    Faithful to Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates"
    (arXiv 2509.24320), with ``γ = 1`` as in its training script.
    Since ‖X‖_F = 1, r − 1 ≤ sinh²(γ)/(2N) for N entries (about 2e-6 for 512×512), so the cosh
    factor is numerically almost a no-op and AuON ≈ Frobenius-normalized momentum SGD.
    M is first divided by its largest |entry| (the direction is scale invariant), so ``eps``
    only guards a zero matrix and gradients of magnitude 1e-30 or 1e30 keep their direction.
    """
    x = _unit_scale(m)
    x = x / (_fro(x)[..., None, None] + eps)
    r = jnp.sqrt(jnp.mean(jnp.square(jnp.cosh(gamma * x)), axis=(-2, -1), keepdims=True))
    return (x / (r + 1e-8)).astype(jnp.asarray(m).dtype)


def dual_norm_auon(m, **options):
    """The value AuON attains, ⟨M, lmo_auon(M)⟩ = ‖M‖_F / r(M) (up to the eps terms)."""
    return _inner(m, lmo_auon(m, **options))


def lmo_hybrid_auon(m, *, gamma: float = 1.0, eps: float = 1e-7):
    """Hybrid-AuON: one Newton–Schulz step (Jordan's coefficients) then `lmo_auon`."""
    one_step = NewtonSchulz("jordan", steps=1, method="standard", eps=eps)
    return lmo_auon(one_step.apply(jnp.asarray(m)), gamma=gamma, eps=eps)


def dual_norm_hybrid_auon(m, **options):
    """⟨M, lmo_hybrid_auon(M)⟩."""
    return _inner(m, lmo_hybrid_auon(m, **options))
