"""Bad inputs to the matrices wing: each is refused with a ValueError that says who, where and
what to do, or works (Python scalars, integer and complex leaves routed to the fallback)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optorth
from optorth.matrices import (
    MatrixSpec,
    describe_groups,
    describe_routing,
    map_matrices,
    resolve_specs,
    route,
)

W = jnp.ones((4, 8))
Z = jnp.ones((4, 8), jnp.complex64)


# ----- leaves that are not float arrays -----------------------------------------------------
def test_python_scalars_integers_and_complex_leaves_are_routed_to_the_fallback():
    tree = {"s": 1.0, "n": 3, "flag": True, "i": jnp.ones((4, 8), jnp.int32), "z": Z, "w": W}
    targets = route(tree)
    assert {k: v for k, v in targets.items() if k != "w"} == dict.fromkeys(
        ["s", "n", "flag", "i", "z"], "fallback")
    assert targets["w"] == MatrixSpec()
    assert resolve_specs(None, tree, who="t") == targets
    text = describe_routing(tree)
    assert "dtype int32" in text and "dtype complex64" in text and "rank 0" in text
    out = map_matrices(lambda m: 2 * m, tree, None)
    assert out["s"] == 1.0 and out["z"] is tree["z"]
    np.testing.assert_array_equal(out["w"], 2 * W)


def test_complex_leaf_sent_to_the_matrix_path_is_refused():
    with pytest.raises(ValueError, match=r"orthogonalize: Leaf 'z' of shape \(4, 8\) and dtype "
                                         r"complex64 is complex.*real and imaginary parts.*"
                                         r"rules=\[\(r'\^z\$', 'fallback'\)\]"):
        resolve_specs({"z": MatrixSpec()}, {"z": Z}, who="orthogonalize")
    with pytest.raises(ValueError, match=r"Leaf 'z' .* complex64 is complex"):
        route({"z": Z}, [(r"^z$", MatrixSpec())])
    with pytest.raises(ValueError, match=r"t: Leaf 'i' .* int32 is not floating-point"):
        resolve_specs({"i": MatrixSpec()}, {"i": jnp.ones((4, 8), jnp.int32)}, who="t")


@pytest.mark.parametrize("make, who", [
    (lambda: optorth.scale_by_factored_rms(), "scale_by_factored_rms"),
    (lambda: optorth.scale_by_factored_rms(specs="fallback"), "scale_by_factored_rms"),
    (lambda: optorth.clip_by_rms(), "clip_by_rms"),
])
def test_complex_leaf_reaching_second_moment_statistics_is_refused(make, who):
    """Today's alternative drops the imaginary part silently (a 3j gradient gave update 0)."""
    tx = make()
    grads = {"z": jnp.full((4, 8), 3j, jnp.complex64)}
    with pytest.raises(ValueError, match=rf"{who}: leaf 'z' of shape \(4, 8\) has dtype "
                                         r"complex64.*real and imaginary parts.*optax.partition"):
        tx.update(grads, tx.init(grads))


def test_matrix_path_second_moments_refuse_complex_matrices_and_pass_fallback_leaves():
    tx = optorth.scale_by_neuron_rms(specs={"z": MatrixSpec()})
    with pytest.raises(ValueError, match=r"scale_by_neuron_rms: Leaf 'z'.*complex64 is complex"):
        tx.init({"z": Z})
    tx = optorth.scale_by_elementwise_rms()  # route: the complex leaf is a fallback leaf
    out, _ = tx.update({"z": Z, "w": W}, tx.init({"z": Z, "w": W}))
    assert out["z"] is not None and out["z"].dtype == jnp.complex64
    np.testing.assert_array_equal(out["z"], Z)


# ----- routing rules and patterns -----------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(rules=[("(", "fallback")]),
     r"rules\[0\] = \('\(', 'fallback'\): '\(' is not a valid regular expression \(missing \)"),
    (dict(head_patterns=("[",)), r"head_patterns\[0\]: '\[' is not a valid regular expression"),
    (dict(head_patterns="head"), r"head_patterns='head': expected a sequence"),
    (dict(rules=("w", MatrixSpec())), r"expected a list of \(regex, target\) pairs"),
    (dict(rules={"w": MatrixSpec()}), r"pass rules=list\(rules.items\(\)\)"),
    (dict(rules=[("w", "Fallback")]), r"target must be an optorth.MatrixSpec or 'fallback'"),
    (dict(rules=[("w",)]), r"each rule is a \(regex, target\) pair"),
])
def test_bad_rules_and_patterns(kwargs, message):
    with pytest.raises(ValueError, match=message):
        route({"w": W}, **kwargs)
    # The report never raises: the same message is one of its warnings.
    assert re.search(message, describe_routing({"w": W}, **kwargs))


def test_compiled_rule_patterns_keep_their_flags():
    assert route({"W": W}, [(re.compile("^w$", re.IGNORECASE), "fallback")]) == {"W": "fallback"}


# ----- the specs argument -------------------------------------------------------------------
@pytest.mark.parametrize("specs, message", [
    ("Fallback", r"t: the specs tree holds 'Fallback' \(a str\)"),
    (3, r"t: the specs tree holds 3 \(a int\)"),
    ({"w": (0, 1)}, r"t: the specs tree holds 0 at 'w/0'"),
    ([MatrixSpec()], r"t: no spec for leaf 'w' of shape \(4, 8\)"),
    ({"x": MatrixSpec()}, r"t: no spec for leaf 'w'"),
    (lambda tree: {"x": MatrixSpec()}, r"t: no spec for leaf 'w'"),
    ({"w": MatrixSpec((0,), (2,))}, r"t: MatrixSpec.*does not fit leaf 'w' of shape \(4, 8\): "
                                    r"output axes \[2\] do not exist"),
    ({"w": MatrixSpec(heads=(1, 3))}, r"does not split into 3 equal heads"),
    ({"w": MatrixSpec(blocks=(1, (4, 5)))}, r"block sizes \(4, 5\) sum to 9"),
    ({"w": MatrixSpec(), "x": MatrixSpec()}, r"t: MatrixSpec.*leaf 'x' of shape \(\): "
                                             r"reduction axes \[0\] do not exist for rank 0"),
])
def test_bad_specs_name_the_caller_and_the_leaf(specs, message):
    with pytest.raises(ValueError, match=message):
        resolve_specs(specs, {"w": W, "x": 1.0}, who="t")  # 'w' is checked first


