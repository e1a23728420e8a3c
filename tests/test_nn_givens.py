"""GivensLinear (GOFT / qGOFT, Ma et al., arXiv 2404.04316) against a dense NumPy construction.

The reference below builds each d x d Givens (or quasi-Givens) matrix on its own, in float64,
from the documented pairing (layer l rotates the planes (2k s, (2k+1) s), s = 2**l, among the
ceil(d / s) coordinates still active) and multiplies them as R = P_1 P_2 ... P_L.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from optorth.nn._adapter import AdapterParam
from optorth.nn._givens import GivensLinear, givens_pairs

pytestmark = pytest.mark.usefixtures("float32_matmuls")


# ----------------------------------------------------------------- NumPy reference

def reference_planes(d):
    """Layers of planes, written from the paper's Eq. 3 with the odd coordinate carried."""
    layers, layer = [], 0
    while math.ceil(d / 2 ** layer) > 1:
        s, active = 2 ** layer, math.ceil(d / 2 ** layer)
        layers.append([(2 * k * s, (2 * k + 1) * s) for k in range(active // 2)])
        layer += 1
    return layers


def reference_matrix(d, blocks):
    """R = P_1 ... P_L, each rotation a separate dense float64 matrix. ``blocks[n]`` is the
    2x2 block [[g_ii, g_ij], [g_ji, g_jj]] of the n-th rotation in layer-then-k order."""
    blocks = np.asarray(blocks, np.float64)
    result, n = np.eye(d), 0
    for layer in reference_planes(d):
        for i, j in layer:
            g = np.eye(d)
            g[i, i], g[i, j] = blocks[n, 0, 0], blocks[n, 0, 1]
            g[j, i], g[j, j] = blocks[n, 1, 0], blocks[n, 1, 1]
            result = result @ g
            n += 1
    assert n == blocks.shape[0]
    return result


def rotation_blocks(angles):
    """The paper's G(i, j; theta) on its plane: g_ii = g_jj = cos, g_ij = -sin, g_ji = sin."""
    angles = np.asarray(angles, np.float64)
    c, s = np.cos(angles), np.sin(angles)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def make_linear(d_in, d_out=6, seed=0, **kwargs):
    return nnx.Linear(d_in, d_out, rngs=nnx.Rngs(seed), **kwargs)


def random_angles(adapter, seed=1):
    angles = np.random.default_rng(seed).uniform(-np.pi, np.pi, adapter.in_features - 1)
    adapter.givens_angles[...] = jnp.asarray(angles, jnp.float32)
    return angles.astype(np.float32)


def random_blocks(adapter, seed=1, spread=0.4):
    count = adapter.in_features - 1
    blocks = np.eye(2) + spread * np.random.default_rng(seed).standard_normal((count, 2, 2))
    adapter.givens_blocks[...] = jnp.asarray(blocks, jnp.float32)
    return blocks.astype(np.float32)


# ----------------------------------------------------------------- pairing

def test_pairs_d8_are_the_papers_eq3():
    assert givens_pairs(8) == (((0, 1), (2, 3), (4, 5), (6, 7)), ((0, 2), (4, 6)), ((0, 4),))


def test_pairs_d12_carry_the_odd_coordinate():
    # 12 -> 6 active -> 3 active (8 sits out) -> 2 active -> 1.
    assert givens_pairs(12) == (((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
                                ((0, 2), (4, 6), (8, 10)), ((0, 4),), ((0, 8),))


@pytest.mark.parametrize("d", [2, 3, 5, 7, 8, 12, 48, 64, 100])
def test_pairs_structure(d):
    layers = givens_pairs(d)
    assert len(layers) == math.ceil(math.log2(d))
    assert sum(len(layer) for layer in layers) == d - 1
    for layer in layers:
        flat = [index for plane in layer for index in plane]
        assert len(flat) == len(set(flat)), "planes of one layer must be disjoint"
        assert all(0 <= index < d for index in flat)
    assert [list(layer) for layer in layers] == reference_planes(d)
    # The product touches every coordinate: rotating e_0 can reach any direction.
    touched = {index for layer in layers for plane in layer for index in plane}
    assert touched == set(range(d))


@pytest.mark.parametrize("d", [12])
def test_parameter_counts_and_types(d):
    strict, quasi = GivensLinear(make_linear(d)), GivensLinear(make_linear(d), quasi=True)
    assert strict.num_layers == math.ceil(math.log2(d))
    assert strict.givens_angles[...].shape == (d - 1,)
    assert quasi.givens_blocks[...].shape == (d - 1, 2, 2)
    for adapter in (strict, quasi):
        state = nnx.state(adapter, AdapterParam)
        names = [str(path[-1]) for path, _ in nnx.to_flat_state(state)]
        assert names and all(name.startswith("givens_") for name in names)
    assert sum(v.size for v in jax.tree.leaves(nnx.state(strict, AdapterParam))) == d - 1
    assert sum(v.size for v in jax.tree.leaves(nnx.state(quasi, AdapterParam))) == 4 * (d - 1)


# ----------------------------------------------------------------- strict (GOFT)

@pytest.mark.parametrize("d", [8, 12, 48])
def test_strict_matches_numpy(d):
    adapter = GivensLinear(make_linear(d))
    angles = random_angles(adapter, seed=d)
    expected = reference_matrix(d, rotation_blocks(angles))
    np.testing.assert_allclose(np.asarray(adapter.transform()), expected, atol=1e-5)
    x = np.random.default_rng(0).standard_normal((2, 3, d)).astype(np.float32)
    got = np.asarray(adapter.transform_inputs(jnp.asarray(x)))
    np.testing.assert_allclose(got, x.astype(np.float64) @ expected, atol=1e-5)


@pytest.mark.parametrize("d", [12, 64])
def test_strict_is_special_orthogonal(d):
    adapter = GivensLinear(make_linear(d))
    random_angles(adapter, seed=3)
    m = np.asarray(adapter.transform(), np.float64)
    assert np.abs(m.T @ m - np.eye(d)).max() <= 1e-5
    assert np.linalg.det(m) == pytest.approx(1.0, abs=1e-4)
    assert float(adapter.orthogonality_penalty()) == 0.0


def test_transform_inputs_never_forms_a_dense_matrix():
    d = 64
    adapter = GivensLinear(make_linear(d))
    random_angles(adapter)
    jaxpr = jax.make_jaxpr(adapter.transform_inputs)(jnp.ones((3, d)))
    primitives = {eqn.primitive.name for eqn in jaxpr.eqns}
    assert "dot_general" not in primitives
    sizes = [np.prod(v.aval.shape) for eqn in jaxpr.eqns for v in eqn.outvars]
    assert max(sizes) <= 4 * d  # the (d, 2, 2) blocks at most; a d x d matrix has 16 d


# ----------------------------------------------------------------- quasi (qGOFT)

@pytest.mark.parametrize("d", [12, 16])
def test_quasi_matches_numpy(d):
    adapter = GivensLinear(make_linear(d), quasi=True)
    blocks = random_blocks(adapter, seed=d)
    expected = reference_matrix(d, blocks)
    np.testing.assert_allclose(np.asarray(adapter.transform()), expected, atol=1e-5)
    x = np.random.default_rng(1).standard_normal((4, d)).astype(np.float32)
    got = np.asarray(adapter.transform_inputs(jnp.asarray(x)))
    np.testing.assert_allclose(got, x.astype(np.float64) @ expected, atol=1e-5)
    m = np.asarray(adapter.transform(), np.float64)
    assert np.abs(m.T @ m - np.eye(d)).max() > 1e-2  # really relaxed, not orthogonal


def test_quasi_penalty_matches_numpy():
    adapter = GivensLinear(make_linear(12), quasi=True)
    assert float(adapter.orthogonality_penalty()) == 0.0
    blocks = random_blocks(adapter, seed=5).astype(np.float64)
    alpha, beta = blocks[:, :, 0], blocks[:, :, 1]
    expected = np.sum(np.sum(alpha * beta, axis=1) ** 2)
    assert float(adapter.orthogonality_penalty()) == pytest.approx(expected, rel=1e-5)
    assert expected > 1e-3


def test_quasi_at_rotation_blocks_equals_strict():
    d = 12
    strict = GivensLinear(make_linear(d))
    quasi = GivensLinear(make_linear(d), quasi=True)
    np.testing.assert_array_equal(np.asarray(quasi.transform()), np.asarray(strict.transform()))
    angles = random_angles(strict, seed=7)
    quasi.givens_blocks[...] = jnp.asarray(rotation_blocks(angles), jnp.float32)
    np.testing.assert_allclose(np.asarray(quasi.transform()), np.asarray(strict.transform()),
                               atol=1e-6)
    assert float(quasi.orthogonality_penalty()) < 1e-10


# ----------------------------------------------------------------- identity, merge, jit

@pytest.mark.parametrize("quasi", [False, True])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("use_bias", [True, False])
def test_identity_at_init_bit_for_bit(quasi, dtype, use_bias):
    base = make_linear(12, dtype=dtype, param_dtype=dtype, use_bias=use_bias)
    adapter = GivensLinear(base, quasi=quasi)
    x = jax.random.normal(jax.random.key(0), (5, 12)).astype(dtype)
    np.testing.assert_array_equal(np.asarray(adapter.transform_inputs(x)), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(adapter(x)), np.asarray(base(x)))
    np.testing.assert_array_equal(np.asarray(adapter.transform()), np.eye(12))


@pytest.mark.parametrize("quasi", [False, True])
def test_merge_equals_rotated_kernel(quasi):
    d = 12
    base = make_linear(d)
    adapter = GivensLinear(base, quasi=quasi)
    blocks = random_blocks(adapter) if quasi else rotation_blocks(random_angles(adapter))
    expected = reference_matrix(d, blocks) @ np.asarray(base.kernel[...], np.float64)
    merged = adapter.merge()
    assert isinstance(merged, nnx.Linear) and isinstance(merged.kernel, nnx.Param)
    np.testing.assert_allclose(np.asarray(merged.kernel[...]), expected, atol=1e-5)
    x = jax.random.normal(jax.random.key(2), (3, d))
    np.testing.assert_allclose(np.asarray(merged(x)), np.asarray(adapter(x)), atol=1e-5)


@pytest.mark.parametrize("quasi", [False, True])
def test_jit_and_grad_reach_the_adapter(quasi):
    d = 12
    adapter = GivensLinear(make_linear(d), quasi=quasi)
    x = jax.random.normal(jax.random.key(3), (8, d))
    target = jax.random.normal(jax.random.key(4), (8, 6))

    @nnx.jit
    def loss_and_grad(model):
        def loss(m):
            return jnp.mean((m(x) - target) ** 2) + 0.01 * m.orthogonality_penalty()
        return nnx.value_and_grad(loss, argnums=nnx.DiffState(0, AdapterParam))(model)

    value, grads = loss_and_grad(adapter)
    assert np.isfinite(float(value))
    leaves = jax.tree.leaves(grads)
    assert len(leaves) == 1
    g = np.asarray(leaves[0])
    assert g.shape == ((d - 1, 2, 2) if quasi else (d - 1,))
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-4


def test_bfloat16_inputs_and_kernel():
    d = 48
    base = make_linear(d, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    adapter = GivensLinear(base)
    angles = random_angles(adapter)
    assert adapter.givens_angles[...].dtype == jnp.float32
    x = jax.random.normal(jax.random.key(5), (4, d)).astype(jnp.bfloat16)
    rotated = adapter.transform_inputs(x)
    assert rotated.dtype == jnp.bfloat16 and adapter(x).dtype == jnp.bfloat16
    expected = np.asarray(x, np.float64) @ reference_matrix(d, rotation_blocks(angles))
    np.testing.assert_allclose(np.asarray(rotated, np.float64), expected, atol=3e-2)
    assert adapter.merge().kernel[...].dtype == jnp.bfloat16


# ----------------------------------------------------------------- bad input

def test_rejects_a_single_feature():
    with pytest.raises(ValueError, match=r"GivensLinear: in_features=1 .*in_features >= 2"):
        GivensLinear(make_linear(1))


@pytest.mark.parametrize("quasi", ["yes", 1, None])
def test_rejects_non_bool_quasi(quasi):
    with pytest.raises(ValueError, match="GivensLinear: quasi must be True or False"):
        GivensLinear(make_linear(8), quasi=quasi)


def test_rejects_non_linear_base():
    conv = nnx.Conv(4, 4, kernel_size=(3,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="GivensLinear: expected an nnx.Linear"):
        GivensLinear(conv)


@pytest.mark.parametrize("d", [1, 0, 2.0, True])
def test_givens_pairs_rejects_bad_width(d):
    with pytest.raises(ValueError, match="givens_pairs: d"):
        givens_pairs(d)
