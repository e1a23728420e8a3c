"""HRALinear (Householder reflection adaptation, Yuan et al., arXiv 2405.17484) against
independent float64 NumPy constructions: the product of reflections, its compact WY form
(Schreiber & Van Loan 1989), the rank of ``H - I``, and the orthogonality regularizer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from optorth.nn._adapter import AdapterParam, Frozen
from optorth.nn._hra import HRALinear

pytestmark = pytest.mark.usefixtures("float32_matmuls")


def _units(vectors):
    vectors = np.asarray(vectors, np.float64)
    return vectors / np.linalg.norm(vectors, axis=0)


def _numpy_product(vectors):
    """H = H_1 H_2 ⋯ H_r with H_i = I - 2 u_i u_iᵀ / ‖u_i‖², in float64."""
    units = _units(vectors)
    product = np.eye(units.shape[0])
    for u in units.T:
        product = product @ (np.eye(units.shape[0]) - 2.0 * np.outer(u, u))
    return product


def _layer(d, out, rank, seed=0, random_vectors=True, **linear):
    base = nnx.Linear(d, out, rngs=nnx.Rngs(seed), **linear)
    layer = HRALinear(base, rank=rank, rngs=nnx.Rngs(seed + 1))
    if random_vectors:  # independent (unpaired) vectors of uneven norms
        vectors = jax.random.normal(jax.random.key(seed + 2), (d, rank))
        layer.hra_vectors[...] = vectors * jnp.linspace(0.3, 3.0, rank)
    return base, layer


def test_transform_and_inputs_match_the_numpy_product_in_the_documented_order():
    base, layer = _layer(16, 8, 4)
    reference = _numpy_product(layer.hra_vectors[...])
    x = np.asarray(jax.random.normal(jax.random.key(7), (2, 3, 16)))
    dense = np.asarray(layer.transform())
    np.testing.assert_allclose(dense, reference, atol=1e-5)
    np.testing.assert_allclose(np.asarray(layer.transform_inputs(x)), x @ reference, atol=1e-5)
    # the order matters: H_r ⋯ H_1 is another matrix
    reverse = _numpy_product(np.asarray(layer.hra_vectors[...])[:, ::-1])
    assert np.abs(dense - reverse).max() > 0.1
    kernel = np.asarray(base.kernel[...], np.float64)
    np.testing.assert_allclose(np.asarray(layer(x)),
                               x @ reference @ kernel + np.asarray(base.bias[...]), atol=1e-5)


@pytest.mark.parametrize("pair", ["small_b", "small_a", "large_a", "large_b", "opposite",
                                  "parallel"])
def test_pairs_of_very_different_norms_or_shared_directions(pair):
    """Each pair is applied as one step built from b - a; no norm ratio or direction loses
    accuracy (a pair with b = ±c a is the identity)."""
    d, rank = 16, 4
    _, layer = _layer(d, 8, rank, seed=11)
    vectors = np.asarray(layer.hra_vectors[...]).copy()
    a = vectors[:, 0]
    vectors[:, 1] = {"small_b": 1e-4 * vectors[:, 1], "small_a": vectors[:, 1],
                     "large_a": vectors[:, 1], "large_b": 1e3 * vectors[:, 1],
                     "opposite": -a, "parallel": 3.0 * a}[pair]
    vectors[:, 0] = {"small_a": 1e-4 * a, "large_a": 1e3 * a}.get(pair, a)
    layer.hra_vectors[...] = jnp.asarray(vectors)
    np.testing.assert_allclose(np.asarray(layer.transform()), _numpy_product(vectors),
                               atol=1e-5)


def test_random_vectors_give_an_orthogonal_matrix_at_float32_round_off():
    _, layer = _layer(64, 8, 8, seed=3)
    dense = np.asarray(layer.transform(), np.float64)
    error = np.abs(dense.T @ dense - np.eye(64)).max()
    assert error <= 1e-5, error
    assert np.abs(dense - np.eye(64)).max() > 0.1  # a real rotation, not the identity


@pytest.mark.parametrize("d, out, rank", [(8, 4, 2), (16, 8, 4), (9, 5, 8)])
def test_the_layer_starts_at_the_identity_bit_for_bit(d, out, rank):
    base, layer = _layer(d, out, rank, random_vectors=False)
    vectors = np.asarray(layer.hra_vectors[...])
    assert vectors.dtype == np.float32 and vectors.shape == (d, rank)
    np.testing.assert_array_equal(vectors[:, 0::2], vectors[:, 1::2])  # equal pairs
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=0), 1.0, rtol=1e-6)
    assert np.linalg.matrix_rank(vectors[:, 0::2]) == rank // 2  # distinct directions
    x = jax.random.normal(jax.random.key(5), (2, 3, d))
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(base(x)))
    jitted = nnx.jit(lambda model, x: model(x))(layer, x)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(base(x)))
    np.testing.assert_array_equal(np.asarray(layer.transform()), np.eye(d))
    np.testing.assert_array_equal(np.asarray(layer.merge().kernel[...]),
                                  np.asarray(base.kernel[...]))


def test_merge_is_H_times_the_frozen_kernel():
    base, layer = _layer(16, 8, 4, seed=4)
    merged = layer.merge()
    assert type(merged) is nnx.Linear and type(merged.kernel) is nnx.Param
    expected = _numpy_product(layer.hra_vectors[...]) @ np.asarray(base.kernel[...], np.float64)
    np.testing.assert_allclose(np.asarray(merged.kernel[...]), expected, atol=1e-5)
    x = jax.random.normal(jax.random.key(1), (5, 16))
    np.testing.assert_allclose(np.asarray(merged(x)), np.asarray(layer(x)), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(base.kernel[...]),
                                  np.asarray(layer.base.kernel[...]))  # base untouched


def test_H_minus_identity_has_rank_r_so_HW_is_a_rank_r_update_of_W():
    d, out, rank = 16, 8, 4
    base, layer = _layer(d, out, rank, seed=5)
    reference = np.linalg.svd(_numpy_product(layer.hra_vectors[...]) - np.eye(d),
                              compute_uv=False)
    assert reference[rank - 1] > 0.1 and reference[rank] < 1e-12, reference
    ours = np.linalg.svd(np.asarray(layer.transform(), np.float64) - np.eye(d),
                         compute_uv=False)
    assert ours[rank - 1] > 0.1 and ours[rank] < 1e-5, ours
    kernel = np.asarray(base.kernel[...], np.float64)
    update = np.asarray(layer.adapted_kernel(), np.float64) - kernel  # (H - I) W
    singular = np.linalg.svd(update, compute_uv=False)
    assert singular[rank - 1] > 1e-2 * singular[0] and singular[rank] < 1e-5, singular


def test_compact_wy_form_with_an_upper_triangular_T():
    """H_1 ⋯ H_r = I - Û T Ûᵀ with T⁻¹ = ½ I + strict_upper(ÛᵀÛ) for unit vectors
    (Schreiber & Van Loan, "A storage-efficient WY representation for products of Householder
    transformations", 1989; Joffrain et al. 2006 for the closed form of T⁻¹)."""
    d, rank = 16, 4
    _, layer = _layer(d, 8, rank, seed=6)
    units = _units(layer.hra_vectors[...])
    t = np.linalg.inv(0.5 * np.eye(rank) + np.triu(units.T @ units, 1))
    assert np.abs(np.tril(t, -1)).max() < 1e-12
    wy = np.eye(d) - units @ t @ units.T
    np.testing.assert_allclose(wy, _numpy_product(layer.hra_vectors[...]), atol=1e-12)
    np.testing.assert_allclose(np.asarray(layer.transform()), wy, atol=1e-5)


def test_orthogonality_penalty_against_numpy_and_zero_for_orthonormal_vectors():
    d, rank = 16, 4
    _, layer = _layer(d, 8, rank, seed=8)
    units = _units(layer.hra_vectors[...])
    expected = np.sum((np.eye(rank) - units.T @ units) ** 2)
    penalty = layer.orthogonality_penalty()
    assert penalty.shape == () and penalty.dtype == jnp.float32
    np.testing.assert_allclose(float(penalty), expected, rtol=1e-5)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(d, rank)))
    layer.hra_vectors[...] = jnp.asarray(q * np.linspace(0.5, 4.0, rank), jnp.float32)
    assert float(layer.orthogonality_penalty()) < 1e-10
    _, paired = _layer(d, 8, rank, random_vectors=False)
    units = _units(paired.hra_vectors[...])
    at_init = np.sum((np.eye(rank) - units.T @ units) ** 2)
    np.testing.assert_allclose(float(paired.orthogonality_penalty()), at_init, rtol=1e-5)
    assert at_init >= rank - 1e-5


