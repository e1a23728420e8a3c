"""optorth.newton_schulz against float64 NumPy ground truth, optax, and finite differences.

Ground truth (tests/_ns_reference.py): a schedule maps X = U diag(s) Vᵀ to
U diag(φ(s / c)) Vᵀ, with φ the composed quintics evaluated in float64 and c the
normalization (‖X‖_F·safety, ‖X‖_S4·safety, AOL's row scaling, or a power-iteration
estimate of σ_max). Inputs have known spectra: Gaussian, low rank + noise, log-spaced down
to 1e-6 and heavy-tailed.

Float32 round-off allowance, F32_TOL = 5e-4 in spectral norm: the largest deviation from
the float64 map measured here is ≈ 1e-4 (8-step Polar Express, σ down to 1e-6, Gram
iteration with its default restarts); everything else stays below 5e-5.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _ns_reference import (
    SIGMA_MIN,
    aol,
    apply_map,
    band,
    compose,
    diag_in_basis,
    normalized,
    orthonormal,
    spectral_norm,
    svd_map,
    with_spectra,
)
from optax.contrib._muon import MuonDimensionNumbers, orthogonalize_via_newton_schulz

import optorth
from optorth.ns import PRESETS, default_restart, newton_schulz_table

F32_TOL = 5e-4
PRESET_NAMES = ("jordan", "you", "you6", "polar_express", "polar_express5", "turbo")
M, N = 24, 40
JORDAN_ROW = (3.4445, -4.7750, 2.0315)



@functools.partial(jax.jit, static_argnames=("name", "method", "precondition", "restart"))
def ns(x, name, *, method="standard", precondition=None, restart=None):
    """optorth.newton_schulz with NewtonSchulz(name, ...); ``restart`` goes to the engine."""
    config = optorth.NewtonSchulz(name, method=method, precondition=precondition)
    if restart is None:
        return optorth.newton_schulz(x, config)
    safety, precondition = config.normalization()
    return newton_schulz_table(x, config.table(), safety=safety, precondition=precondition,
                               method=method, restart=restart)


pytestmark = pytest.mark.usefixtures("float32_matmuls")  # tests/conftest.py


@pytest.fixture(scope="module")
def spectra():
    """A (4, 24, 40) batch, one matrix per spectrum kind, with its SVD factors."""
    return with_spectra(np.random.default_rng(0), M, N)


def _kept(s):
    return s >= SIGMA_MIN * s[..., :1] * (1 - 1e-12)


def _assert_in_band(out, u, s_hat, v, rows, tol, safety=1.0):
    """Output σ for input σ ≥ SIGMA_MIN·σ_max lie in φ's band over their normalized range.

    Checks the band from the local float64 composition and, as a cross-check, that it is
    contained in the band ``optorth.validate_schedule`` reports on [lo·safety, 1].
    """
    for b in range(out.shape[0]):
        keep = _kept(s_hat[b])
        lo, hi = float(s_hat[b][keep].min()), float(s_hat[b].max())
        band_lo, band_hi = band(rows, lo, hi)
        d = diag_in_basis(out[b], u[b], v[b])[keep]
        assert band_lo - tol <= d.min() and d.max() <= band_hi + tol, (b, d, band_lo, band_hi)
        # the singular values of O restricted to the kept input directions
        sv = np.linalg.svd(np.asarray(out[b], np.float64) @ v[b][:, keep], compute_uv=False)
        assert band_lo - tol <= sv.min() and sv.max() <= band_hi + tol, (b, sv)
        report = optorth.validate_schedule(
            optorth.Schedule(table=tuple(map(tuple, rows)), safety=safety, extend="fixed"),
            sigma_min=min(lo * safety, 1.0),
        )
        assert report.band[0] <= band_lo + 1e-9 and band_hi <= report.band[1] + 1e-9


@pytest.mark.parametrize("method", ["standard", "gram"])
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_match_exact_spectral_map(spectra, name, method):
    x, u, s, v = spectra
    sched = PRESETS[name]
    rows = sched.rows()
    out = np.asarray(ns(jnp.asarray(x, jnp.float32), name, method=method), np.float64)
    if sched.precondition == "aol":
        # AOL rescales rows, which changes the singular vectors: the truth is φ of D·X.
        xa = aol(x)
        expected = svd_map(xa, rows)
        u, s_hat, vt = np.linalg.svd(xa, full_matrices=False)  # the band is on σ(D·X)
        v = np.swapaxes(vt, -1, -2)
    else:
        s_hat = normalized(s, "frobenius", sched.safety)
        expected = apply_map(u, s_hat, v, rows)
    err = spectral_norm(out - expected)
    assert np.all(err <= F32_TOL), err
    _assert_in_band(out, u, s_hat, v, rows, F32_TOL, sched.safety)


@pytest.mark.parametrize("name", ["jordan", "polar_express5"])
def test_schatten_normalization_is_exact(spectra, name):
    x, u, s, v = spectra
    sched = PRESETS[name]
    out = ns(jnp.asarray(x, jnp.float32), name, precondition="schatten")
    s_hat = normalized(s, "schatten", sched.safety)
    expected = apply_map(u, s_hat, v, sched.rows())
    assert np.all(spectral_norm(np.asarray(out, np.float64) - expected) <= F32_TOL)
    _assert_in_band(np.asarray(out), u, s_hat, v, sched.rows(), F32_TOL, sched.safety)


@pytest.mark.parametrize("method", ["standard", "gram"])
def test_spectral_normalization_within_its_margin(spectra, method):
    """Power iteration: the output is U φ(s / c) Vᵀ for some c ∈ [σ_max, 1.02·σ_max]."""
    x, u, s, v = spectra
    sched = PRESETS["polar_express"]
    out = np.asarray(ns(jnp.asarray(x, jnp.float32), "polar_express", method=method,
                        precondition="spectral"), np.float64)
    candidates = np.linspace(1.0 - 1e-5, 1.02 * (1 + 1e-5), 4001)[:, None]  # c / σ_max
    for b in range(x.shape[0]):
        d = diag_in_basis(out[b], u[b], v[b])
        fits = np.abs(d - compose(sched.rows(), s[b] / (candidates * sched.safety))).max(-1)
        assert fits.min() <= F32_TOL, (b, fits.min(), candidates[int(np.argmin(fits))])
        off = out[b] - np.einsum("ik,k,jk->ij", u[b], d, v[b])
        assert spectral_norm(off) <= F32_TOL


def test_spectral_estimate_survives_isolated_top_singular_value():
    """A top σ 3–20% above a cluster; for 8 of the 32 matrices its singular vector is
    orthogonal to a classic cosine start vector, the others are random.

    One power iteration from a fixed vector (16 steps) underestimated σ_max by more than the
    2% margin on such inputs, and Polar Express diverged (σ_max slightly above 1 is pushed
    past the next row's repelling fixed point). Every output must stay in the table's band.
    """
    rng = np.random.default_rng(3)
    m, n = 32, 48
    cosine = np.cos(np.arange(m) * 1.3 + 0.1)
    xs = []
    for i, gap in enumerate(np.tile([1.03, 1.05, 1.1, 1.2], 8)):
        u = orthonormal(rng, m, m)
        if i < 8:
            u[:, 0] -= cosine * (cosine @ u[:, 0]) / (cosine @ cosine)
            u, _ = np.linalg.qr(u)
        s = np.concatenate([[gap], np.linspace(1.0, 0.3, m - 1)])
        xs.append((u * s) @ orthonormal(rng, n, m).T)
    out = ns(jnp.asarray(np.stack(xs), jnp.float32), "polar_express", precondition="spectral")
    sv = np.linalg.svd(np.asarray(out, np.float64), compute_uv=False)
    assert np.all(np.abs(sv - 1.0) < 1e-3), sv.max(-1)


def test_gram_restarts_remove_squared_conditioning_error(spectra):
    """Without restarts the Gram iteration drifts from the standard one; the default fixes it."""
    x = jnp.asarray(spectra[0], jnp.float32)
    standard = np.asarray(ns(x, "polar_express"), np.float64)
    default = np.asarray(ns(x, "polar_express", method="gram"), np.float64)
    never = np.asarray(ns(x, "polar_express", method="gram", restart=0), np.float64)
    err_default = spectral_norm(default - standard).max()
    err_never = spectral_norm(never - standard).max()
    assert err_default <= F32_TOL
    assert err_never > 5 * err_default, (err_never, err_default)


def test_default_restart_rule(monkeypatch):
    """Restart every 2 steps whenever matmuls are effectively 16-bit, every 3 in float32."""
    assert default_restart(jnp.bfloat16) == 2 and default_restart(jnp.float16) == 2
    assert default_restart(jnp.float64) == 0
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    with jax.default_matmul_precision("tensorfloat32"):  # ignored by XLA's CPU backend
        assert default_restart(jnp.float32) == 3
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with jax.default_matmul_precision("tensorfloat32"):
        assert default_restart(jnp.float32) == 2
    with jax.default_matmul_precision("highest"):
        assert default_restart(jnp.float32) == 3


# ------------------------------------------------------------------------- optax agreement
def _optax(x, table, steps, preconditioning="frobenius"):
    dims = None if x.ndim == 2 else MuonDimensionNumbers(reduction_axis=1, output_axis=2)
    return orthogonalize_via_newton_schulz(
        x, jnp.asarray(table, jnp.float32), ns_steps=steps, preconditioning=preconditioning,
        eps=1e-7, dimension_numbers=dims)


@pytest.mark.parametrize("shape", [(24, 40), (40, 24), (32, 32), (3, 16, 24)])
def test_jordan_frobenius_matches_optax(shape):
    x = jnp.asarray(np.random.default_rng(4).standard_normal(shape), jnp.float32)
    ours = ns(x, "jordan")
    theirs = jax.jit(lambda x: _optax(x, JORDAN_ROW, 5))(x)
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=0)


def test_turbo_aol_matches_optax_aol():
    x = jnp.asarray(np.random.default_rng(5).standard_normal((3, 24, 40)), jnp.float32)
    table = PRESETS["turbo"].rows()
    ours = ns(x, "turbo")
    theirs = jax.jit(lambda x: _optax(x, table, 4, "aol"))(x)
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=0)
    gram = ns(x, "turbo", method="gram")
    np.testing.assert_allclose(gram, theirs, atol=1e-4, rtol=0)


def test_schatten_matches_optax_schatten():
    x = jnp.asarray(np.random.default_rng(6).standard_normal((24, 40)), jnp.float32)
    ours = ns(x, "you", precondition="schatten")
    theirs = jax.jit(lambda x: _optax(x, PRESETS["you"].rows(), 5, "schatten"))(x)
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=0)


# ------------------------------------------------------------------ gradients w.r.t. table
@pytest.mark.parametrize("method", ["standard", "gram"])
def test_grad_wrt_table_matches_finite_differences(method):
    """Float64 (x64 enabled only inside this test) central differences, h = 1e-6."""
    rng = np.random.default_rng(7)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((2, 6, 10)))
        w = jnp.asarray(rng.standard_normal((2, 6, 10)))
        table = jnp.asarray(PRESETS["you"].rows())
        assert table.dtype == jnp.float64

        @jax.jit
        def loss(t):
            config = optorth.NewtonSchulz("you", method=method)
            return jnp.sum(w * optorth.newton_schulz(x, config, coeffs=t))

        grad = np.asarray(jax.grad(loss)(table))
        h = 1e-6
        fd = np.zeros_like(grad)
        for i in range(grad.shape[0]):
            for j in range(3):
                e = np.zeros(grad.shape)
                e[i, j] = h
                fd[i, j] = (loss(table + e) - loss(table - e)) / (2 * h)
    assert jnp.asarray(1.0).dtype == jnp.float32  # x64 did not leak
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())
    assert np.abs(grad).max() > 0


def test_grad_wrt_table_float32_agrees_with_float64():
    rng = np.random.default_rng(8)
    x64, w64 = rng.standard_normal((6, 10)), rng.standard_normal((6, 10))
    table = PRESETS["polar_express5"].rows()

    def grad(x, w, t):
        config = optorth.NewtonSchulz("polar_express5")  # Frobenius, safety 1.02
        return jax.grad(lambda t: jnp.sum(w * optorth.newton_schulz(x, config, coeffs=t)))(t)

    g32 = np.asarray(jax.jit(grad)(jnp.asarray(x64, jnp.float32), jnp.asarray(w64, jnp.float32),
                                   jnp.asarray(table, jnp.float32)))
    with jax.enable_x64(True):
        g64 = np.asarray(jax.jit(grad)(jnp.asarray(x64), jnp.asarray(w64), jnp.asarray(table)))
    assert np.all(np.isfinite(g32))
    np.testing.assert_allclose(g32, g64, rtol=2e-3, atol=2e-3 * np.abs(g64).max())
