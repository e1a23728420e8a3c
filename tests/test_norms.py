"""The lmo property of every dualizer against brute force, and the dual norms against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optorth
from optorth import NORMS

SHAPE = (3, 6, 10)  # a batch of 3 matrices, 6×10
N_DIRECTIONS = 512


def _matrices(seed=0, shape=SHAPE):
    m = np.random.default_rng(seed).standard_normal(shape)
    m *= np.array([1.0, 1e-3, 50.0])[:, None, None]  # per-matrix scales differ wildly
    return jnp.asarray(m, jnp.float32)


def _exact_lmo(name):
    lmo = NORMS[name].lmo
    return (lambda m: lmo(m, exact=True)) if name == "spectral" else lmo


def _random_unit_directions(primal, shape, seed=1):
    """Random directions of every kind, each rescaled to unit primal norm."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((N_DIRECTIONS,) + shape[-2:])
    d[: N_DIRECTIONS // 4] = np.sign(d[: N_DIRECTIONS // 4])  # vertices of the ℓ∞ ball
    d[N_DIRECTIONS // 4: N_DIRECTIONS // 2] **= 3  # heavy-tailed
    d = jnp.asarray(d, jnp.float32)
    return d / primal(d)[:, None, None]


@pytest.mark.parametrize("name", sorted(NORMS))
def test_lmo_attains_the_dual_norm_and_beats_every_unit_direction(name):
    m = _matrices()
    norm, lmo = NORMS[name], _exact_lmo(name)
    direction = lmo(m)
    value = jnp.sum(m * direction, axis=(-2, -1))
    np.testing.assert_allclose(value, norm.dual_norm(m), rtol=2e-5)
    assert np.all(norm.primal_norm(direction) <= 1 + 1e-5)  # feasible: inside the unit ball

    if name == "hybrid_auon":
        # Not an lmo: the Newton–Schulz step turns the direction away from M, so only
        # feasibility in the Frobenius ball (Cauchy–Schwarz: value ≤ ‖M‖_F) holds.
        assert np.all(value <= optorth.dual_norm_frobenius(m) * (1 + 1e-5))
        return
    # Every other unit direction, the other norms' lmos of M included, does no better.
    candidates = _random_unit_directions(norm.primal_norm, SHAPE)
    for k in range(SHAPE[0]):
        others = jnp.stack([_exact_lmo(o)(m[k]) for o in NORMS])
        others = others / norm.primal_norm(others)[:, None, None]
        best_random = jnp.max(jnp.sum(m[k] * jnp.concatenate([candidates, others]),
                                      axis=(-2, -1)))
        # AuON sits within its factor r ≥ 1 of the Frobenius maximizer M/‖M‖_F (up to its
        # eps = 1e-7 next to ‖M‖_F ≈ 8e-3 for the small matrix).
        slack = _auon_r(m[k]) * (1 + 1e-4) if name == "auon" else 1 + 1e-5
        assert float(best_random) <= float(value[k]) * slack


def _auon_r(m, gamma=1.0):
    x = m / jnp.linalg.norm(m)
    return jnp.sqrt(jnp.mean(jnp.cosh(gamma * x) ** 2))


def test_dual_norms_match_numpy():
    m = _matrices()
    x = np.asarray(m, np.float64)
    sv = np.linalg.svd(x, compute_uv=False)
    expected = {
        "spectral": sv.sum(-1),
        "frobenius": np.sqrt((x ** 2).sum((-2, -1))),
        "sign": np.abs(x).sum((-2, -1)),
        "row": np.linalg.norm(x, axis=-1).sum(-1),
        "column": np.linalg.norm(x, axis=-2).sum(-1),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(NORMS[name].dual_norm(m), value, rtol=1e-5)
    np.testing.assert_allclose(NORMS["spectral"].primal_norm(m), sv.max(-1), rtol=1e-5)
    np.testing.assert_allclose(NORMS["row"].primal_norm(m), np.linalg.norm(x, axis=-1).max(-1),
                               rtol=1e-5)
    np.testing.assert_allclose(optorth.lmo_spectral(m, exact=True), optorth.polar_numpy(x),
                               atol=2e-5)


def test_newton_schulz_lmo_is_close_to_the_exact_one():
    m = _matrices()
    nuclear = optorth.dual_norm_spectral(m)
    for schedule, tol in (("you6", 0.01), ("polar_express", 0.02)):
        value = jnp.sum(m * optorth.lmo_spectral(m, schedule=schedule), axis=(-2, -1))
        np.testing.assert_allclose(value, nuclear, rtol=tol)
    # Jordan's table trades accuracy for slope: singular values land in about [0.68, 1.13].
    sv = np.linalg.svd(np.asarray(optorth.lmo_spectral(m)), compute_uv=False)
    assert sv.min() > 0.6 and sv.max() < 1.2


def test_auon_cosh_factor_is_almost_one():
    """The measured fact behind AuON's docstring: r − 1 ≤ sinh²(γ)/(2N)."""
    m = _matrices(shape=(3, 16, 32))
    for gamma in (1.0, 1.5):
        r = jax.vmap(lambda a, g=gamma: _auon_r(a, g))(m)
        assert np.all(r - 1 <= np.sinh(gamma) ** 2 / (2 * 16 * 32) + 1e-7)
        frob = optorth.lmo_frobenius(m)
        np.testing.assert_allclose(optorth.lmo_auon(m, gamma=gamma) * r[:, None, None], frob,
                                   atol=1e-6)


def test_hybrid_auon_is_auon_of_one_newton_schulz_step():
    m = _matrices()
    one_step = optorth.newton_schulz(m, "jordan", steps=1)
    np.testing.assert_allclose(optorth.lmo_hybrid_auon(m), optorth.lmo_auon(one_step),
                               atol=1e-6)


@pytest.mark.parametrize("name", sorted(NORMS))
def test_per_matrix_zero_safe_and_dtype_preserving(name):
    lmo = NORMS[name].lmo
    m = _matrices().at[1].set(0.0)
    batched = lmo(m)
    for k in range(SHAPE[0]):
        np.testing.assert_allclose(batched[k], lmo(m[k]), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(batched[1]) == 0)
    assert lmo(m.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_unknown_norm_raises():
    with pytest.raises(ValueError, match="Unknown norm 'nuclear'"):
        optorth.get_norm("nuclear")
