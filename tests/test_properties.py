"""Invariants of the orthogonalization and the dualizers, on random shapes and spectra.

Property-based (hypothesis): each example draws a matrix shape from a fixed handful (so each
jitted function compiles once per shape, never per example), a seed, a spectrum (condition
number up to 1e3, the schedules' design interval) and a scale. Ground truth: exact identities
of the polar factor U Vᵀ, which Newton–Schulz inherits because it maps singular values and
keeps singular vectors:

* orthogonal equivariance  NS(Q X R) = Q NS(X) R  for orthogonal Q, R;
* scale invariance         NS(c X) = NS(X)  for c > 0 (c from 1e-20 to 1e20);
* transpose equivariance   NS(Xᵀ) = NS(X)ᵀ;
* batched = per-matrix     NS of a stack (and of a stacked leaf through ``orthogonalize``)
  is the stack of NS of each matrix;
* lmo optimality           ‖lmo(M)‖ ≤ 1 and ⟨M, lmo(M)⟩ = ‖M‖_* ≥ ⟨M, D⟩ for random D in
  the unit ball (brute force), for the spectral (SVD), Frobenius, sign, row and column norms;
* sharded = unsharded      with several devices only (see ``tests/test_sharding.py`` for the
  8-device run of every optimizer).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optorth
from optorth import MatrixSpec

SHAPES = ((8, 16), (16, 8), (12, 12), (1, 8), (8, 1))
PROPERTY = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
ATOL = 2e-3  # float32 round-off amplified by the iteration's slope at small σ (≤ ~500·1e-7·…)

ns = jax.jit(optorth.newton_schulz)


def _orthogonal(rng, k):
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.sign(np.diag(r))


@st.composite
def matrices(draw, shapes=SHAPES):
    """(X, rng): X = U diag(s) Vᵀ in float32 with σ_max/σ_min ≤ 1e3 and random U, V."""
    m, n = draw(st.sampled_from(shapes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = min(m, n)
    decades = draw(st.floats(0.0, 3.0))
    s = np.sort(10.0 ** rng.uniform(-decades, 0.0, k))[::-1]
    u, v = _orthogonal(rng, m)[:, :k], _orthogonal(rng, n)[:, :k]
    return (u * s) @ v.T, rng


def _ns(x):
    return np.asarray(ns(jnp.asarray(x, jnp.float32)), np.float64)


@PROPERTY
@given(matrices())
def test_orthogonal_equivariance(case):
    x, rng = case
    q, r = _orthogonal(rng, x.shape[0]), _orthogonal(rng, x.shape[1])
    np.testing.assert_allclose(_ns(q @ x @ r), q @ _ns(x) @ r, atol=ATOL)


@PROPERTY
@given(matrices(), st.floats(-20.0, 20.0))
def test_scale_invariance(case, log10_scale):
    x, _ = case
    np.testing.assert_allclose(_ns(x * 10.0**log10_scale), _ns(x), atol=ATOL)


@PROPERTY
@given(matrices())
def test_transpose_equivariance(case):
    x, _ = case
    np.testing.assert_allclose(_ns(x.T), _ns(x).T, atol=ATOL)


STACK_SHAPE = (3, 8, 16)
orthogonalize_stack = optorth.orthogonalize(specs={"w": MatrixSpec.stacked()})
stack_update = jax.jit(orthogonalize_stack.update)
STACK_STATE = orthogonalize_stack.init({"w": jnp.zeros(STACK_SHAPE)})


@PROPERTY
@given(st.lists(matrices(shapes=(STACK_SHAPE[1:],)), min_size=3, max_size=3))
def test_batched_equals_per_matrix(cases):
    stack = np.stack([x for x, _ in cases]).astype(np.float32)
    per_matrix = np.stack([_ns(x) for x, _ in cases])
    np.testing.assert_allclose(_ns(stack), per_matrix, atol=ATOL)
    leaf = stack_update({"w": jnp.asarray(stack)}, STACK_STATE)[0]["w"]
    np.testing.assert_allclose(np.asarray(leaf, np.float64), per_matrix, atol=ATOL)


EXACT_LMOS = {
    "spectral": optorth.ns.polar,  # the SVD polar factor (Spectral().lmo is Newton–Schulz)
    "frobenius": optorth.norms.Frobenius().lmo,
    "sign": optorth.norms.Sign().lmo,
    "row": optorth.norms.Row().lmo,
    "column": optorth.norms.Column().lmo,
}
_lmo = {name: jax.jit(fn) for name, fn in EXACT_LMOS.items()}


@pytest.mark.parametrize("name", list(EXACT_LMOS))
@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=matrices())
def test_lmo_optimality(name, case):
    m, rng = case
    norm = optorth.norms.as_norm(name)
    direction = np.asarray(_lmo[name](jnp.asarray(m[None], jnp.float32))[0], np.float64)
    primal = float(norm.primal(direction[None])[0])
    value = float(np.sum(m * direction))
    dual = float(norm.dual(jnp.asarray(m[None], jnp.float32))[0])
    assert primal <= 1 + 1e-5 and value == pytest.approx(dual, rel=1e-4)
    candidates = rng.standard_normal((256,) + m.shape)
    candidates /= np.asarray(norm.primal(jnp.asarray(candidates, jnp.float32)))[:, None, None]
    best_random = float(np.max(np.einsum("ij,bij->b", m, candidates)))
    assert value >= best_random * (1 - 1e-5)


def test_newton_schulz_is_near_the_spectral_lmo():
    """The approximate dualizer attains ≥ 0.68 of the nuclear norm (Jordan's lower band)."""
    rng = np.random.default_rng(0)
    m = rng.standard_normal((8, 16))
    value = float(np.sum(m * _ns(m)))
    assert value >= 0.68 * float(optorth.norms.Spectral().dual(jnp.asarray(m[None]))[0])


@pytest.mark.skipif(jax.device_count() < 2, reason=(
    "needs several devices; run with XLA_FLAGS=--xla_force_host_platform_device_count=8 "
    "(tests/test_sharding.py does so in a subprocess for every optimizer)"))
@PROPERTY
@given(st.lists(matrices(shapes=((8, 16),)), min_size=1, max_size=1))
def test_sharded_equals_unsharded(cases):
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    devices = jax.device_count()
    x, rng = cases[0]
    stack = np.stack([x * rng.uniform(0.5, 2.0) for _ in range(devices)]).astype(np.float32)
    mesh = jax.make_mesh((devices,), ("x",))
    sharded = jax.device_put(jnp.asarray(stack), NamedSharding(mesh, P("x", None, None)))
    out = ns(sharded)
    assert out.sharding.spec == P("x", None, None) or out.sharding.is_equivalent_to(
        sharded.sharding, 3)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ns(jnp.asarray(stack))), atol=1e-5)
