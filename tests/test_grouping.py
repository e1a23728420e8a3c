"""Grouped, batched orthogonalization equals the per-leaf computation.

Reference: one engine call per leaf and block (``_one_call_per_leaf``, the path before
grouping), against ``optorth.matrices.map_matrices``, which stacks equal shapes. Float32
results are compared bit for bit. XLA may compute one matrix of a batch
differently depending on the batch size for some small shapes (its CPU dot kernels split
the work by size: measured on 32×64 Gram products, not on 64×128 or GPT-2's 768×3072), so
the shapes here are ≥ 64 on the short side. With a bf16 compute dtype on float32 inputs the
grouped and per-leaf programs differ only in where XLA fuses the final bf16 product: with
``xla_allow_excess_precision`` (on by default) one of them may skip that last rounding, so
they agree to half a bf16 unit in the last place; with the flag off they are bit-identical
(checked in a subprocess below).
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import optorth
from optorth import MatrixSpec
from optorth.blocks._soft_threshold import clip_at_quantile
from optorth.matrices import describe_groups, map_matrices
from optorth.matrices._grouping import plan_groups


def _normal(shape, seed, dtype=jnp.float32):
    return jax.random.normal(jax.random.PRNGKey(seed), shape, dtype)


def _tree():
    """Leaves whose matrices all reduce to 64×128 (and one 64×64), in many layouts."""
    return {
        "dense": _normal((64, 128), 0),
        "tall": _normal((128, 64), 1),  # enters the 64×128 stack transposed
        "stacked": _normal((3, 64, 128), 2),
        "conv": _normal((2, 2, 16, 128), 3),  # fan-in 2·2·16 = 64
        "heads": _normal((64, 256), 4),  # 2 heads of 64×128
        "qkv": _normal((64, 320), 5),  # blocks 128 + 128 + 64: two 64×128, one 64×64
        "square": _normal((64, 64), 6),
        "bias": jnp.ones((128,)),
        "half": _normal((64, 128), 7, jnp.bfloat16),  # another dtype: its own stack
    }


SPECS = {
    "dense": MatrixSpec(), "tall": MatrixSpec(), "stacked": MatrixSpec.stacked(),
    "conv": MatrixSpec.conv(), "heads": MatrixSpec(heads=(1, 2)),
    "qkv": MatrixSpec(blocks=(1, (128, 128, 64))), "square": MatrixSpec(),
    "bias": "fallback", "half": MatrixSpec(),
}


def _one_call_per_leaf(fn, tree, specs):
    """The reference mapper: ``fn`` on each ``(B, m, n)`` group of each leaf on its own."""
    def leaf(spec, x):
        if not isinstance(spec, MatrixSpec):
            return x
        return spec.from_groups([fn(g) for g in spec.to_groups(x)], x.shape)

    return jax.tree.map(leaf, specs, tree, is_leaf=lambda s: isinstance(s, (MatrixSpec, str)))


def _leaves(tree):
    keys = sorted(tree)
    return ([tuple(tree[k].shape) for k in keys], [tree[k].dtype for k in keys],
            [SPECS[k] for k in keys], keys)


def test_plan_buckets_by_shape_and_dtype():
    shapes, dtypes, specs, keys = _leaves(_tree())
    groups = plan_groups(shapes, dtypes, specs, transpose_tall=True)
    summary = {(g.shape, str(g.dtype)): (g.size, sorted(keys[m.leaf] for m in g.members))
               for g in groups}
    assert summary == {
        ((64, 128), "float32"): (1 + 1 + 3 + 1 + 2 + 2,
                                 ["conv", "dense", "heads", "qkv", "qkv", "stacked", "tall"]),
        ((64, 64), "float32"): (2, ["qkv", "square"]),
        ((64, 128), "bfloat16"): (1, ["half"]),
    }
    tall = [m for g in groups for m in g.members if keys[m.leaf] == "tall"]
    assert [m.transposed for m in tall] == [True]
    # Without merging, the tall matrix has a stack of its own.
    apart = plan_groups(shapes, dtypes, specs, transpose_tall=False)
    assert {g.shape for g in apart if str(g.dtype) == "float32"} == {(64, 128), (128, 64),
                                                                     (64, 64)}


def test_one_call_per_stack_and_a_readable_summary():
    calls = []

    def fn(stack):
        calls.append(stack.shape)
        return stack * 2.0

    tree = _tree()
    out = map_matrices(fn, tree, SPECS, transpose_tall=True)
    assert sorted(calls) == sorted([(10, 64, 128), (2, 64, 64), (1, 64, 128)])
    for key in tree:
        expected = tree[key] if key == "bias" else tree[key] * 2.0
        np.testing.assert_array_equal(out[key], expected)
    text = describe_groups(tree, SPECS, transpose_tall=True)
    assert "64x128 float32: 10 matrices from 6 leaves" in text


def test_shape_changing_function_is_refused():
    with pytest.raises(ValueError, match="must keep the shape"):
        map_matrices(lambda s: s[:, :1], {"w": jnp.ones((4, 8))}, {"w": MatrixSpec()})


def test_masked_nodes_and_extra_trees_pass_through():
    tree = {"a": _normal((64, 128), 0), "b": optax.MaskedNode()}
    other = {"a": _normal((64, 128), 1), "b": optax.MaskedNode()}
    specs = {"a": MatrixSpec(), "b": optax.MaskedNode()}
    out = map_matrices(lambda s, o: s + o, tree, specs, other)
    np.testing.assert_array_equal(out["a"], tree["a"] + other["a"])
    assert isinstance(out["b"], optax.MaskedNode)


def test_grouping_is_exact_for_a_per_matrix_function_and_consts_come_first():
    """Stacking is invisible to a per-matrix function: bit-identical to one call per leaf
    (also with tall matrices merged, for a function that commutes with transposition)."""
    tree = {k: v for k, v in _tree().items() if k != "half"}
    specs = _specs(tree)

    def fn(m):
        return m / jnp.max(jnp.abs(m), axis=(-2, -1), keepdims=True)

    expected = jax.jit(lambda t: _one_call_per_leaf(fn, t, specs))(tree)
    for tall in (False, True):
        got = jax.jit(lambda t, tall=tall: map_matrices(fn, t, specs, transpose_tall=tall))(tree)
        for key in tree:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    scaled = map_matrices(lambda c, m: c["k"] * m, tree, specs, consts={"k": jnp.float32(3)})
    np.testing.assert_array_equal(scaled["dense"], 3 * tree["dense"])
    np.testing.assert_array_equal(scaled["bias"], tree["bias"])


def test_default_specs_are_the_default_routing():
    tree = {"embed": jnp.ones((10, 4)), "w": jnp.ones((4, 8)), "b": jnp.ones(8)}
    out = map_matrices(lambda m: -m, tree, None)
    np.testing.assert_array_equal(out["w"], -tree["w"])
    np.testing.assert_array_equal(out["embed"], tree["embed"])
    assert describe_groups(tree) == "4x8 float32: 1 matrices from 1 leaves"
    with pytest.raises(ValueError, match=r"map_matrices: Leaf 'stack' of shape \(3, 4, 8\)"):
        map_matrices(lambda m: m, {"stack": jnp.ones((3, 4, 8))}, None)


def _specs(tree):
    return {k: SPECS[k] for k in tree}


def _per_leaf(tx_kwargs, tree):
    """The reference: one Newton–Schulz call per leaf and block, same table and options."""
    specs = _specs(tree)
    tx_kwargs = dict(tx_kwargs)
    adaptive = tx_kwargs.pop("adaptive", False)
    ns = optorth.NewtonSchulz(**{"method": "standard", **tx_kwargs})
    tx = optorth.orthogonalize(ns, specs=specs, adaptive=adaptive)
    state = tx.init(tree)

    def direction(mats):
        out = ns.apply(mats)
        if adaptive:
            dual = jnp.sum(mats * out, axis=(-2, -1), keepdims=True)
            out = out * dual
        return out

    return tx, state, jax.jit(lambda t: _one_call_per_leaf(direction, t, specs))(tree)


@pytest.mark.parametrize("kwargs", [
    dict(schedule="jordan"),
    dict(schedule="turbo", method="gram"),
    dict(schedule="polar_express", method="auto"),
])
def test_orthogonalize_equals_the_per_leaf_path_bit_for_bit(kwargs):
    tree = {k: v for k, v in _tree().items() if k != "half"}
    tx, state, expected = _per_leaf(kwargs, tree)
    got, _ = jax.jit(tx.update)(tree, state)
    for key in tree:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_adaptive_scaling_agrees_to_float32_round_off():
    """Not bit for bit: the dual norm ⟨M, O⟩ is a reduction over m·n products that XLA
    fuses with the last Newton–Schulz product, and it fuses the stacked and the per-leaf
    programs differently, which changes the summation order of that reduction and of the
    fused product (measured: ≤ 1.5e-5 relative on one entry in 4096, ~1e-6 typically; the
    unscaled directions above are bit-identical)."""
    tree = {k: v for k, v in _tree().items() if k != "half"}
    tx, state, expected = _per_leaf(dict(schedule="turbo", method="gram", adaptive=True), tree)
    got, _ = jax.jit(tx.update)(tree, state)
    for key in tree:
        scale = float(jnp.max(jnp.abs(expected[key])))
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=1e-6 * scale,
                                   err_msg=key)


def _bf16_ulps(expected, got):
    expected, got = np.asarray(expected, np.float32), np.asarray(got, np.float32)
    ulp = np.spacing(np.abs(expected).astype(ml_dtypes.bfloat16)).astype(np.float32)
    return float(np.max(np.abs(expected - got) / ulp))


def test_bf16_compute_matches_per_leaf_to_half_an_ulp():
    tree = {k: v for k, v in _tree().items() if k not in ("half", "conv", "heads")}
    kwargs = dict(schedule="jordan", method="gram", dtype=jnp.bfloat16)
    tx, state, expected = _per_leaf(kwargs, tree)
    got, _ = jax.jit(tx.update)(tree, state)
    for key in tree:
        assert _bf16_ulps(expected[key], got[key]) <= 0.5, key


_EXACT_BF16 = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optorth
    from optorth import MatrixSpec
    from optorth.matrices import map_matrices
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    tree = {"a": jax.random.normal(keys[0], (64, 128)), "b": jax.random.normal(keys[1], (128, 64)),
            "c": jax.random.normal(keys[2], (3, 64, 128))}
    specs = {"a": MatrixSpec(), "b": MatrixSpec(), "c": MatrixSpec.stacked()}
    config = optorth.NewtonSchulz("jordan", method="gram", dtype=jnp.bfloat16)
    ns = config.apply
    ref = {k: specs[k].from_matrices(ns(specs[k].to_matrices(x)), x.shape)
           for k, x in tree.items()}  # one call per leaf
    got = jax.jit(lambda t: map_matrices(ns, t, specs, transpose_tall=True))(tree)
    assert all(bool(jnp.array_equal(ref[k], got[k])) for k in tree), "not bit-identical"
""")