@pytest.mark.parametrize("zero", [1, 2])  # second or first vector of a pair
def test_a_zero_vector_gives_no_reflection_and_no_nan(zero):
    d, rank = 16, 4
    _, layer = _layer(d, 8, rank, seed=9)
    vectors = np.asarray(layer.hra_vectors[...]).copy()
    vectors[:, zero] = 0.0
    layer.hra_vectors[...] = jnp.asarray(vectors)
    expected = _numpy_product(np.delete(vectors, zero, axis=1))  # H_zero = I
    np.testing.assert_allclose(np.asarray(layer.transform()), expected, atol=1e-5)

    def loss(model, x):
        return jnp.sum(model(x) ** 2) + model.orthogonality_penalty()

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, AdapterParam))(
        layer, jnp.ones((3, d)))
    assert np.isfinite(np.asarray(grads["hra_vectors"][...])).all()
    assert np.isfinite(float(layer.orthogonality_penalty()))


@pytest.mark.parametrize("paired", [True, False])
def test_gradient_matches_numpy_finite_differences(paired):
    d, out, rank = 16, 8, 4
    base, layer = _layer(d, out, rank, seed=12, random_vectors=not paired)
    rng = np.random.default_rng(1)
    x, weights = rng.normal(size=(6, d)), rng.normal(size=(6, d))

    def loss(model):
        return jnp.sum(jnp.asarray(weights, jnp.float32)
                       * model.transform_inputs(jnp.asarray(x, jnp.float32)))

    grad = nnx.grad(loss, argnums=nnx.DiffState(0, AdapterParam))(layer)
    grad = np.asarray(grad["hra_vectors"][...], np.float64)
    vectors = np.asarray(layer.hra_vectors[...], np.float64)
    expected = np.zeros_like(vectors)
    for index in np.ndindex(*vectors.shape):  # central differences of the float64 product
        bump = np.zeros_like(vectors)
        bump[index] = 1e-6
        expected[index] = np.sum(weights * (x @ (_numpy_product(vectors + bump)
                                                 - _numpy_product(vectors - bump)))) / 2e-6
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(grad, expected, atol=1e-4 * np.abs(expected).max())


