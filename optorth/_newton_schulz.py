"""The Newton–Schulz orthogonalization engine on batches of matrices ``(..., m, n)``.

One quintic step on a wide matrix ``X`` (m ≤ n)::

    A = X Xᵀ;  B = b·A + c·A²;  X ← a·X + B·X

maps every singular value σ to ``aσ + bσ³ + cσ⁵`` and keeps the singular vectors, so a
schedule of steps drives the spectrum towards 1 and ``X`` towards its polar factor U Vᵀ.

References:
  Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024).
  Amsel et al., "The Polar Express" (arXiv 2505.16932), appendix F (Gram iteration).
  Boissin et al., "Turbo-Muon" (arXiv 2512.04632) for AOL preconditioning.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from optorth._presets import resolve_schedule
from optorth._schedule import PRECONDITIONS, Schedule

METHODS = ("standard", "gram", "auto")
#: ``method="auto"`` uses the Gram iteration when n / m reaches this aspect ratio
#: (wide orientation). Measured on a 2-core CPU by ``benchmarks/orthogonalize.py``.
GRAM_CROSSOVER = 2.0
_POWER_ITERS = 16
_SPECTRAL_MARGIN = 1.02


def _mT(x):
    return jnp.swapaxes(x, -1, -2)


def _check_input(x) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"newton_schulz expects an array of shape (..., m, n) with rank >= 2; got shape "
            f"{x.shape}. Reshape vectors to (1, n) or route them to a non-matrix optimizer."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"newton_schulz expects a floating-point array; got dtype {x.dtype} for shape "
            f"{x.shape}. Cast with x.astype(jnp.float32)."
        )
    return x


def _resolve(schedule, shape, steps, safety, precondition) -> tuple[Any, float, str]:
    """Returns the (T, 3) coefficients, the safety factor and the preconditioning."""
    if isinstance(schedule, (str, Schedule)):
        sched = resolve_schedule(schedule, shape=shape)
        coeffs = jnp.asarray(sched.rows(steps), dtype=jnp.float32)
        safety = sched.safety if safety is None else safety
        precondition = sched.precondition if precondition is None else precondition
    else:
        coeffs = jnp.asarray(schedule)
        if coeffs.ndim != 2 or coeffs.shape[-1] != 3:
            raise ValueError(
                f"A raw coefficient table must have shape (T, 3); got {coeffs.shape}. Pass a "
                f"preset name such as 'jordan', an optorth.Schedule, or a (T, 3) array."
            )
        if steps is not None and steps != coeffs.shape[0]:
            raise ValueError(
                f"steps={steps} but the raw table has {coeffs.shape[0]} rows; a raw table runs "
                f"exactly its own rows. Wrap it in optorth.Schedule(..., extend='repeat_last')."
            )
        safety = 1.0 if safety is None else safety
        precondition = "frobenius" if precondition is None else precondition
    if precondition not in PRECONDITIONS:
        raise ValueError(f"precondition={precondition!r}; expected one of {PRECONDITIONS}.")
    return coeffs, float(safety), precondition


def _max_abs_prescale(x):
    """Divides each matrix by its largest |entry| so norms neither overflow nor underflow."""
    peak = jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True)
    return x / jnp.where(peak > 0, peak, 1.0)


def _gram(x):
    return x @ _mT(x)


def _frobenius(x, safety, eps):
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True))
    return x / (norm * safety + eps), None


def _schatten(x, safety, eps):
    """Schatten-4 norm ‖X‖_S4 = ‖XXᵀ‖_F^½ ≥ σ_max; the Gram matrix is reused."""
    a = _gram(x)
    s4 = jnp.sqrt(jnp.sqrt(jnp.sum(jnp.square(a), axis=(-2, -1), keepdims=True)))
    scale = 1.0 / (s4 * safety + eps)
    return x * scale, a * jnp.square(scale)


def _spectral(x, safety, eps):
    """σ_max estimated by power iteration on A = XXᵀ (capped by the Schatten-4 bound)."""
    a = _gram(x)
    m = a.shape[-1]
    v = jnp.broadcast_to(jnp.cos(jnp.arange(m, dtype=a.dtype) * 1.3 + 0.1), a.shape[:-1])

    def body(_, v):
        w = jnp.einsum("...ij,...j->...i", a, v)
        return w / (jnp.linalg.norm(w, axis=-1, keepdims=True) + 1e-30)

    v = jax.lax.fori_loop(0, _POWER_ITERS, body, v)
    lam = jnp.linalg.norm(jnp.einsum("...ij,...j->...i", a, v), axis=-1)[..., None, None]
    s4 = jnp.sqrt(jnp.sqrt(jnp.sum(jnp.square(a), axis=(-2, -1), keepdims=True)))
    sigma = jnp.minimum(jnp.sqrt(lam) * _SPECTRAL_MARGIN, s4)
    scale = 1.0 / (sigma * safety + eps)
    return x * scale, a * jnp.square(scale)


def _aol(x, safety, eps):
    """AOL: X ← diag(s) X with s_i = (Σ_j |A_ij|)^-½, reusing A = XXᵀ (Turbo-Muon)."""
    a = _gram(x)
    s = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(a), axis=-1, keepdims=True), eps))
    s = s / safety
    return x * s, a * s * _mT(s)


_PRECONDITIONERS = {
    "frobenius": _frobenius,
    "schatten": _schatten,
    "spectral": _spectral,
    "aol": _aol,
}


def _quintic(x, row, a_mat=None):
    """One step X ← aX + (bA + cA²)X; ``a_mat`` reuses a precomputed A = XXᵀ."""
    a_mat = _gram(x) if a_mat is None else a_mat
    b_mat = row[1] * a_mat + row[2] * (a_mat @ a_mat)
    return row[0] * x + b_mat @ x


def _standard(x, coeffs, a_mat):
    if a_mat is not None:
        x, coeffs = _quintic(x, coeffs[0], a_mat), coeffs[1:]
    if coeffs.shape[0] == 0:
        return x
    x, _ = jax.lax.scan(lambda x, row: (_quintic(x, row), None), x, coeffs)
    return x


def _gram_polynomial(r, row):
    """P = aI + bR + cR² for a Gram matrix R (so that X_new = P X)."""
    eye = jnp.eye(r.shape[-1], dtype=r.dtype)
    return row[0] * eye + row[1] * r + row[2] * (r @ r)


def _gram_chunk(x, coeffs, r):
    """Runs ``coeffs`` on the m×m Gram matrix only, then applies X ← Q X once.

    With P_t = a_t I + b_t R_t + c_t R_t²: Q ← P_t Q and R ← P_t R_t P_t = P_t² R_t (P_t is a
    polynomial in R_t, so they commute). The last step needs no new R.
    """
    r = _gram(x) if r is None else r
    q = _gram_polynomial(r, coeffs[0])
    if coeffs.shape[0] == 1:
        return q @ x

    def body(carry, row):
        r, q = carry
        p = _gram_polynomial(r, row)
        return (p @ (p @ r), p @ q), None

    r = q @ (q @ r)
    (r, q), _ = jax.lax.scan(body, (r, q), coeffs[1:-1])
    q = _gram_polynomial(r, coeffs[-1]) @ q
    return q @ x


def _restart_points(steps: int, restart: int | None) -> list[int]:
    if not restart or restart >= steps:
        return [0, steps]
    return list(range(0, steps, restart)) + [steps]


def _gram_iteration(x, coeffs, a_mat, restart):
    bounds = _restart_points(coeffs.shape[0], restart)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        x = _gram_chunk(x, coeffs[start:stop], a_mat if start == 0 else None)
    return x


def choose_method(shape, method: str = "auto") -> str:
    """The iteration ``newton_schulz`` runs for a matrix shape: ``"standard"`` or ``"gram"``."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; expected one of {METHODS}.")
    if method != "auto":
        return method
    m, n = sorted(shape[-2:])
    return "gram" if m > 1 and n >= GRAM_CROSSOVER * m else "standard"


