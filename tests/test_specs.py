"""MatrixSpec: conversions against manual reshapes, exact inverses, errors, hashing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optorth.matrices import MatrixSpec, map_matrices


def _arange(shape):
    return jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)


def test_dense_default_is_one_matrix():
    x = _arange((4, 6))
    spec = MatrixSpec()
    assert spec == MatrixSpec.dense() == MatrixSpec((0,), (1,))
    np.testing.assert_array_equal(spec.to_matrices(x), x[None])
    assert spec.matrix_shape(x.shape) == (1, 4, 6)
    assert (spec.fan_in(x.shape), spec.fan_out(x.shape), spec.num_matrices(x.shape)) == (4, 6, 1)


def test_stacked_layers_are_separate_matrices():
    x = _arange((3, 4, 6))
    mats = MatrixSpec.stacked().to_matrices(x)
    for layer in range(3):
        np.testing.assert_array_equal(mats[layer], x[layer])
    assert MatrixSpec.stacked(2).matrix_shape((2, 3, 4, 6)) == (6, 4, 6)


def test_conv_kernel_matches_manual_flattening():
    x = _arange((3, 3, 2, 5))  # Flax (kh, kw, cin, cout)
    mats = MatrixSpec.conv().to_matrices(x)
    np.testing.assert_array_equal(mats[0], x.reshape(3 * 3 * 2, 5))
    assert MatrixSpec.conv() == MatrixSpec((0, 1, 2), (3,))
    assert MatrixSpec.conv(spatial_dims=1).matrix_shape((3, 2, 5)) == (1, 6, 5)


def test_heads_match_manual_reshape():
    d, heads, dh = 4, 3, 2
    x = _arange((d, heads * dh))
    mats = MatrixSpec(heads=(1, heads)).to_matrices(x)
    np.testing.assert_array_equal(mats, x.reshape(d, heads, dh).transpose(1, 0, 2))
    out = _arange((heads * dh, d))  # heads on the reduction axis
    mats = MatrixSpec(heads=(0, heads)).to_matrices(out)
    np.testing.assert_array_equal(mats, out.reshape(heads, dh, d))


def test_fused_qkv_blocks_with_heads_match_manual_split():
    d, heads, dh = 4, 2, 3
    x = _arange((d, 3 * heads * dh))
    spec = MatrixSpec(blocks=(1, (heads * dh,) * 3), heads=(1, heads))
    mats = spec.to_matrices(x)
    manual = [blk.reshape(d, heads, dh).transpose(1, 0, 2)
              for blk in np.split(np.asarray(x), 3, axis=1)]
    np.testing.assert_array_equal(mats, np.concatenate(manual))
    assert spec.num_matrices(x.shape) == 6


def test_unequal_blocks_use_groups():
    x = _arange((2, 5, 12))  # e.g. grouped-query attention: q of 8 columns, kv of 2 + 2
    spec = MatrixSpec((1,), (2,), blocks=(2, (8, 2, 2)))
    assert spec.matrix_shapes(x.shape) == ((2, 5, 8), (2, 5, 2), (2, 5, 2))
    groups = spec.to_groups(x)
    np.testing.assert_array_equal(groups[1], x[:, :, 8:10])
    np.testing.assert_array_equal(spec.from_groups(groups, x.shape), x)
    with pytest.raises(ValueError, match="different shapes"):
        spec.to_matrices(x)
    assert spec.num_matrices(x.shape) == 6


SPECS = [
    (MatrixSpec(), (4, 6)),
    (MatrixSpec((1,), (0,)), (4, 6)),
    (MatrixSpec.stacked(), (3, 4, 6)),
    (MatrixSpec.conv(), (3, 3, 2, 5)),
    (MatrixSpec((0, 2), (3,)), (2, 3, 4, 5)),  # batch axis in the middle
    (MatrixSpec((-3,), (-2, -1)), (2, 4, 3, 2)),  # scanned attention kernel
    (MatrixSpec((1,), (2,), heads=(2, 2), blocks=(2, (4, 4, 4))), (2, 3, 12)),
    (MatrixSpec((1,), (2,), heads=(1, 3), blocks=(2, (4, 2))), (2, 6, 6)),
]


@pytest.mark.parametrize("spec,shape", SPECS)
def test_from_is_the_exact_inverse_of_to(spec, shape):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    groups = spec.to_groups(x)
    assert tuple(g.shape for g in groups) == spec.matrix_shapes(shape)
    np.testing.assert_array_equal(spec.from_groups(groups, shape), x)
    if len({g.shape[1:] for g in groups}) == 1:
        np.testing.assert_array_equal(spec.from_matrices(spec.to_matrices(x), shape), x)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=2, max_size=4), st.data())
def test_round_trip_for_random_axis_assignments(shape, data):
    ndim = len(shape)
    axes = data.draw(st.permutations(range(ndim)))
    n_red = data.draw(st.integers(1, ndim - 1))
    n_out = data.draw(st.integers(1, ndim - n_red))
    spec = MatrixSpec(tuple(axes[:n_red]), tuple(axes[n_red:n_red + n_out]))
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    mats = np.asarray(spec.to_matrices(jnp.asarray(x)))
    b, m, n = spec.matrix_shape(shape)
    assert mats.shape == (b, m, n) and m == np.prod([shape[a] for a in axes[:n_red]])
    assert sorted(mats.ravel()) == sorted(x.ravel())  # a permutation of the entries
    np.testing.assert_array_equal(spec.from_matrices(mats, shape), x)


@pytest.mark.parametrize("spec,shape,message", [
    (MatrixSpec((2,), (1,)), (4, 6), r"reduction axes \[2\] do not exist"),
    (MatrixSpec((0,), (0,)), (4, 6), "overlap"),
    (MatrixSpec((0, -2), (1,)), (4, 6), "repeat an axis"),
    (MatrixSpec(heads=(1, 4)), (4, 6), "does not split into 4 equal heads"),
    (MatrixSpec((1,), (2,), heads=(0, 2)), (2, 4, 6), "heads axis 0 is a batch axis"),
    (MatrixSpec(blocks=(1, (2, 2))), (4, 6), "sum to 4"),
    (MatrixSpec(blocks=(1, (3, 3)), heads=(1, 2)), (4, 6), r"length\(s\) \(3, 3\)"),
])
def test_errors_name_the_leaf_shape_and_fix(spec, shape, message):
    with pytest.raises(ValueError, match=message) as info:
        spec.check(shape, path="layers/0/kernel")
    assert "'layers/0/kernel'" in str(info.value) and str(shape) in str(info.value)


def test_bad_construction_raises():
    with pytest.raises(ValueError, match="non-empty tuple of ints"):
        MatrixSpec(reduction=())
    with pytest.raises(ValueError, match="num_heads >= 1"):
        MatrixSpec(heads=(1, 0))
    with pytest.raises(ValueError, match="positive sizes"):
        MatrixSpec(blocks=(1, (4, 0)))


def test_hashable_frozen_and_static_under_jit():
    spec = MatrixSpec(reduction=1, output=[0], blocks=(0, [2, 2]))
    assert spec == MatrixSpec((1,), (0,), blocks=(0, (2, 2)))
    assert hash(spec) == hash(MatrixSpec((1,), (0,), blocks=(0, (2, 2))))
    with pytest.raises(AttributeError):
        spec.reduction = (0,)
    f = jax.jit(lambda x, s: s.to_matrices(x), static_argnums=1)
    assert f(jnp.ones((4, 6)), spec).shape == (2, 6, 2)
    assert jax.tree.leaves({"a": spec}) == [spec]  # a leaf, not a pytree node


def test_map_matrices_per_matrix_with_passthrough_and_extra_trees():
    x = {"w": _arange((3, 2, 4)), "b": jnp.ones(4), "v": jnp.ones((2, 2)), "m": optax.MaskedNode()}
    specs = {"w": MatrixSpec.stacked(), "b": "fallback", "v": None, "m": optax.MaskedNode()}
    other = jax.tree.map(lambda a: 2 * a, x)

    def per_matrix(mats, twice):
        assert mats.shape == (3, 2, 4) and twice.shape == (3, 2, 4)
        return mats / jnp.max(mats, axis=(-2, -1), keepdims=True) + 0 * twice

    out = map_matrices(per_matrix, x, specs, other)
    for layer in range(3):
        np.testing.assert_allclose(out["w"][layer], x["w"][layer] / x["w"][layer].max())
    assert out["b"] is x["b"] and out["v"] is x["v"] and out["m"] == optax.MaskedNode()
    with pytest.raises(ValueError, match="must keep the shape"):
        map_matrices(lambda m: m[:, :1], x, specs)
