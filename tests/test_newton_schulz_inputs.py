"""optorth.newton_schulz on every kind of input: symmetries, low precision, edge cases, errors.

Tolerances (measured on these shapes, then widened about 1.5–4×):
  * float32: outputs agree to 2e-5 (max |entry|) where the math is equivariant, for a table
    whose map is well conditioned (see SYMMETRY_SCHEDULE); 1e-4 with the spectral
    normalization, whose power-iteration estimate itself moves at the 1e-6 level.
  * bfloat16 compute, BF16_TOL = 0.15 on the band: output σ for input σ ≥ 1e-3·σ_max stay
    within φ's band ± 0.15 (measured ≤ 0.11: You 6-step, σ log-spaced to 1e-6).
  * float16 compute, F16_TOL = 0.01 on the band (measured ≤ 0.002).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _ns_reference import (
    SIGMA_MIN,
    aol,
    band,
    compose,
    diag_in_basis,
    normalized,
    orthonormal,
    with_spectra,
)

import optorth
from optorth.ns import PRESETS, newton_schulz_table
from optorth.ns._schedule import PRECONDITIONS

BF16_TOL = 0.15
F16_TOL = 0.01
M, N = 24, 40
SCALES = (1e-30, 1e-20, 1e-3, 7.5, 1e20, 1e30)
JORDAN_ONE = float(compose(PRESETS["jordan"].rows(), 1.0))
#: A well-conditioned table for the symmetry checks: max σ|φ′(σ)| on [0, 1] is 7 for You's
#: table but 140 for the 5-step Polar Express one, whose outputs then move by ~5e-4 under
#: float32 re-rounding of LXR when normalized by σ_max (equivariance holds, the map is steep).
SYMMETRY_SCHEDULE = "you"



@functools.partial(jax.jit, static_argnames=("name", "method", "precondition", "dtype"))
def ns(x, name, *, method="standard", precondition=None, dtype=None):
    """optorth.newton_schulz(x, NewtonSchulz(name, ...)), jitted."""
    config = optorth.NewtonSchulz(name, method=method, precondition=precondition, dtype=dtype)
    return optorth.newton_schulz(x, config)


pytestmark = pytest.mark.usefixtures("float32_matmuls")  # tests/conftest.py


def _left_right(rng, precondition):
    """Orthogonal factors the preconditioning commutes with.

    Scalar normalizations commute with any orthogonal U, V. AOL scales rows by their
    absolute row sums of XXᵀ, so on the left it only commutes with signed permutations.
    """
    right = orthonormal(rng, N, N)
    if precondition == "aol":
        left = np.eye(M)[rng.permutation(M)] * rng.choice([-1.0, 1.0], M)[:, None]
    else:
        left = orthonormal(rng, M, M)
    return left, right


@pytest.mark.parametrize("precondition", PRECONDITIONS)
def test_symmetries_scales_zeros_and_methods(precondition):
    """One batch per preconditioning: [X, L X R, c·X for c in SCALES, 0].

    Checks f(LXR) = L f(X) R, f(cX) = f(X) (c from 1e-30 to 1e30), f(0) = 0 without NaN,
    batched = per matrix, leading axes (2, 3, m, n), f(Xᵀ) = f(X)ᵀ, and that the Gram
    iteration agrees with the standard one in float32. The power-iteration estimate of σ_max
    moves by ~2e-6 (relative) between these inputs, which moves outputs by up to ~5e-5.
    """
    rng = np.random.default_rng(10)
    x = rng.standard_normal((M, N))
    left, right = _left_right(rng, precondition)
    batch = np.stack([x, left @ x @ right] + [c * x for c in SCALES] + [np.zeros((M, N))])
    xb = jnp.asarray(batch, jnp.float32)
    out = np.asarray(ns(xb, SYMMETRY_SCHEDULE, precondition=precondition))
    tol = 1e-4 if precondition == "spectral" else 2e-5
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[1], left @ out[0] @ right, atol=tol)
    for i in range(2, 2 + len(SCALES)):
        np.testing.assert_allclose(out[i], out[0], atol=tol, err_msg=f"scale {SCALES[i - 2]}")
    assert np.all(out[-1] == 0.0)
    single = ns(xb[0], SYMMETRY_SCHEDULE, precondition=precondition)
    np.testing.assert_allclose(single, out[0], atol=2e-6)
    nested = ns(xb[:6].reshape(2, 3, M, N), SYMMETRY_SCHEDULE, precondition=precondition)
    np.testing.assert_allclose(np.asarray(nested).reshape(-1, M, N), out[:6], atol=2e-6)
    transposed = ns(xb[0].T, SYMMETRY_SCHEDULE, precondition=precondition)
    np.testing.assert_allclose(transposed, out[0].T, atol=2e-6)
    gram = np.asarray(ns(xb, SYMMETRY_SCHEDULE, precondition=precondition, method="gram"))
    np.testing.assert_allclose(gram, out, atol=1e-4)
    assert np.all(gram[-1] == 0.0)


def test_square_transpose_and_auto_method():
    x = jnp.asarray(np.random.default_rng(11).standard_normal((2, 32, 32)), jnp.float32)
    out = ns(x, "you")
    np.testing.assert_allclose(ns(jnp.swapaxes(x, -1, -2), "you"), np.swapaxes(out, -1, -2),
                               atol=2e-5)
    assert optorth.ns.choose_method((32, 32)) == "standard"
    assert optorth.ns.choose_method((16, 64)) == "gram"
    assert optorth.ns.choose_method((64, 16)) == "gram"
    assert optorth.ns.choose_method((1, 64)) == "standard"
    assert optorth.ns.choose_method((32, 32), "gram") == "gram"


# ------------------------------------------------------------------------ low precision
def _band_excess(out, rows, u, s_hat, v):
    """How far the output σ for input σ ≥ SIGMA_MIN·σ_max fall outside φ's band (≥ 0)."""
    worst = 0.0
    for b in range(out.shape[0]):
        keep = s_hat[b] >= SIGMA_MIN * s_hat[b].max()
        lo, hi = band(rows, s_hat[b][keep].min(), s_hat[b].max())
        d = diag_in_basis(out[b], u[b], v[b])[keep]
        sv = np.linalg.svd(out[b] @ v[b][:, keep], compute_uv=False)
        worst = max(worst, lo - d.min(), d.max() - hi, lo - sv.min(), sv.max() - hi)
    return worst