def test_bf16_compute_is_bit_identical_without_excess_precision():
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                                      + " --xla_allow_excess_precision=false").strip())
    result = subprocess.run([sys.executable, "-c", _EXACT_BF16], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_soft_threshold_groups_to_one_ulp():
    """The quantile is an interpolation between two sorted entries, lo + (hi − lo)·t, which
    XLA may fuse into a multiply-add in one program and not the other: the threshold, and
    the entries clipped to it, agree to 1 float32 ulp; every other entry is bit-identical."""
    tree = {k: v for k, v in _tree().items() if k != "half"}
    specs = _specs(tree)
    clipped, _ = jax.jit(optorth.soft_threshold(0.9, specs=specs).update)(tree, ())
    expected = jax.jit(lambda t: _one_call_per_leaf(lambda m: clip_at_quantile(m, 0.9), t,
                                                    specs))(tree)
    for key in tree:
        np.testing.assert_array_max_ulp(clipped[key], expected[key], maxulp=1)


def test_hybrid_auon_groups_exactly():
    tree = {k: v for k, v in _tree().items() if k != "half"}
    specs = _specs(tree)
    hybrid, _ = jax.jit(optorth.dualize("hybrid_auon", specs=specs).update)(tree, ())
    lmo = optorth.norms.as_norm("hybrid_auon").lmo
    expected = jax.jit(lambda t: _one_call_per_leaf(lmo, t, specs))(tree)
    for key in tree:
        np.testing.assert_array_max_ulp(hybrid[key], expected[key], maxulp=1)


def test_muon_bf16_iteration_with_float32_momentum_end_to_end():
    """ns_dtype (the iteration) and mu_dtype (state, normalization) are independent."""
    params = {"w": _normal((64, 128), 0, jnp.bfloat16), "b": jnp.zeros((128,), jnp.bfloat16)}
    grads = {"w": _normal((64, 128), 1, jnp.bfloat16), "b": jnp.ones((128,), jnp.bfloat16)}
    bf16 = optorth.NewtonSchulz("jordan", dtype=jnp.bfloat16)
    tx = optorth.muon(learning_rate=1.0, ns=bf16, mu_dtype="float32", scale=None)
    state = tx.init(params)
    moments = [x for x in jax.tree.leaves(state) if x.shape == (64, 128)]
    assert moments and all(x.dtype == jnp.float32 for x in moments)
    updates, state = jax.jit(tx.update)(grads, state, params)
    assert updates["w"].dtype == jnp.bfloat16
    # The same direction computed by hand: float32 Nesterov momentum (first step: m = (1-β)g,
    # u = (1-β)g + β m), float32 normalization, bf16 iteration, output cast to bf16.
    g = grads["w"].astype(jnp.float32)
    nesterov = 0.05 * g + 0.95 * (0.05 * g)
    direction = optorth.newton_schulz(nesterov, bf16)
    np.testing.assert_array_equal(updates["w"], (-direction).astype(jnp.bfloat16))
    # bf16 iterations really ran: they differ from the float32 iteration by bf16 round-off.
    f32 = optorth.newton_schulz(nesterov, "jordan")
    gap = float(jnp.max(jnp.abs(direction - f32)))
    assert 1e-4 < gap < 0.05
