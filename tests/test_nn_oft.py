"""OFTLinear (OFTv2, Qiu et al., "Orthogonal Finetuning Made Scalable", arXiv 2506.19847)
against a float64 NumPy construction written here: packed vector → skew blocks → truncated
Neumann series (or the exact Cayley inverse) → block-diagonal ``R``; forward ``x R W + b``.

The Cayley–Neumann deviation from orthogonality is compared with its closed form: for a skew
``Q`` with eigenvalues ``iλ`` and ``R_k = (I + Q)(I + Q + … + Q^k)``,
``‖R_kᵀR_k − I‖₂ = max_λ | |1 − (iλ)^{k+1}|² − 1 | ≤ 2q^{k+1} + q^{2(k+1)}`` (``q = ‖Q‖₂``), and
``‖R − R_k‖₂ = q^{k+1}`` for the exact Cayley transform ``R``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from optorth.nn._adapter import AdapterParam, Frozen
from optorth.nn._oft import OFTLinear

pytestmark = pytest.mark.usefixtures("float32_matmuls")

TOL = dict(rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- NumPy reference
def np_skew(packed: np.ndarray, b: int) -> np.ndarray:
    """Skew-symmetric b × b matrix from its strictly upper triangle, row by row."""
    q = np.zeros((b, b))
    pos = 0
    for i in range(b):
        for j in range(i + 1, b):
            q[i, j], q[j, i] = packed[pos], -packed[pos]
            pos += 1
    assert pos == len(packed)
    return q


def np_rotation(q: np.ndarray, terms: int, exact: bool) -> np.ndarray:
    eye = np.eye(len(q))
    if exact:
        return (eye + q) @ np.linalg.inv(eye - q)
    return (eye + q) @ sum(np.linalg.matrix_power(q, i) for i in range(terms + 1))


def np_dense_r(skew_params: np.ndarray, b: int, terms: int, exact: bool = False) -> np.ndarray:
    r = len(skew_params)
    dense = np.zeros((r * b, r * b))
    for i, packed in enumerate(np.asarray(skew_params, np.float64)):
        dense[i * b:(i + 1) * b, i * b:(i + 1) * b] = np_rotation(np_skew(packed, b), terms, exact)
    return dense


def closed_form_deviation(q: np.ndarray, terms: int) -> float:
    lam = np.linalg.eigvals(q).imag
    z = (1j * lam) ** (terms + 1)
    return float(np.max(np.abs(np.abs(1 - z) ** 2 - 1)))


# ----------------------------------------------------------------------------- helpers
def make(in_features=12, out_features=8, *, use_bias=True, seed=0, **kwargs):
    base = nnx.Linear(in_features, out_features, use_bias=use_bias, rngs=nnx.Rngs(seed))
    if use_bias:  # a nonzero bias, so that forgetting it would show
        base.bias[...] = jax.random.normal(jax.random.key(seed + 7), (out_features,))
    return base, OFTLinear(base, **kwargs)


def randomize(layer: OFTLinear, scale: float = 0.3, seed: int = 1) -> np.ndarray:
    value = scale * jax.random.normal(jax.random.key(seed), layer.oft_skew.shape)
    layer.oft_skew[...] = value
    return np.asarray(value, np.float64)


def inputs(shape, seed=3, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape).astype(dtype)


def skew_with_norm(b: int, norm: float, seed: int) -> np.ndarray:
    """A packed vector whose skew matrix has spectral norm ``norm``."""
    packed = np.random.default_rng(seed).standard_normal(b * (b - 1) // 2)
    return packed * norm / np.linalg.norm(np_skew(packed, b), 2)


# ----------------------------------------------------------------------------- construction
@pytest.mark.parametrize("in_features,block_size,terms,exact",
                         [(12, 4, 5, False), (12, 6, 2, False), (16, 16, 1, False),
                          (12, 3, 5, True), (16, 8, 3, True)])
def test_transform_and_inputs_match_numpy(in_features, block_size, terms, exact):
    _, layer = make(in_features, block_size=block_size, neumann_terms=terms, exact=exact)
    skew = randomize(layer)
    assert layer.oft_skew.shape == (in_features // block_size,
                                    block_size * (block_size - 1) // 2)
    expected = np_dense_r(skew, block_size, terms, exact)
    np.testing.assert_allclose(layer.transform(), expected, **TOL)
    x = inputs((2, 3, in_features))
    np.testing.assert_allclose(layer.transform_inputs(x), np.asarray(x, np.float64) @ expected,
                               **TOL)
    blocks = layer.rotation_blocks()
    assert blocks.shape == (in_features // block_size, block_size, block_size)


@pytest.mark.parametrize("use_bias", [True, False])
def test_forward_is_x_times_rw_plus_b(use_bias):
    base, layer = make(16, 8, use_bias=use_bias, block_size=4, neumann_terms=3)
    skew = randomize(layer, 0.4)
    kernel = np.asarray(base.kernel[...], np.float64)
    bias = np.asarray(base.bias[...], np.float64) if use_bias else 0.0
    x = inputs((5, 16))
    expected = np.asarray(x, np.float64) @ (np_dense_r(skew, 4, 3) @ kernel) + bias
    np.testing.assert_allclose(layer(x), expected, **TOL)
    np.testing.assert_allclose(layer.weight_centric_call(x), expected, **TOL)
    np.testing.assert_allclose(layer.weight_centric_call(x, dense=True), expected, **TOL)


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("use_bias", [True, False])
def test_identity_at_init_bit_for_bit(exact, use_bias):
    base, layer = make(12, 8, use_bias=use_bias, block_size=4, exact=exact)
    x = inputs((2, 3, 12))
    assert not np.any(np.asarray(layer.oft_skew[...]))
    np.testing.assert_array_equal(layer(x), base(x))
    np.testing.assert_array_equal(layer.transform_inputs(x), x)
    np.testing.assert_array_equal(layer.transform(), np.eye(12))
    assert float(layer.orthogonality_error()) == 0.0


def test_merge_kernel_is_r_times_w():
    base, layer = make(12, 8, block_size=6, neumann_terms=4)
    skew = randomize(layer, 0.5)
    merged = layer.merge()
    assert type(merged) is nnx.Linear and type(merged.kernel) is nnx.Param
    expected = np_dense_r(skew, 6, 4) @ np.asarray(base.kernel[...], np.float64)
    np.testing.assert_allclose(merged.kernel[...], expected, **TOL)
    x = inputs((4, 12))
    np.testing.assert_allclose(merged(x), layer(x), **TOL)


def test_only_oft_skew_is_trainable_and_base_is_frozen():
    _, layer = make(12, 8, block_size=4)
    trainable = nnx.state(layer, AdapterParam)
    assert [str(p[-1]) for p, _ in nnx.to_flat_state(trainable)] == ["oft_skew"]
    assert isinstance(layer.base.kernel, Frozen) and isinstance(layer.base.bias, Frozen)
    assert not nnx.to_flat_state(nnx.state(layer.base, nnx.Param))


# ----------------------------------------------------------------------------- training
def test_jit_grad_matches_first_order_reference():
    """At Q = 0, R = I + 2Q + O(Q²), so for L = Σ c ⊙ y the gradient on the packed entry
    (i, j) of block s is 2 Σ_batch (x_i g_j − x_j g_i) with g = c Wᵀ restricted to block s."""
    base, layer = make(12, 8, block_size=4, neumann_terms=5)
    x, c = inputs((6, 12), seed=4), inputs((6, 8), seed=5)

    @nnx.jit
    def loss_and_grad(model, x, c):
        diff = nnx.DiffState(0, AdapterParam)
        return nnx.value_and_grad(lambda m: jnp.sum(m(x) * c), argnums=diff)(model)

    loss, grads = loss_and_grad(layer, x, c)
    got = np.asarray(grads.oft_skew[...])
    g = np.asarray(c, np.float64) @ np.asarray(base.kernel[...], np.float64).T
    xs = np.asarray(x, np.float64)
    expected = np.zeros_like(got, dtype=np.float64)
    for s in range(3):
        rows, cols = np.triu_indices(4, k=1)
        xi, gi = xs[:, 4 * s:4 * s + 4], g[:, 4 * s:4 * s + 4]
        expected[s] = 2 * (xi[:, rows] * gi[:, cols] - xi[:, cols] * gi[:, rows]).sum(0)
    assert np.abs(got).max() > 1e-2
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(loss, np.sum(np.asarray(base(x)) * np.asarray(c)), rtol=1e-6)


def test_optimizer_steps_reduce_loss_and_keep_base():
    base, layer = make(12, 8, block_size=4)
    kernel_before = np.asarray(layer.base.kernel[...])
    x = inputs((16, 12), seed=6)
    target = x @ jnp.asarray(np.linalg.qr(np.random.default_rng(0).standard_normal((12, 12)))[0]
                             .astype(np.float32)) @ base.kernel[...]
    import optax

    opt = nnx.Optimizer(layer, optax.adam(1e-2), wrt=AdapterParam)

    @nnx.jit
    def step(model, opt):
        loss, grads = nnx.value_and_grad(
            lambda m: jnp.mean((m(x) - target) ** 2), argnums=nnx.DiffState(0, AdapterParam))(model)
        opt.update(model, grads)
        return loss

    losses = [float(step(layer, opt)) for _ in range(30)]
    assert losses[-1] < 0.9 * losses[0]
    np.testing.assert_array_equal(layer.base.kernel[...], kernel_before)


# ----------------------------------------------------------------------------- dtypes
def test_bfloat16_inputs_and_kernel():
    base = nnx.Linear(16, 8, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    layer = OFTLinear(base, block_size=8, neumann_terms=4)
    assert layer.oft_skew[...].dtype == jnp.float32
    x = inputs((3, 16), dtype=jnp.bfloat16)
    out0 = layer(x)
    assert out0.dtype == jnp.bfloat16 and layer.transform_inputs(x).dtype == jnp.bfloat16
    np.testing.assert_array_equal(out0, base(x))
    skew = randomize(layer, 0.2)
    expected = (np.asarray(x, np.float64) @ np_dense_r(skew, 8, 4)
                @ np.asarray(base.kernel[...], np.float64) + np.asarray(base.bias[...], np.float64))
    scale = np.abs(expected).max()
    np.testing.assert_allclose(np.asarray(layer(x), np.float64), expected, atol=3e-2 * scale)
    np.testing.assert_allclose(np.asarray(layer.weight_centric_call(x), np.float64), expected,
                               atol=3e-2 * scale)
    np.testing.assert_allclose(np.asarray(layer.merge().kernel[...], np.float64),
                               np_dense_r(skew, 8, 4) @ np.asarray(base.kernel[...], np.float64),
                               atol=1e-2)


# ----------------------------------------------------------------------------- orthogonality
def test_neumann_deviation_equals_closed_form_and_respects_bounds():
    """Measured ‖RᵀR − I‖₂ vs k for several ‖Q‖: the closed form to float32 round-off, never
    above 2q^{k+1} + q^{2(k+1)}; the exact Cayley map differs by exactly q^{k+1} (below the
    generic Neumann tail bound √(1+q²) q^{k+1}/(1−q))."""
    b = 8
    exact = OFTLinear(nnx.Linear(b, 4, rngs=nnx.Rngs(0)), block_size=b, exact=True)
    for q_norm in (0.1, 0.3, 0.6, 0.9):
        packed = skew_with_norm(b, q_norm, seed=int(q_norm * 10))
        exact.oft_skew[...] = packed[None].astype(np.float32)
        exact_r = np.asarray(exact.rotation_blocks()[0], np.float64)
        assert float(exact.orthogonality_error()) < 2e-6
        q = np_skew(packed, b)
        for k in range(1, 9):
            layer = OFTLinear(nnx.Linear(b, 4, rngs=nnx.Rngs(0)), block_size=b, neumann_terms=k)
            layer.oft_skew[...] = packed[None].astype(np.float32)
            measured = float(layer.orthogonality_error())
            closed = closed_form_deviation(q, k)
            bound = 2 * q_norm ** (k + 1) + q_norm ** (2 * (k + 1))
            assert abs(measured - closed) <= 2e-6 + 1e-4 * closed, (q_norm, k, measured, closed)
            assert measured <= bound + 2e-6, (q_norm, k, measured, bound)
            gap = np.linalg.norm(exact_r - np.asarray(layer.rotation_blocks()[0]), 2)
            assert abs(gap - q_norm ** (k + 1)) <= 2e-6 + 1e-4 * q_norm ** (k + 1)
            assert gap <= np.sqrt(1 + q_norm ** 2) * q_norm ** (k + 1) / (1 - q_norm) + 2e-6


def test_closed_form_parity_pattern():
    """For q < 1 with t = q^{k+1}: t² for even k, 2t + t² (the bound) for k ≡ 1 mod 4,
    2t − t² for k ≡ 3 mod 4 (so k = 4 is far closer to orthogonal than k = 5)."""
    q_norm, b = 0.6, 8
    q = np_skew(skew_with_norm(b, q_norm, seed=2), b)
    for k in range(1, 9):
        t = q_norm ** (k + 1)
        expected = {0: t * t, 1: 2 * t + t * t, 3: 2 * t - t * t}[k % 4 if k % 2 else 0]
        np.testing.assert_allclose(closed_form_deviation(q, k), expected, rtol=1e-6)


def test_orthogonality_error_is_max_over_blocks():
    b = 6
    layer = OFTLinear(nnx.Linear(2 * b, 4, rngs=nnx.Rngs(0)), block_size=b, neumann_terms=1)
    small, large = skew_with_norm(b, 0.2, 1), skew_with_norm(b, 0.5, 2)
    layer.oft_skew[...] = np.stack([small, large]).astype(np.float32)
    expected = closed_form_deviation(np_skew(large, b), 1)
    np.testing.assert_allclose(float(layer.orthogonality_error()), expected, rtol=1e-4)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,match", [
    (dict(block_size=5), r"OFTLinear: block_size=5 does not divide in_features=12; choose a "
                         r"divisor such as 4 or 6"),
    (dict(block_size=1), r"block_size=1 gives 1 × 1 blocks.*block_size >= 2"),
    (dict(block_size=24), r"block_size=24 exceeds in_features 12"),
    (dict(block_size=0), r"block_size must be a positive int; got 0"),
    (dict(block_size=4.0), r"block_size must be a positive int; got 4.0"),
    (dict(block_size=True), r"block_size must be a positive int; got True"),
    (dict(block_size=4, neumann_terms=0), r"OFTLinear: neumann_terms must be a positive int"),
    (dict(block_size=4, neumann_terms=2.5), r"neumann_terms must be a positive int; got 2.5"),
    (dict(block_size=4, exact="yes"), r"OFTLinear: exact must be True or False; got 'yes'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OFTLinear(nnx.Linear(12, 8, rngs=nnx.Rngs(0)), **kwargs)


def test_prime_width_suggests_itself():
    with pytest.raises(ValueError, match=r"block_size=4 does not divide in_features=13; "
                                         r"choose a divisor such as 13"):
        OFTLinear(nnx.Linear(13, 8, rngs=nnx.Rngs(0)), block_size=4)


def test_bad_base_and_inputs():
    with pytest.raises(ValueError, match=r"OFTLinear: expected an nnx.Linear to adapt, got Conv"):
        OFTLinear(nnx.Conv(4, 4, kernel_size=(3,), rngs=nnx.Rngs(0)), block_size=2)
    _, layer = make(12, 8, block_size=4)
    with pytest.raises(ValueError, match=r"OFTLinear: inputs have 10 features.*takes 12"):
        layer(jnp.ones((2, 10)))
    with pytest.raises(ValueError, match=r"OFTLinear: inputs have 10 features.*takes 12"):
        layer.transform_inputs(jnp.ones((2, 10)))
    with pytest.raises(ValueError, match=r"OFTLinear: inputs have 10 features.*takes 12"):
        layer.weight_centric_call(jnp.ones((2, 10)))
    with pytest.raises(ValueError, match=r"dense must be True or False"):
        layer.weight_centric_call(jnp.ones((2, 12)), dense=1)