@pytest.fixture(scope="module")
def spectra():
    return with_spectra(np.random.default_rng(0), M, N)


@pytest.mark.parametrize(
    "name,method,dtype,tol",
    [
        ("jordan", "standard", jnp.bfloat16, BF16_TOL),
        ("polar_express5", "standard", jnp.bfloat16, BF16_TOL),
        ("you6", "standard", jnp.bfloat16, BF16_TOL),
        # Gram in bf16 restarts every 2 steps by default; without (or every 3) it diverges
        # here for the 8-step Polar Express table.
        ("polar_express", "gram", jnp.bfloat16, BF16_TOL),
        ("polar_express5", "gram", jnp.bfloat16, BF16_TOL),
        ("turbo", "gram", jnp.bfloat16, BF16_TOL),
        ("polar_express5", "gram", jnp.float16, F16_TOL),
    ],
)
def test_low_precision_compute_stays_in_band(spectra, name, method, dtype, tol):
    x, u, s, v = spectra
    sched = PRESETS[name]
    out = ns(jnp.asarray(x, jnp.float32), name, method=method, dtype=dtype)
    assert out.dtype == jnp.float32
    out = np.asarray(out, np.float64)
    assert np.all(np.isfinite(out))
    if sched.precondition == "aol":
        u, s_hat, vt = np.linalg.svd(aol(x), full_matrices=False)
        v = np.swapaxes(vt, -1, -2)
    else:
        s_hat = normalized(s, "frobenius", sched.safety)
    assert _band_excess(out, sched.rows(), u, s_hat, v) <= tol


def test_float16_and_bfloat16_inputs_keep_their_dtype(spectra):
    x = spectra[0]
    ref = np.asarray(ns(jnp.asarray(x, jnp.float32), "jordan"))
    for dtype, tol in ((jnp.float16, 3e-3), (jnp.bfloat16, 3e-2)):
        out = ns(jnp.asarray(x, dtype), "jordan")
        assert out.dtype == dtype and out.shape == x.shape
        # input rounding changes tiny σ directions the most; compare the well-conditioned
        # (Gaussian, heavy-tailed) matrices of the batch elementwise
        np.testing.assert_allclose(np.asarray(out, np.float32)[[0, 3]], ref[[0, 3]], atol=tol)


# ------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("method", ["standard", "gram"])
def test_rank_deficient_inputs_map_exactly(method):
    """Rank 1 and rank 3: φ on the nonzero σ, exact zeros on the null space."""
    rng = np.random.default_rng(12)
    u, v = orthonormal(rng, M, M), orthonormal(rng, N, M)
    s = np.zeros((2, M))
    s[0, 0] = 3.0
    s[1, :3] = (2.0, 1.0, 0.25)
    x = np.einsum("ik,bk,jk->bij", u, s, v)
    sched = PRESETS["polar_express5"]
    out = np.asarray(ns(jnp.asarray(x, jnp.float32), "polar_express5", method=method))
    s_hat = normalized(s, "frobenius", sched.safety)
    expected = np.einsum("ik,bk,jk->bij", u, compose(sched.rows(), s_hat), v)
    # rank 1 puts σ̂ at 1/1.02 where this map is steepest (σ|φ′| ≈ 140): float32 round-off
    # there moves outputs by ~3e-5
    np.testing.assert_allclose(out, expected, atol=1e-4)


