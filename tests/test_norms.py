"""The lmo property of every norm object (``optorth.norms``) against brute force, and its
``dual`` / ``primal`` norms against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optorth
from optorth.norms import AuON, Frobenius, HybridAuON, Spectral

#: One default object of every norm, by name.
NORMS = {name: cls() for name, cls in optorth.norms.NORMS.items()}

SHAPE = (3, 6, 10)  # a batch of 3 matrices, 6×10
N_DIRECTIONS = 512


def _matrices(seed=0, shape=SHAPE):
    m = np.random.default_rng(seed).standard_normal(shape)
    m *= np.array([1.0, 1e-3, 50.0])[:, None, None]  # per-matrix scales differ wildly
    return jnp.asarray(m, jnp.float32)


def _exact_lmo(name):
    """The object's lmo; for the spectral norm the SVD polar factor (``Spectral().lmo`` is
    Newton–Schulz, checked against it in test_newton_schulz_lmo_is_close_to_the_exact_one)."""
    return optorth.ns.polar if name == "spectral" else NORMS[name].lmo


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
    np.testing.assert_allclose(value, norm.dual(m), rtol=2e-5)
    assert np.all(norm.primal(direction) <= 1 + 1e-5)  # feasible: inside the unit ball

    if name == "hybrid_auon":
        # Not an lmo: the Newton–Schulz step turns the direction away from M, so only
        # feasibility in the Frobenius ball (Cauchy–Schwarz: value ≤ ‖M‖_F) holds.
        assert np.all(value <= Frobenius().dual(m) * (1 + 1e-5))
        return
    # Every other unit direction, the other norms' lmos of M included, does no better.
    candidates = _random_unit_directions(norm.primal, SHAPE)
    for k in range(SHAPE[0]):
        others = jnp.stack([_exact_lmo(o)(m[k]) for o in NORMS])
        others = others / norm.primal(others)[:, None, None]
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
        np.testing.assert_allclose(NORMS[name].dual(m), value, rtol=1e-5)
    primal = {
        "spectral": sv.max(-1),
        "frobenius": expected["frobenius"],
        "sign": np.abs(x).max((-2, -1)),
        "row": np.linalg.norm(x, axis=-1).max(-1),
        "column": np.linalg.norm(x, axis=-2).max(-1),
        "auon": expected["frobenius"],
        "hybrid_auon": expected["frobenius"],
    }
    assert set(primal) == set(NORMS)
    for name, value in primal.items():
        np.testing.assert_allclose(NORMS[name].primal(m), value, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(optorth.ns.polar(m), optorth.ns.polar_numpy(x), atol=2e-5)


def test_newton_schulz_lmo_is_close_to_the_exact_one():
    m = _matrices()
    nuclear = Spectral().dual(m)
    for schedule, tol in (("you6", 0.01), ("polar_express", 0.02)):
        lmo = Spectral(optorth.NewtonSchulz(schedule)).lmo(m)
        value = jnp.sum(m * lmo, axis=(-2, -1))
        np.testing.assert_allclose(value, nuclear, rtol=tol)
    # Jordan's table trades accuracy for slope: singular values land in about [0.68, 1.13].
    sv = np.linalg.svd(np.asarray(Spectral().lmo(m)), compute_uv=False)
    assert sv.min() > 0.6 and sv.max() < 1.2


def test_auon_cosh_factor_is_almost_one():
    """The measured fact behind AuON's docstring: r − 1 ≤ sinh²(γ)/(2N)."""
    m = _matrices(shape=(3, 16, 32))
    for gamma in (1.0, 1.5):
        r = jax.vmap(lambda a, g=gamma: _auon_r(a, g))(m)
        assert np.all(r - 1 <= np.sinh(gamma) ** 2 / (2 * 16 * 32) + 1e-7)
        frob = Frobenius().lmo(m)
        np.testing.assert_allclose(AuON(gamma=gamma).lmo(m) * r[:, None, None], frob,
                                   atol=1e-6)


def test_hybrid_auon_is_auon_of_one_newton_schulz_step():
    m = _matrices()
    one_step = optorth.newton_schulz(m, optorth.NewtonSchulz("jordan", steps=1))
    np.testing.assert_allclose(HybridAuON().lmo(m), AuON().lmo(one_step), atol=1e-6)


@pytest.mark.parametrize("name", sorted(NORMS))
def test_per_matrix_zero_safe_and_dtype_preserving(name):
    lmo = NORMS[name].lmo
    m = _matrices().at[1].set(0.0)
    batched = lmo(m)
    for k in range(SHAPE[0]):
        np.testing.assert_allclose(batched[k], lmo(m[k]), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(batched[1]) == 0)
    assert lmo(m.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_norm_objects_are_frozen_validated_and_named():
    for name, norm in NORMS.items():
        assert optorth.norms.as_norm(name) == norm and hash(norm) == hash(type(norm)())
    keller = Spectral(scale="keller")
    assert keller.scale == optorth.norms.ShapeScale("keller") and keller != Spectral()
    assert Spectral(optorth.NewtonSchulz("you")).ns.schedule == "you"
    with pytest.raises(ValueError, match=r"Expected an optorth.norms.Norm .*got 'nuclear'"):
        optorth.norms.as_norm("nuclear")
    assert AuON(1.5).gamma == 1.5 and Spectral(optorth.NewtonSchulz("you")) == Spectral("you")
    with pytest.raises(TypeError):
        Frobenius("keller")  # scale is keyword-only: Frobenius(scale="keller")
    for bad, pattern in ((lambda: AuON(gamma=0.0), "gamma must be a finite number > 0"),
                         (lambda: HybridAuON(eps=float("nan")), "eps must be a finite"),
                         (lambda: Frobenius(scale="moonlight"), "convention='moonlight'"),
                         (lambda: Spectral("jordna"), "Unknown schedule 'jordna'")):
        with pytest.raises(ValueError, match=pattern):
            bad()