def test_jit_grad_at_the_paired_start_is_nonzero_and_opposite_within_each_pair():
    d, out, rank = 16, 8, 4
    base, layer = _layer(d, out, rank, random_vectors=False)
    x = jax.random.normal(jax.random.key(3), (32, d))
    target = jax.random.normal(jax.random.key(4), (32, out))

    def loss(model, x, target):
        return jnp.mean((model(x) - target) ** 2)

    @nnx.jit
    def step(model, optimizer, x, target):
        value, grads = nnx.value_and_grad(loss, argnums=nnx.DiffState(0, AdapterParam))(
            model, x, target)
        optimizer.update(model, grads)
        return value, grads

    optimizer = nnx.Optimizer(layer, optax.sgd(0.1), wrt=AdapterParam)
    first, grads = step(layer, optimizer, x, target)
    grad = np.asarray(grads["hra_vectors"][...])
    assert set(grads.keys()) == {"hra_vectors"}  # the frozen base gets no gradient
    # each reflection of a pair moves: d(H_a H_a) = dH_a H_a + H_a dH_a, the two terms opposite
    assert np.abs(grad).max() > 1e-3, grad
    np.testing.assert_allclose(grad[:, 0::2], -grad[:, 1::2], atol=1e-6)
    for _ in range(5):
        value, _ = step(layer, optimizer, x, target)
    assert float(value) < float(first)
    np.testing.assert_array_equal(np.asarray(layer.base.kernel[...]),
                                  np.asarray(base.kernel[...]))
    dense = np.asarray(layer.transform(), np.float64)
    assert np.abs(dense.T @ dense - np.eye(d)).max() <= 1e-5