@pytest.mark.parametrize("precondition", PRECONDITIONS)
def test_vectors_as_matrices_and_scalars(precondition):
    """1×n, n×1 and 1×1: every normalization makes the single σ exactly 1, so out = φ(1)·x/‖x‖."""
    rng = np.random.default_rng(13)
    for shape in ((3, 1, 7), (3, 7, 1), (3, 1, 1)):
        x = rng.standard_normal(shape) * np.array([1e-30, 1.0, 1e30])[:, None, None]
        for method in ("standard", "gram"):
            out = ns(jnp.asarray(x, jnp.float32), "jordan", precondition=precondition,
                     method=method)
            expected = JORDAN_ONE * x / np.linalg.norm(x, axis=(-2, -1), keepdims=True)
            np.testing.assert_allclose(out, expected, rtol=3e-5, atol=0)


def test_output_shape_and_dtype_follow_input():
    """Traced only (the engine chex-asserts its shapes at trace time)."""
    for shape in ((5, 3), (2, 3, 4, 6), (1, 1), (7, 1, 9)):
        for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
            for method in ("standard", "gram", "auto"):
                config = optorth.NewtonSchulz(method=method)
                out = jax.eval_shape(lambda x, c=config: optorth.newton_schulz(x, c),
                                     jax.ShapeDtypeStruct(shape, dtype))
                assert out.shape == shape and out.dtype == dtype


def test_polar_reference_matches_numpy():
    x = np.random.default_rng(14).standard_normal((2, 6, 9))
    np.testing.assert_allclose(optorth.ns.polar(jnp.asarray(x, jnp.float32)),
                               optorth.ns.polar_numpy(x), atol=2e-5)
    p = optorth.ns.polar_numpy(x)
    np.testing.assert_allclose(p @ np.swapaxes(p, -1, -2), np.broadcast_to(np.eye(6), (2, 6, 6)),
                               atol=1e-12)


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "kwargs,x,match",
    [
        ({}, jnp.ones(5), r"newton_schulz.*rank >= 2; got shape \(5,\)"),
        ({}, jnp.ones((3, 3), jnp.int32), r"floating-point.*int32.*\(3, 3\)"),
        ({}, jnp.ones((3, 3), jnp.bool_), r"floating-point.*bool"),
        ({}, jnp.ones((3, 3), jnp.complex64), r"floating-point.*complex64"),
        ({}, "abc", r"newton_schulz expects a floating array"),
        ({"schedule": "nope"}, jnp.ones((3, 3)), r"Unknown schedule 'nope'.*jordan"),
        ({"schedule": "you", "steps": 3}, jnp.ones((3, 3)), r"exactly 5 steps; 3 were"),
        ({"schedule": "polar_express5", "steps": 7}, jnp.ones((3, 3)), r"exactly 5 steps"),
        ({"schedule": np.ones((4, 3)), "steps": 5}, jnp.ones((3, 3)),
         r"exactly 4 steps; 5 were requested"),
        ({"schedule": np.ones((4, 2))}, jnp.ones((3, 3)),
         r"shape \(T, 3\) with T >= 1; got shape \(4, 2\)"),
        ({"precondition": "l2"}, jnp.ones((3, 3)), r"precondition='l2'"),
        ({"method": "fast"}, jnp.ones((3, 3)), r"method='fast'"),
        ({"dtype": jnp.int8}, jnp.ones((3, 4)), r"dtype=int8 is not a floating"),
    ],
)
def test_bad_input_raises_helpful_value_error(kwargs, x, match):
    with pytest.raises(ValueError, match=match):
        optorth.newton_schulz(x, optorth.NewtonSchulz(**kwargs))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"method": "gram", "restart": -1}, r"restart=-1"),
        ({"method": "gram", "restart": True}, r"restart=True"),
        ({"precondition": "l2"}, r"precondition='l2'"),
        ({"method": "fast"}, r"method='fast'"),
        ({"dtype": jnp.int8}, r"dtype=int8 is not a floating"),
    ],
)
def test_engine_on_raw_tables_refuses_bad_settings(kwargs, match):
    table = jnp.asarray(PRESETS["jordan"].rows())
    with pytest.raises(ValueError, match=match):
        newton_schulz_table(jnp.ones((3, 4)), table, **kwargs)
    with pytest.raises(ValueError, match=r"newton_schulz_table.*\(T, 3\).*\(5, 2\)"):
        newton_schulz_table(jnp.ones((3, 4)), table[:, :2])


def test_generated_schedule_step_rule():
    """A truncating schedule runs fewer steps when asked and refuses more."""
    sched = optorth.ns.polar_express_schedule(4)
    x = jnp.asarray(np.random.default_rng(15).standard_normal((6, 9)), jnp.float32)
    prefix = optorth.Schedule(sched.rows(3), safety=sched.safety)
    np.testing.assert_allclose(optorth.newton_schulz(x, optorth.NewtonSchulz(sched, steps=3)),
                               optorth.newton_schulz(x, prefix), atol=1e-6)
    with pytest.raises(ValueError, match="at most 4 steps; 5 were requested"):
        optorth.NewtonSchulz(sched, steps=5)
