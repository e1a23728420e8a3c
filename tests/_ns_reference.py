"""Float64 NumPy ground truth for the Newton–Schulz tests (nothing here calls optorth).

A Newton–Schulz schedule maps every singular value through the composed odd quintics
φ(σ) = p_T(…p_1(σ)) with p_t(σ) = a_t σ + b_t σ³ + c_t σ⁵ and keeps the singular vectors,
so for an input X = U diag(s) Vᵀ and a normalization X ↦ X / c the exact output is
U diag(φ(s / c)) Vᵀ. These helpers build inputs with known SVDs and evaluate that map.
"""

from __future__ import annotations

import numpy as np

#: σ below sigma_min·σ_max are outside every schedule's design interval (Amsel et al., "The
#: Polar Express", arXiv 2505.16932, §2: the tables are built for σ ∈ [1e-3, 1]).
SIGMA_MIN = 1e-3


def orthonormal(rng, rows: int, cols: int) -> np.ndarray:
    """A Haar-random (rows, cols) matrix with orthonormal columns (cols ≤ rows)."""
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


def spectrum(kind: str, k: int, rng, m: int, n: int) -> np.ndarray:
    """k descending singular values of a known kind, largest 1.

    ``gaussian``: those of an m×n standard normal matrix; ``lowrank``: 4 values in
    [0.5, 1] plus noise at 1e-3; ``log``: log-spaced over [1e-6, 1]; ``heavy``: those of a
    matrix with Student-t (ν = 1.5) entries (a few dominant values, a long tail).
    """
    if kind == "gaussian":
        s = np.linalg.svd(rng.standard_normal((m, n)), compute_uv=False)
    elif kind == "lowrank":
        s = np.concatenate([np.linspace(1.0, 0.5, 4), 1e-3 * rng.uniform(0.2, 1.0, k - 4)])
    elif kind == "log":
        s = np.logspace(0, -6, k)
    elif kind == "heavy":
        s = np.linalg.svd(rng.standard_t(1.5, (m, n)), compute_uv=False)
    else:
        raise ValueError(kind)
    s = np.sort(s)[::-1][:k]
    return s / s[0]


SPECTRA = ("gaussian", "lowrank", "log", "heavy")


def with_spectra(rng, m: int, n: int, kinds=SPECTRA):
    """A batch X (len(kinds), m, n) = U diag(s) Vᵀ with random U, V; returns (X, U, S, V)."""
    k = min(m, n)
    us = np.stack([orthonormal(rng, m, k) for _ in kinds])
    vs = np.stack([orthonormal(rng, n, k) for _ in kinds])
    ss = np.stack([spectrum(kind, k, rng, m, n) for kind in kinds])
    return np.einsum("bik,bk,bjk->bij", us, ss, vs), us, ss, vs


def compose(rows, sigma):
    """φ(σ) for a (T, 3) table, elementwise, in float64."""
    x = np.asarray(sigma, dtype=np.float64)
    for a, b, c in np.asarray(rows, dtype=np.float64):
        x = a * x + b * x**3 + c * x**5
    return x


def band(rows, lo: float, hi: float) -> tuple[float, float]:
    """(min, max) of φ over [lo, hi] on a dense grid (log- and linearly spaced)."""
    grid = np.concatenate([np.geomspace(lo, hi, 20001), np.linspace(lo, hi, 20001)])
    values = compose(rows, grid)
    return float(values.min()), float(values.max())


def schatten(s, p: float) -> np.ndarray:
    """‖X‖_Sp = (Σ σᵖ)^(1/p) along the last axis."""
    return np.sum(np.asarray(s, np.float64) ** p, axis=-1) ** (1.0 / p)


def normalized(s, precondition: str, safety: float) -> np.ndarray:
    """σ / (norm · safety) for the scalar normalizations ("frobenius", "schatten")."""
    p = {"frobenius": 2.0, "schatten": 4.0}[precondition]
    return s / (schatten(s, p)[..., None] * safety)


def aol(x, eps: float = 0.0) -> np.ndarray:
    """Turbo-Muon's AOL rescaling diag(d) X, d_i = (Σ_j |XXᵀ|_ij)^-½ (Boissin et al. 2025)."""
    x = np.asarray(x, np.float64)
    a = x @ np.swapaxes(x, -1, -2)
    return x / np.sqrt(np.maximum(np.abs(a).sum(-1, keepdims=True), eps))


def apply_map(u, s_hat, v, rows) -> np.ndarray:
    """U diag(φ(ŝ)) Vᵀ: the exact Newton–Schulz output on normalized singular values ŝ."""
    return np.einsum("...ik,...k,...jk->...ij", u, compose(rows, s_hat), v)


def svd_map(x, rows, scale=1.0) -> np.ndarray:
    """The exact output for an arbitrary matrix x (normalization already applied) via SVD."""
    u, s, vt = np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)
    return np.einsum("...ik,...k,...kj->...ij", u, compose(rows, s / scale), vt)


def diag_in_basis(out, u, v) -> np.ndarray:
    """σ_i of the output read in the input's singular basis: u_iᵀ O v_i, shape (..., k)."""
    return np.einsum("...ik,...ij,...jk->...k", u, np.asarray(out, np.float64), v)


def spectral_norm(x) -> np.ndarray:
    """Largest singular value of each matrix."""
    return np.linalg.norm(np.asarray(x, np.float64), ord=2, axis=(-2, -1))


def jordan_newton_schulz(g, steps: int = 5) -> np.ndarray:
    """Keller Jordan's quintic Newton–Schulz of one matrix in float64, written out.

    The reference's own loop (KellerJordan/Muon): Frobenius normalization with ε = 1e-7, tall
    inputs transposed, then ``steps`` × X ← aX + (bA + cA²)X with A = XXᵀ.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x = np.asarray(g, dtype=np.float64)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x