def test_default_specs_refuse_an_ambiguous_leaf_with_the_rule_that_fixes_it():
    with pytest.raises(ValueError, match=r"map_matrices: Leaf 'k' of shape \(2, 3, 4\) \(rank 3\)"
                       r".*rules=\[\(r'\^k\$', optorth.MatrixSpec.stacked\(\)\)\]"):
        map_matrices(lambda m: m, {"k": jnp.ones((2, 3, 4))}, None)


def test_prefix_specs_and_keys_with_slashes():
    tree = {"a/b": W, "a": {"b": W, "c": jnp.ones((2, 4, 8))}}
    specs = {"a/b": MatrixSpec(), "a": "fallback"}  # "a" covers both leaves below it
    assert resolve_specs(specs, tree, who="t") == {
        "a/b": MatrixSpec(), "a": {"b": "fallback", "c": "fallback"}}
    assert resolve_specs(MatrixSpec.stacked(), {"x": jnp.ones((2, 4, 8))}, who="t") == {
        "x": MatrixSpec.stacked()}


def test_specs_of_the_full_tree_fit_a_masked_tree():
    params = {"w": W, "embed": jnp.ones((10, 4)), "k": jnp.ones((2, 3, 4))}
    specs = route(params, [(r"^k$", "fallback")])
    masked = {"w": W, "embed": optax.MaskedNode(), "k": optax.MaskedNode()}
    assert resolve_specs(specs, masked, who="t") == {
        "w": MatrixSpec(), "embed": optax.MaskedNode(), "k": optax.MaskedNode()}
    assert describe_groups(masked, specs) == "4x8 float32: 1 matrices from 1 leaves"


def test_nnx_param_leaves_and_plain_arrays_get_the_same_specs():
    model = nnx.Linear(4, 8, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    with_params = resolve_specs(None, state, who="t")
    plain = resolve_specs(None, nnx.to_pure_dict(state), who="t")
    assert dict(with_params) == plain == {"kernel": MatrixSpec(), "bias": "fallback"}
    # a specs tree mapped over the nnx.Param variables keeps the wrappers: Param(MatrixSpec())
    wrapped = jax.tree.map(lambda x: MatrixSpec() if x.ndim == 2 else "fallback", state)
    assert resolve_specs(wrapped, nnx.to_pure_dict(state), who="t") == plain
    tx = optorth.scale_by_factored_rms()
    assert jax.tree.leaves(tx.init(state).v_row)[0].shape == (1, 4)


# ----- MatrixSpec construction --------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(reduction=()), r"MatrixSpec.reduction must be a non-empty tuple of ints; got \(\)"),
    (dict(reduction=(0.5,)), r"reduction must be a non-empty tuple of ints"),
    (dict(output="1"), r"MatrixSpec.output must be a non-empty tuple of ints; got '1'"),
    (dict(heads=(1, 0)), r"MatrixSpec.heads must be \(axis, num_heads\)"),
    (dict(heads=(1,)), r"MatrixSpec.heads must be \(axis, num_heads\).*got \(1,\)"),
    (dict(heads=5), r"MatrixSpec.heads must be \(axis, num_heads\).*got 5"),
    (dict(heads=(True, 2)), r"MatrixSpec.heads must be"),
    (dict(blocks=(1, (0, 4))), r"MatrixSpec.blocks must be \(axis, \(size, ...\)\)"),
    (dict(blocks=(1,)), r"MatrixSpec.blocks must be.*got \(1,\)"),
    (dict(blocks=5), r"MatrixSpec.blocks must be.*got 5"),
    (dict(blocks=(1, None)), r"MatrixSpec.blocks must be.*got \(1, None\)"),
])
def test_malformed_matrix_specs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MatrixSpec(**kwargs)


# ----- the mapper ---------------------------------------------------------------------------
def test_zero_sized_axes_map_to_empty_results():
    tree = {"w": jnp.zeros((0, 8)), "s": jnp.zeros((0, 4, 8))}
    out = map_matrices(lambda m: m + 1, tree, {"w": MatrixSpec(), "s": MatrixSpec.stacked()})
    assert out["w"].shape == (0, 8) and out["s"].shape == (0, 4, 8)
    tx = optorth.scale_by_factored_rms()
    u, _ = tx.update({"w": jnp.zeros((0, 8))}, tx.init({"w": jnp.zeros((0, 8))}))
    assert u["w"].shape == (0, 8)


@pytest.mark.parametrize("kwargs, fn, message", [
    (dict(distribute="yes"), lambda m: m,
     r"map_matrices: distribute='yes'; expected an optorth.Distribution"),
    ({}, lambda m: None, r"map_matrices: fn changed a stack of shape \(1, 4, 8\) into NoneType"),
    ({}, lambda m: m[:, :1], r"into \(1, 1, 8\); it must keep the shape"),
])
def test_mapper_refuses_bad_arguments(kwargs, fn, message):
    with pytest.raises(ValueError, match=message):
        map_matrices(fn, {"w": W}, None, **kwargs)