def newton_schulz(
    x,
    schedule: str | Schedule | Any = "jordan",
    *,
    steps: int | None = None,
    precondition: str | None = None,
    method: str = "standard",
    dtype: Any = None,
    eps: float = 1e-7,
    safety: float | None = None,
    restart: int | None = None,
) -> jax.Array:
    """Approximates the polar factor U Vᵀ of every matrix in ``x`` by Newton–Schulz.

    Each matrix ``X = U S Vᵀ`` of ``x`` (shape ``(..., m, n)``; leading axes are a batch)
    becomes ``U φ(S) Vᵀ`` where φ is the composition of the schedule's odd quintics. Tall
    matrices are transposed to the wide orientation internally. The input is first divided
    by its largest entry and then normalized (in float32) so that σ_max ≤ 1, which keeps
    inputs of magnitude 1e-30 or 1e30 finite; a zero matrix maps to zeros.

    Args:
      x: floating array of shape ``(..., m, n)``.
      schedule: a preset name (``"jordan"``, ``"you"``, ``"you6"``, ``"polar_express"``,
        ``"polar_express5"``, ``"turbo"``, ``"root"`` (looked up by shape), ...), an
        :class:`optorth.Schedule`, or a raw ``(T, 3)`` array (possibly traced, so the
        result is differentiable with respect to the coefficients).
      steps: number of steps; ``None`` runs the schedule's own length. Other counts follow
        the schedule's ``extend`` rule and raise where it defines none.
      precondition: ``"frobenius"`` (divide by ‖X‖_F), ``"schatten"`` (by ‖X‖_S4, reusing
        XXᵀ), ``"spectral"`` (by a power-iteration estimate of ‖X‖₂, reusing XXᵀ) or
        ``"aol"`` (Turbo-Muon's row scaling, reusing XXᵀ). ``None`` uses the schedule's own.
      method: ``"standard"`` (the plain quintic iteration), ``"gram"`` (iterate on the m×m
        Gram matrix and apply the accumulated polynomial once; faster for n ≫ m) or
        ``"auto"`` (Gram when n ≥ ``GRAM_CROSSOVER``·m).
      dtype: compute dtype of the iteration (e.g. ``jnp.bfloat16``); normalization is
        always done in float32. ``None`` uses the input's dtype promoted to float32.
      eps: added to the normalizer.
      safety: overrides the schedule's normalization safety factor.
      restart: for ``method="gram"``, recompute X and its Gram matrix every ``restart``
        steps; ``None`` restarts every 2 steps in 16-bit compute dtypes, never otherwise.

    Returns:
      An array with the shape and dtype of ``x``.
    """
    x = _check_input(x)
    shape, in_dtype = x.shape, x.dtype
    coeffs, safety, precondition = _resolve(schedule, shape[-2:], steps, safety, precondition)
    norm_dtype = jnp.promote_types(in_dtype, jnp.float32)
    compute_dtype = jnp.dtype(norm_dtype if dtype is None else dtype)
    method = choose_method(shape, method)
    transposed = shape[-2] > shape[-1]
    y = _mT(x) if transposed else x
    y, a_mat = _PRECONDITIONERS[precondition](_max_abs_prescale(y.astype(norm_dtype)), safety, eps)
    y = y.astype(compute_dtype)
    a_mat = None if a_mat is None else a_mat.astype(compute_dtype)
    coeffs = coeffs.astype(compute_dtype)
    if method == "gram" and min(shape[-2:]) > 1:
        if restart is None and compute_dtype.itemsize <= 2:
            restart = 2
        y = _gram_iteration(y, coeffs, a_mat, restart)
    else:
        y = _standard(y, coeffs, a_mat)
    y = _mT(y) if transposed else y
    chex.assert_shape(y, shape)
    return y.astype(in_dtype)


def polar(x) -> jax.Array:
    """The exact polar factor U Vᵀ of every matrix in ``x`` (shape ``(..., m, n)``) via SVD.

    The reference for tests and benchmarks. Computed in at least float32; returns the
    input's dtype. For rank-deficient matrices the factor is not unique (any completion of
    the null space is valid); the SVD's choice is returned.
    """
    x = _check_input(x)
    u, _, vt = jnp.linalg.svd(x.astype(jnp.promote_types(x.dtype, jnp.float32)),
                              full_matrices=False)
    return (u @ vt).astype(x.dtype)


def polar_numpy(x) -> np.ndarray:
    """Float64 NumPy polar factor U Vᵀ of every matrix in ``x``: ground truth for tests."""
    u, _, vt = np.linalg.svd(np.asarray(x, dtype=np.float64), full_matrices=False)
    return u @ vt
