"""The Newton–Schulz orthogonalization engine on batches of matrices ``(..., m, n)``.

One quintic step on a wide matrix ``X`` (m ≤ n):

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

from optorth._checks import check_choice, check_dtype, check_positive
from optorth._column_split import full_shape, max_columns, square_matmul, sum_columns
from optorth.ns._schedule import PRECONDITIONS, check_safety, check_table, matrix_shape

METHODS = ("standard", "gram", "auto")
#: ``method="auto"`` uses the Gram iteration when n / m reaches this aspect ratio (wide
#: orientation). Flops: standard 10m³ + 20m²n, Gram (restart every 3) 28m³ + 8m²n for 5 steps,
#: equal at n = 1.5m. Measured by ``benchmarks/orthogonalize.py`` (Jordan ×5, float32),
#: time(Gram) / time(standard) at n/m = 1, 1.25, 1.5, 2, 3, 4, 8: 1.15, 1.06, 1.11, 0.85,
#: 0.94, 0.60, 0.53 on the shared 2-core CPU (m = 512, jax 0.10.2); 0.96, 0.97, 0.88, 0.74,
#: 0.61 at n/m = 1, 1.5, 2, 4, 8 on an H200 (m = 1024, jax 0.11.2). Gram wins from 2 on both.
GRAM_CROSSOVER = 2.0
_POWER_ITERS = 24
_POWER_VECTORS = 8
#: ``precondition="spectral"`` divides by σ_max estimated by power iteration times this
#: margin (the estimate is a lower bound); offline and online fits normalize spectra alike.
SPECTRAL_MARGIN = 1.02
#: ``jax_default_matmul_precision`` values that keep float32 matmuls at float32 accuracy.
_FULL_F32_PRECISIONS = (
    "highest", "float32", "f32_f32_f32", "bf16_bf16_f32_x6", "bf16_bf16_f32_x9", "f64_f64_f64"
)


def check_matrices(x, who: str = "newton_schulz") -> jax.Array:
    """``x`` as a JAX array if it is a floating batch of matrices ``(..., m, n)``."""
    if isinstance(x, (str, bytes)) or x is None:
        raise ValueError(f"{who} expects a floating array of shape (..., m, n); got {x!r}.")
    try:
        x = jnp.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{who} expects a floating array of shape (..., m, n); got "
                         f"{type(x).__name__} ({err}).") from None
    if x.ndim < 2:
        raise ValueError(
            f"{who} expects an array of shape (..., m, n) with rank >= 2; got shape "
            f"{x.shape}. Reshape vectors to (1, n) or route them to a non-matrix optimizer."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"{who} expects a floating-point array; got dtype {x.dtype} for shape "
            f"{x.shape}. Cast with x.astype(jnp.float32)."
        )
    return x


def _max_abs_prescale(x):
    """Divides each matrix by its largest |entry| so norms neither overflow nor underflow."""
    peak = max_columns(jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True))
    return x / jnp.where(peak > 0, peak, 1.0)


def _gram(x):
    return sum_columns(x @ x.mT)


def _frobenius(x, safety, eps):
    norm = jnp.sqrt(sum_columns(jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True)))
    return x / (norm * safety + eps), None


def _schatten(x, safety, eps):
    """Schatten-4 norm ‖X‖_S4 = ‖XXᵀ‖_F^½ ≥ σ_max; the Gram matrix is reused."""
    a = _gram(x)
    s4 = jnp.sqrt(jnp.sqrt(jnp.sum(jnp.square(a), axis=(-2, -1), keepdims=True)))
    scale = 1.0 / (s4 * safety + eps)
    return x * scale, a * jnp.square(scale)


def _power_start(m: int) -> np.ndarray:
    """Fixed, generic start vectors (m, _POWER_VECTORS) for the power iteration."""
    v = np.random.default_rng(0x5EED).standard_normal((m, _POWER_VECTORS))
    return (v / np.linalg.norm(v, axis=0, keepdims=True)).astype(np.float32)


def _spectral(x, safety, eps):
    """σ_max estimated by power iteration on A = XXᵀ (capped by the Schatten-4 bound).

    Runs ``_POWER_VECTORS`` independent power iterations (``_POWER_ITERS`` steps each) and
    keeps the largest Rayleigh estimate ‖Av‖, a lower bound on λ_max = σ_max², then divides
    by √λ·``SPECTRAL_MARGIN``. An estimate that falls short by more than the margin leaves
    σ_max above 1, which the Polar Express tables do not survive (σ ≈ 1.03 is enough to
    diverge), and a single start vector falls short whenever its component along the top
    singular vector is small: with one vector and 16 steps, a 768-row matrix whose top σ
    stands 5% above a cluster diverged in about half of random trials; with 8 vectors and
    24 steps none of 20 000 trials did (tested for gaps 1.01–1.5).
    """
    a = _gram(x)
    v = jnp.asarray(_power_start(a.shape[-1]), dtype=a.dtype)
    v = jnp.broadcast_to(v, a.shape[:-2] + v.shape)

    def body(_, v):
        w = a @ v
        return w / (jnp.linalg.norm(w, axis=-2, keepdims=True) + 1e-30)

    v = jax.lax.fori_loop(0, _POWER_ITERS, body, v)
    lam = jnp.max(jnp.linalg.norm(a @ v, axis=-2), axis=-1)[..., None, None]
    s4 = jnp.sqrt(jnp.sqrt(jnp.sum(jnp.square(a), axis=(-2, -1), keepdims=True)))
    sigma = jnp.minimum(jnp.sqrt(lam) * SPECTRAL_MARGIN, s4)
    scale = 1.0 / (sigma * safety + eps)
    return x * scale, a * jnp.square(scale)


def _aol(x, safety, eps):
    """AOL: X ← diag(s) X with s_i = (Σ_j |A_ij|)^-½, reusing A = XXᵀ (Turbo-Muon)."""
    a = _gram(x)
    s = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(a), axis=-1, keepdims=True), eps))
    s = s / safety
    return x * s, a * s * s.mT


_PRECONDITIONERS = {
    "frobenius": _frobenius,
    "schatten": _schatten,
    "spectral": _spectral,
    "aol": _aol,
}


def _quintic_step(x, row, a_mat=None):
    """One step X ← aX + (bA + cA²)X; ``a_mat`` reuses a precomputed A = XXᵀ."""
    a_mat = _gram(x) if a_mat is None else a_mat
    b_mat = row[1] * a_mat + row[2] * square_matmul(a_mat, a_mat)
    return row[0] * x + b_mat @ x


def _standard(x, coeffs, a_mat):
    if a_mat is not None:
        x, coeffs = _quintic_step(x, coeffs[0], a_mat), coeffs[1:]
    if coeffs.shape[0] == 0:
        return x
    x, _ = jax.lax.scan(lambda x, row: (_quintic_step(x, row), None), x, coeffs)
    return x


def _gram_polynomial(r, row):
    """P = aI + bR + cR² for a Gram matrix R (so that X_new = P X)."""
    eye = jnp.broadcast_to(jnp.eye(r.shape[-1], dtype=r.dtype), r.shape)  # rank-safe
    return row[0] * eye + row[1] * r + row[2] * square_matmul(r, r)


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
        return (square_matmul(p, square_matmul(p, r)), square_matmul(p, q)), None

    r = square_matmul(q, square_matmul(q, r))
    (r, q), _ = jax.lax.scan(body, (r, q), coeffs[1:-1])
    q = square_matmul(_gram_polynomial(r, coeffs[-1]), q)
    return q @ x


def _full_float32_matmuls() -> bool:
    """Whether float32 matmuls run at full float32 precision where this is being traced.

    XLA's CPU backend always does; on GPU and TPU the default precision rounds float32
    operands to TF32 / bfloat16 unless ``jax_default_matmul_precision`` asks for
    ``"highest"`` / ``"float32"``.
    """
    precision = jax.config.jax_default_matmul_precision
    if precision is not None and str(precision).lower() in _FULL_F32_PRECISIONS:
        return True
    return jax.default_backend() == "cpu"


def default_restart(dtype) -> int:
    """Gram restart period for ``restart=None``: 2 (16-bit), 3 (float32), 0 = never (float64).

    The Gram iteration squares the condition number: R = XXᵀ holds σ² with absolute
    round-off ε·σ_max², so the polynomial's steep part (σ ≈ 1/slope) sees relative
    errors that grow like slope²·ε within a chunk. Recomputing X ← QX and R = XXᵀ resets
    them. Measured on σ log-spaced down to 1e-6 (tests and ``benchmarks/orthogonalize.py``):
    in float32 on CPU without restarts, Gram and standard iterations differ by 1e-4 (5
    steps) to 4e-3 (8-step Polar Express); every 3 steps brings that to ≤ 1e-4, for 20%
    more time at 768×3072 on a 2-core CPU (``restart=0`` skips it where 1e-3 is good
    enough and matmuls are full float32). In bfloat16, restarting every 3 steps lets the
    8-step Polar Express table diverge (σ ≈ 1e36) while every 2 steps matches the standard
    iteration's bf16 error. float32 compute with matmuls at the GPU/TPU default precision
    (TF32 / bf16 passes) behaves like 16-bit: on an H200 (jax 0.11.2) Gram without restarts
    diverged and every 3 steps left band errors of 5e-2 against 2.6e-2 every 2 steps
    (standard: 9e-3), so float32 restarts every 2 steps unless matmuls are full float32.

    Example:
      >>> import optorth, jax.numpy as jnp
      >>> optorth.ns.default_restart(jnp.bfloat16), optorth.ns.default_restart(jnp.float64)
      (2, 0)
    """
    itemsize = jnp.dtype(dtype).itemsize
    if itemsize <= 2 or (itemsize == 4 and not _full_float32_matmuls()):
        return 2
    return 3 if itemsize == 4 else 0


def _restart_points(steps: int, restart: int | None) -> list[int]:
    if not restart or restart >= steps:
        return [0, steps]
    return list(range(0, steps, restart)) + [steps]


def _gram_iteration(x, coeffs, a_mat, restart):
    bounds = _restart_points(coeffs.shape[0], restart)
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        x = _gram_chunk(x, coeffs[start:stop], a_mat if start == 0 else None)
    return x


def choose_method(shape, method: str = "auto") -> str:
    """The iteration ``newton_schulz`` runs for a matrix shape: ``"standard"`` or ``"gram"``.

    Example:
      >>> import optorth
      >>> optorth.ns.choose_method((256, 1024)), optorth.ns.choose_method((512, 512))
      ('gram', 'standard')
    """
    check_choice("choose_method", "method", method, METHODS)
    m, n = sorted(matrix_shape("choose_method", shape))
    if method != "auto":
        return method
    return "gram" if m > 1 and n >= GRAM_CROSSOVER * m else "standard"


def newton_schulz_table(x, coeffs, *, safety: float = 1.0, precondition: str = "frobenius",
                        method: str = "standard", dtype: Any = None, eps: float = 1e-7,
                        restart: int | None = None) -> jax.Array:
    """Runs Newton–Schulz on every matrix of ``x`` with a raw ``(T, 3)`` table (maybe traced).

    The iteration behind `optorth.newton_schulz` and the orthogonalize block: ``x`` is
    divided by its largest entry, normalized in float32 by ``precondition`` (so that
    σ_max ≤ 1/``safety``), cast to ``dtype`` and then each row (a, b, c) maps every singular
    value σ to aσ + bσ³ + cσ⁵. Tall matrices run in the wide orientation. The table is not
    validated here (it may be traced, e.g. being learned; the result is differentiable with
    respect to it): use `optorth.NewtonSchulz` for concrete tables.

    Args:
      x: floating array of shape ``(..., m, n)``; leading axes are a batch.
      coeffs: ``(T, 3)`` table of rows ``(a, b, c)``, T ≥ 1.
      safety: the normalizer is multiplied by it (≥ 1; a schedule's ``safety``).
      precondition: ``"frobenius"`` (divide by ‖X‖_F), ``"schatten"`` (by ‖X‖_S4, reusing
        XXᵀ), ``"spectral"`` (by a power-iteration estimate of ‖X‖₂ times
        `SPECTRAL_MARGIN`, reusing XXᵀ) or ``"aol"`` (Turbo-Muon's row scaling).
      method: ``"standard"`` (the plain quintic iteration), ``"gram"`` (iterate on the m×m
        Gram matrix and apply the accumulated polynomial once; faster for n ≫ m) or
        ``"auto"`` (Gram when n ≥ `GRAM_CROSSOVER`·m).
      dtype: compute dtype of the iteration (e.g. ``jnp.bfloat16``); ``None``: the input's
        dtype promoted to float32. Normalization always runs in at least float32.
      eps: added to the normalizer (so a zero matrix maps to zeros).
      restart: for the Gram iteration, recompute X and its Gram matrix every ``restart``
        steps (``0`` never restarts); ``None`` uses `default_restart` of the compute
        dtype (every 2 steps in 16-bit and in float32 with reduced-precision GPU/TPU
        matmuls, every 3 in full float32, never in float64).

    Returns:
      An array with the shape and dtype of ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> import optorth
      >>> table = jnp.asarray([(3.4445, -4.7750, 2.0315)] * 5)
      >>> optorth.ns.newton_schulz_table(jnp.eye(4, 8) * 3.0, table, method="gram").shape
      (4, 8)
    """
    who = "newton_schulz_table"
    x = check_matrices(x, who)
    shape, in_dtype = x.shape, x.dtype
    if restart is not None and (isinstance(restart, bool) or not (
            isinstance(restart, (int, np.integer)) and restart >= 0)):
        raise ValueError(f"{who}: restart={restart!r}; expected None or an int >= 0 (0: never).")
    coeffs = jnp.asarray(check_table(who, coeffs))
    check_choice(who, "precondition", precondition, PRECONDITIONS)
    check_choice(who, "method", method, METHODS)
    check_safety(who, safety)
    check_positive(who, "eps", eps)
    dtype = check_dtype(who, "dtype", dtype)
    if x.size == 0:  # a zero-sized axis: nothing to orthogonalize, the result is empty too
        return x
    norm_dtype = jnp.promote_types(in_dtype, jnp.float32)
    compute_dtype = jnp.dtype(norm_dtype if dtype is None else dtype)
    whole = full_shape(shape)  # a column block's matrices, while they are split over devices
    method = choose_method(whole, method)
    transposed = whole[-2] > whole[-1]
    y = x.mT if transposed else x
    y, a_mat = _PRECONDITIONERS[precondition](_max_abs_prescale(y.astype(norm_dtype)), safety, eps)
    y = y.astype(compute_dtype)
    a_mat = None if a_mat is None else a_mat.astype(compute_dtype)
    coeffs = coeffs.astype(compute_dtype)
    if method == "gram" and min(whole[-2:]) > 1:
        restart = default_restart(compute_dtype) if restart is None else restart
        y = _gram_iteration(y, coeffs, a_mat, restart)
    else:
        y = _standard(y, coeffs, a_mat)
    y = y.mT if transposed else y
    chex.assert_shape(y, shape)
    return y.astype(in_dtype)


def polar(x) -> jax.Array:
    """The exact polar factor U Vᵀ of every matrix in ``x`` (shape ``(..., m, n)``) via SVD.

    The reference for tests and benchmarks. Computed in at least float32; returns the
    input's dtype. For rank-deficient matrices the factor is not unique (any completion of
    the null space is valid); the SVD's choice is returned.

    Example:
      >>> import optorth, jax.numpy as jnp
      >>> optorth.ns.polar(jnp.diag(jnp.asarray([2.0, 0.5])))
      Array([[1., 0.],
             [0., 1.]], dtype=float32)
    """
    x = check_matrices(x, "polar")
    u, _, vt = jnp.linalg.svd(x.astype(jnp.promote_types(x.dtype, jnp.float32)),
                              full_matrices=False)
    return (u @ vt).astype(x.dtype)


def polar_numpy(x) -> np.ndarray:
    """Float64 NumPy polar factor U Vᵀ of every matrix in ``x``: ground truth for tests.

    Example:
      >>> import optorth, numpy as np
      >>> optorth.ns.polar_numpy(np.diag([2.0, -0.5]))
      array([[ 1.,  0.],
             [ 0., -1.]])
    """
    u, _, vt = np.linalg.svd(np.asarray(x, dtype=np.float64), full_matrices=False)
    return u @ vt
