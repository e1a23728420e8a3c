"""record_spectra: identity on updates, spectra equal to float64 NumPy SVD, ring buffer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optorth
from optorth.blocks._spectra import sampled_leaves


def make_params():
    return {
        "attn": {"qkv": jnp.zeros((2, 12, 20))},  # a stack of two 12×20 matrices
        "bias": jnp.zeros(7),
        "mlp": jnp.zeros((24, 10)),
        "out": jnp.zeros((6, 6)),
    }


def grads(step):
    keys = jax.random.split(jax.random.PRNGKey(step), 4)
    params = make_params()
    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(
        treedef, [jax.random.normal(k, p.shape) * (1 + i) for i, (k, p) in
                  enumerate(zip(keys, leaves, strict=True))])


def run(opt, steps):
    state = opt.init(make_params())
    update = jax.jit(opt.update)
    outs = []
    for t in range(steps):
        out, state = update(grads(t), state)
        outs.append(out)
    return outs, state


def test_updates_pass_through_unchanged():
    outs, _ = run(optorth.record_spectra(every=2, num_values=8), 5)
    for t, out in enumerate(outs):
        jax.tree.map(np.testing.assert_array_equal, out, grads(t))


def test_records_match_numpy_svd_and_rotate_through_batches():
    every, num_values = 3, 16
    _, state = run(optorth.record_spectra(every=every, num_values=num_values), 7)
    np.testing.assert_array_equal(np.asarray(state.count), 7)
    assert list(np.asarray(state.steps[:3])) == [0, 3, 6]
    assert np.all(np.asarray(state.steps[3:]) == -1)
    leaves = sampled_leaves(make_params())
    assert [p for _, p in leaves] == ["attn/qkv", "mlp", "out"]
    for slot, step in enumerate((0, 3, 6)):
        flat = jax.tree.leaves(grads(step))
        for j, (i, _) in enumerate(leaves):
            mats = np.asarray(flat[i], np.float64).reshape((-1,) + flat[i].shape[-2:])
            mat = mats[slot % mats.shape[0]]  # record k samples batch entry k mod B
            s = np.linalg.svd(mat, compute_uv=False)
            norm = np.linalg.norm(mat)
            got = np.asarray(state.values[slot, j])
            expected = np.full(num_values, np.nan)
            expected[: s.size] = s / norm
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
            assert float(state.norms[slot, j]) == pytest.approx(norm, rel=1e-5)


def test_quantile_sampling_keeps_extremes():
    mat = jax.random.normal(jax.random.PRNGKey(0), (40, 50))
    values, norm = optorth.blocks.matrix_spectrum(mat, 5)
    s = np.linalg.svd(np.asarray(mat, np.float64), compute_uv=False) / np.linalg.norm(mat)
    np.testing.assert_allclose(values, s[[0, 10, 20, 29, 39]], rtol=1e-4)


def test_ring_buffer_overwrites_oldest_and_recorded_spectra_order():
    _, state = run(optorth.record_spectra(every=1, capacity=2, max_matrices=1, num_values=12),
                   5)
    assert sorted(np.asarray(state.steps)) == [3, 4]
    spectra = optorth.recorded_spectra(state)
    assert len(spectra) == 2
    for spectrum, step in zip(spectra, (3, 4), strict=True):
        mat = np.asarray(jax.tree.leaves(grads(step))[0], np.float64)[step % 2]
        s = np.linalg.svd(mat, compute_uv=False)
        np.testing.assert_allclose(spectrum, s / np.linalg.norm(mat), rtol=1e-4)


def test_found_inside_chains_and_partitions_and_select():
    inner = optax.chain(optax.trace(0.9), optorth.record_spectra(every=2, num_values=4,
                                                                 select=lambda p, x: "mlp" in p))
    labels = {"attn": {"qkv": "a"}, "bias": "b", "mlp": "a", "out": "b"}
    opt = optax.partition({"a": inner, "b": optax.sgd(0.1)}, labels)
    _, state = run(opt, 3)
    spectra = optorth.recorded_spectra(state)
    assert len(spectra) == 2 and all(s.shape == (4,) for s in spectra)
    with pytest.raises(ValueError, match="record_spectra"):
        optorth.recorded_spectra(optax.sgd(0.1).init(make_params()))


def test_max_matrices_samples_evenly():
    params = {f"w{i:02d}": jnp.zeros((3, 4)) for i in range(10)}
    picked = [p for _, p in sampled_leaves(params, max_matrices=3)]
    assert picked in (["w00", "w04", "w09"], ["w00", "w05", "w09"])


def test_zero_updates_give_nan_values_and_are_skipped():
    opt = optorth.record_spectra(every=1, num_values=4)
    state = opt.init(make_params())
    _, state = opt.update(jax.tree.map(jnp.zeros_like, make_params()), state)
    assert np.all(np.isnan(np.asarray(state.values[0])))
    assert optorth.recorded_spectra(state) == []


@pytest.mark.parametrize("kwargs", [dict(every=0), dict(num_values=-1), dict(capacity=1.5),
                                    dict(max_matrices=True)])
def test_bad_configuration_raises(kwargs):
    with pytest.raises(ValueError, match="positive int"):
        optorth.record_spectra(**kwargs)


def test_specs_choose_the_recorded_matrices():
    """A MatrixSpec decides the matrices of a leaf (a conv kernel is one (kh·kw·cin) × cout
    matrix under optorth.route); fallback leaves keep their last two axes."""
    rules = [(r"^attn/qkv$", optorth.MatrixSpec.stacked())]
    specs = optorth.matrices.route_specs(rules)
    assert [p for _, p in sampled_leaves(make_params(), specs=specs)] == ["attn/qkv", "mlp", "out"]
    conv = {"conv": jnp.arange(2 * 2 * 3 * 5, dtype=jnp.float32).reshape(2, 2, 3, 5)}
    tx = optorth.record_spectra(every=1, num_values=5, specs=None)  # conv: one 12×5 matrix
    _, state = tx.update(conv, tx.init(conv))
    expected = np.linalg.svd(np.asarray(conv["conv"], np.float64).reshape(12, 5),
                             compute_uv=False)
    np.testing.assert_allclose(state.values[0, 0], expected / np.linalg.norm(expected),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="record_spectra: Leaf 'attn/qkv'"):
        optorth.record_spectra(specs=None).init(make_params())
