"""Silent failures closed: each case gives a correct result or an error at entry naming it.

Found by probing every public entry point with valid and invalid inputs; each test below is
one minimal case.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optorth

X = jnp.asarray(np.random.default_rng(0).standard_normal((4, 8)), jnp.float32)
PARAMS = {"w": X, "b": jnp.zeros(8)}


# ----- coefficient tables: values checked, not only shapes ----------------------------------
def test_a_nan_coefficient_table_in_coeffs_is_refused():
    table = jnp.asarray(optorth.NewtonSchulz().table(), jnp.float32).at[2, 1].set(jnp.nan)
    with pytest.raises(ValueError, match=r"coeffs row 2 is .*nan.*not finite"):
        optorth.newton_schulz(X, "jordan", coeffs=table)


@pytest.mark.parametrize("table, reason", [
    ([(10.0, -1.0, 0.0)], r"amplifies: singular values are mapped up to 9"),
    ([(1e-3, 0.0, 0.0)], r"no gain: the slope at 0, ∏a / safety = 0.001"),
    ([(1.0, 0.0, 0.0)], r"no gain: the slope at 0, ∏a / safety = 1,"),
])
def test_validate_schedule_rejects_tables_that_do_not_orthogonalize(table, reason):
    report = optorth.validate_schedule(table)
    assert not report.ok and report.reason.startswith(reason.split(":")[0])
    with pytest.raises(ValueError, match=reason):
        optorth.NewtonSchulz(table)
    with pytest.raises(ValueError, match=reason):
        optorth.newton_schulz(X, "jordan", coeffs=jnp.asarray(table))


@pytest.mark.parametrize("name", ["jordan", "you", "polar_express5", "turbo", "fitted5"])
def test_presets_still_pass_validation(name):
    assert optorth.validate_schedule(name).ok


def test_a_state_of_another_schedule_does_not_drive_the_iteration():
    jordan = optorth.muon()
    express = optorth.muon(ns=optorth.NewtonSchulz("polar_express5"))
    foreign = jordan.init(PARAMS)
    with pytest.raises(ValueError, match=r"was built by another Newton–Schulz configuration"):
        express.update(PARAMS, foreign, PARAMS)
    # Under jit the table is chosen on device: the optimizer's own table drives it.
    got, _ = jax.jit(express.update)(PARAMS, foreign, PARAMS)
    want, _ = express.update(PARAMS, express.init(PARAMS), PARAMS)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-4, atol=1e-7)


def test_a_nan_table_in_a_restored_state_gives_the_constructed_tables_update():
    tx = optorth.muon()
    state = tx.init(PARAMS)
    leaves, treedef = jax.tree.flatten(state)
    table_index = next(i for i, x in enumerate(leaves) if getattr(x, "shape", ()) == (5, 3))
    leaves[table_index] = jnp.full((5, 3), jnp.nan)
    broken = jax.tree.unflatten(treedef, leaves)
    with pytest.raises(ValueError, match=r"coefficient table holds NaN"):
        tx.update(PARAMS, broken, PARAMS)
    got, _ = jax.jit(tx.update)(PARAMS, broken, PARAMS)
    want, _ = tx.update(PARAMS, state, PARAMS)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-4, atol=1e-7)


# ----- non-finite and huge gradients ---------------------------------------------------------
@pytest.mark.parametrize("name", ["signum", "root", "muon", "normalized_sgdm"])
def test_an_infinite_gradient_entry_gives_a_non_finite_update_that_apply_if_finite_skips(name):
    tx = getattr(optorth, name)()
    grads = {"w": X.at[1, 2].set(jnp.inf), "b": jnp.ones(8)}
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    assert not np.isfinite(np.asarray(updates["w"][1, 2]))
    safe = optax.apply_if_finite(getattr(optorth, name)(), max_consecutive_errors=3)
    state = safe.init(PARAMS)
    updates, state = safe.update(grads, state, PARAMS)
    assert int(state.notfinite_count) == 1
    np.testing.assert_array_equal(updates["w"], 0.0)
    # The skipped step left no inf in the optimizer's own state.
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.inner_state)
               if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating))


def test_a_huge_gradient_does_not_freeze_the_default_fallback_for_good():
    params = {"embed": jnp.ones((4, 8)), "w": X}
    huge = {"embed": jnp.full((4, 8), 1e20), "w": X}
    normal = {"embed": jnp.ones((4, 8)), "w": X}
    reference = optax.adamw(3e-3, b1=0.9, b2=0.95, eps=1e-10, weight_decay=0.0)
    ref_state = reference.init({"embed": params["embed"]})
    tx = optorth.muon()
    state = tx.init(params)
    for grads in (huge, normal, normal):
        updates, state = tx.update(grads, state, params)
        ref, ref_state = reference.update({"embed": grads["embed"]}, ref_state,
                                          {"embed": params["embed"]})
    # optax's AdamW: v = inf after the 1e20 gradient, so the leaf never moves again.
    np.testing.assert_array_equal(ref["embed"], 0.0)
    assert np.all(np.isfinite(updates["embed"])) and np.all(np.asarray(updates["embed"]) < 0)


# ----- norm objects ----------------------------------------------------------------------------
@pytest.mark.parametrize("norm", [optorth.norms.Frobenius(), optorth.norms.Row(),
                                  optorth.norms.Column()])
@pytest.mark.parametrize("magnitude", [1e30, 1e-30])
def test_norm_duals_and_primals_neither_overflow_nor_underflow(norm, magnitude):
    m = np.random.default_rng(1).standard_normal((3, 4, 6))
    x = jnp.asarray(m * magnitude, jnp.float32)
    reference = {"Frobenius": np.sqrt((m**2).sum(axis=(-2, -1))),
                 "Row": np.sqrt((m**2).sum(axis=-1)).sum(axis=-1),
                 "Column": np.sqrt((m**2).sum(axis=-2)).sum(axis=-1)}[type(norm).__name__]
    np.testing.assert_allclose(np.asarray(norm.dual(x), np.float64) / magnitude, reference,
                               rtol=1e-5)
    primal = np.asarray(norm.primal(x))
    assert np.all(np.isfinite(primal)) and np.all(primal > 0)
    # ⟨M, lmo(M)⟩ = ‖M‖_* at every scale.
    inner = np.sum(np.asarray(norm.lmo(x), np.float64) * m, axis=(-2, -1))
    np.testing.assert_allclose(inner, reference, rtol=1e-5)


@pytest.mark.parametrize("norm", [optorth.norms.Frobenius(), optorth.norms.Row(),
                                  optorth.norms.Column(), optorth.norms.Sign(),
                                  optorth.norms.Spectral()])
def test_norm_lmo_refuses_integer_and_vector_inputs(norm):
    with pytest.raises(ValueError, match=r"optorth.norms expects a floating-point array; got "
                                         r"dtype int32|newton_schulz expects a floating"):
        norm.lmo(jnp.ones((4, 8), jnp.int32))
    with pytest.raises(ValueError, match=r"expects an array of shape \(\.\.\., m, n\) with rank "
                                         r">= 2; got shape \(8,\)"):
        norm.lmo(jnp.ones(8))


# ----- contrib: NaN losses and representations -----------------------------------------------
def test_polyak_momentum_refuses_a_nan_loss_and_gives_a_nan_step_under_jit():
    from optorth.contrib import polyak_momentum

    tx = polyak_momentum(0.9)
    state = tx.init(PARAMS)
    with pytest.raises(ValueError, match=r"the loss value=nan is not finite"):
        tx.update(PARAMS, state, PARAMS, value=jnp.nan)
    updates, _ = jax.jit(lambda g, s, v: tx.update(g, s, PARAMS, value=v))(
        PARAMS, state, jnp.float32(jnp.nan))
    assert np.all(np.isnan(np.asarray(updates["w"])))  # seen by optax.apply_if_finite


def test_add_task_subspace_refuses_nan_representations_and_keeps_the_basis_under_jit():
    from optorth.contrib import add_task_subspace, rogo

    params = {"w": jnp.zeros((6, 4))}
    state = rogo().init(params)
    reps = jnp.asarray(np.random.default_rng(0).standard_normal((10, 6)), jnp.float32)
    good = add_task_subspace(state, {"w": reps}, 0.97)
    bad = reps.at[3, 2].set(jnp.nan)
    with pytest.raises(ValueError, match=r"activations\['w'\] of shape \(10, 6\) holds NaN"):
        add_task_subspace(good, {"w": bad}, 0.97)
    kept = jax.jit(lambda s, r: add_task_subspace(s, {"w": r}, 0.97))(good, bad)
    np.testing.assert_array_equal(kept.basis["w"], good.basis["w"])
    assert np.all(np.isfinite(np.asarray(kept.basis["w"])))


# ----- unhelpful errors made clear ---------------------------------------------------------------
def test_shape_scale_factor_of_an_empty_matrix_and_bad_sizes():
    scale = optorth.norms.ShapeScale()
    assert scale.factor(0, 5) == 1.0
    with pytest.raises(ValueError, match=r"ShapeScale.factor: fan_in=-1 must be a matrix size"):
        scale.factor(-1, 5)


def test_trust_region_refuses_the_abstract_norm_at_construction():
    with pytest.raises(ValueError, match=r"Norm\(\) defines no lmo: optorth.norms.Norm is the "
                                         r"base class"):
        optorth.trust_region(norm=optorth.norms.Norm())


def test_gradients_in_other_containers_than_the_parameters_are_named():
    params = [jnp.ones((4, 8)), jnp.zeros(8)]
    tx = optorth.muon()
    with pytest.raises(ValueError, match=r"optorth.muon: the gradients' tree structure differs "
                                         r"from the parameters'"):
        tx.update(tuple(params), tx.init(params), params)


def test_a_state_restored_without_a_target_is_named_as_such():
    tx = optorth.muon()
    state = tx.init(PARAMS)
    as_dicts = _plain(state)  # what a restore without a target returns
    with pytest.raises(ValueError, match=r"same \d+ leaves in (another order|other containers): "
                                         r"its containers are dicts or lists where this "
                                         r"optimizer's state has NamedTuples"):
        tx.update(PARAMS, as_dicts, PARAMS)


def _plain(tree):
    """NamedTuples as dicts and tuples as lists, as orbax restores a tree without a target."""
    if hasattr(tree, "_asdict"):
        return {k: _plain(v) for k, v in tree._asdict().items()}
    if isinstance(tree, (tuple, list)):
        return [_plain(v) for v in tree]
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    return tree


# ----- traced hyperparameters out of range ----------------------------------------------------
@pytest.mark.parametrize("name, value", [("beta", 1.5), ("learning_rate", -0.02),
                                         ("learning_rate", float("nan"))])
def test_inject_hyperparams_out_of_range_gives_a_nan_update_under_jit(name, value):
    tx = optax.inject_hyperparams(optorth.muon)(learning_rate=0.02, beta=0.9)
    state = tx.init(PARAMS)
    state.hyperparams[name] = jnp.asarray(value, jnp.float32)
    updates, _ = jax.jit(tx.update)(PARAMS, state, PARAMS)
    assert np.all(np.isnan(np.asarray(updates["w"])))  # optax.apply_if_finite skips it
    state.hyperparams[name] = jnp.asarray(0.5 if name == "beta" else 0.01, jnp.float32)
    updates, _ = jax.jit(tx.update)(PARAMS, state, PARAMS)
    assert np.all(np.isfinite(np.asarray(updates["w"])))


def test_nn_adapt_is_atomic_when_a_later_layer_is_refused():
    from flax import nnx

    model = nnx.Sequential(nnx.Linear(8, 6, rngs=nnx.Rngs(0)), nnx.Linear(6, 4, rngs=nnx.Rngs(1)))
    before = nnx.state(model, nnx.Param)
    with pytest.raises(ValueError, match=r"block_size"):
        optorth.nn.adapt(model, lambda layer: optorth.nn.OFTLinear(layer, block_size=4))
    # The 8-feature first layer could be adapted, the 6-feature one not: nothing was replaced.
    assert all(isinstance(layer, nnx.Linear) for layer in model.layers)
    after = nnx.state(model, nnx.Param)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bloop_aux_grads_given_positionally_is_named():
    from optorth.contrib import bloop

    tx = bloop(0.1)
    with pytest.raises(ValueError, match=r"bloop: update takes aux_grads as a keyword argument"):
        tx.update(PARAMS, tx.init(PARAMS), PARAMS, PARAMS)


def test_rogo_update_with_an_extra_leaf_names_it():
    from optorth.contrib import rogo

    params = {"w": jnp.ones((4, 8))}
    tx = rogo()
    more = {"w": params["w"], "x": jnp.ones((4, 8))}
    with pytest.raises(ValueError, match=r"rogo: the updates' leaves .* differ from those the "
                                         r"state was built for .*extra: \['x'\]"):
        tx.update(more, tx.init(params), more)


@pytest.mark.parametrize("make", ["adafactor", "diffgrad"])
def test_adafactor_and_diffgrad_move_after_a_huge_gradient(make):
    from optorth.contrib import diffgrad

    tx = optorth.adafactor() if make == "adafactor" else diffgrad(1e-3)
    params = {"w": jnp.ones((4, 8))}
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.full((4, 8), 6e37)}, state, params)
    # The step of a clipped gradient: the learning rate times a unit direction (both
    # optimizers gave exactly 0 here, their second moment having overflowed to inf).
    np.testing.assert_allclose(updates["w"], -1e-2 if make == "adafactor" else -1e-3,
                               rtol=1e-3)