def test_bfloat16_inputs_and_kernel():
    d, out, rank = 16, 8, 4
    base, layer = _layer(d, out, rank, random_vectors=False, dtype=jnp.bfloat16,
                         param_dtype=jnp.bfloat16)
    assert layer.hra_vectors[...].dtype == jnp.float32
    x = jax.random.normal(jax.random.key(2), (4, d), jnp.bfloat16)
    assert layer.transform_inputs(x).dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(layer(x), np.float32),
                                  np.asarray(base(x), np.float32))
    layer.hra_vectors[...] = jax.random.normal(jax.random.key(8), (d, rank))
    y = layer(x)
    assert y.dtype == jnp.bfloat16
    kernel = np.asarray(base.kernel[...], np.float64)
    expected = np.asarray(x, np.float64) @ _numpy_product(layer.hra_vectors[...]) @ kernel
    np.testing.assert_allclose(np.asarray(y, np.float64), expected, atol=5e-2 * np.abs(
        expected).max())
    assert layer.merge().kernel[...].dtype == jnp.bfloat16


def test_only_the_vectors_are_trainable():
    _, layer = _layer(8, 4, 2, random_vectors=False)
    assert isinstance(layer.base.kernel, Frozen) and isinstance(layer.base.bias, Frozen)
    params = nnx.state(layer, nnx.Param)
    assert [path for path, _ in nnx.to_flat_state(params)] == [("hra_vectors",)]


@pytest.mark.parametrize("rank, d, match", [
    (3, 8, r"rank=3 is odd.*even rank; use rank=2 or rank=4"),
    (1, 8, r"rank=1 is odd.*use rank=2"),
    (9, 8, r"rank=9 is odd.*use rank=8"),
    (10, 8, r"rank=10 exceeds in_features=8 \(r > d\).*even rank <= 8"),
    (0, 8, r"rank must be a positive int; got 0"),
    (2.0, 8, r"rank must be a positive int; got 2.0"),
    (True, 8, r"rank must be a positive int; got True"),
    ("4", 8, r"rank must be a positive int; got '4'"),
    (2, 1, r"in_features=1.*needs in_features >= 2"),
])
def test_bad_rank(rank, d, match):
    with pytest.raises(ValueError, match=match):
        HRALinear(nnx.Linear(d, 4, rngs=nnx.Rngs(0)), rank=rank, rngs=nnx.Rngs(0))


def test_bad_base_rngs_and_inputs():
    with pytest.raises(ValueError, match=r"HRALinear: expected an nnx.Linear.*got Conv"):
        HRALinear(nnx.Conv(8, 4, (3,), rngs=nnx.Rngs(0)), rank=2, rngs=nnx.Rngs(0))
    _, layer = _layer(8, 4, 2, random_vectors=False)
    with pytest.raises(ValueError, match=r"HRALinear: this nnx.Linear is already frozen"):
        HRALinear(layer.base, rank=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"HRALinear: rngs must be an nnx.Rngs, got int"):
        HRALinear(nnx.Linear(8, 4, rngs=nnx.Rngs(0)), rank=2, rngs=0)
    with pytest.raises(ValueError, match=r"HRALinear: inputs have 6 features.*takes 8"):
        layer(jnp.ones((2, 6)))
