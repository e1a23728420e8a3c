"""optorth.contrib.bloop against the paper's equations in NumPy, conformance and bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optorth.contrib import bloop

SHAPES = {"a": (3, 4), "b": (5,), "c": {"d": (2, 2, 3)}}


def _tree(rng, shapes=SHAPES):
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s), jnp.float32), shapes,
                        is_leaf=lambda s: isinstance(s, tuple))


def _numpy_bloop(mains, auxs, strength, decay, per_leaf):
    """Hsieh et al. 2024: e ← decay·e + (1 − decay)·g, then d = g + λ(a − ⟨a,e⟩/‖e‖² e)."""
    leaves = [[np.asarray(x, np.float64) for x in jax.tree.leaves(t)] for t in mains]
    aux_leaves = [[np.asarray(x, np.float64) for x in jax.tree.leaves(t)] for t in auxs]
    ema = [np.zeros_like(x) for x in leaves[0]]
    out = []
    for g, a in zip(leaves, aux_leaves, strict=True):
        ema = [decay * e + (1 - decay) * x for e, x in zip(ema, g, strict=True)]
        if per_leaf:
            ratios = [np.sum(x * e) / np.sum(e * e) for x, e in zip(a, ema, strict=True)]
        else:
            flat_a = np.concatenate([x.ravel() for x in a])
            flat_e = np.concatenate([e.ravel() for e in ema])
            ratios = [flat_a @ flat_e / (flat_e @ flat_e)] * len(ema)
        out.append([x + strength * (y - r * e)
                    for x, y, e, r in zip(g, a, ema, ratios, strict=True)])
    return out


def _run(tx, mains, auxs):
    state = tx.init(mains[0])
    update = jax.jit(lambda g, s, a: tx.update(g, s, aux_grads=a))
    out = []
    for g, a in zip(mains, auxs, strict=True):
        u, state = update(g, state, a)
        out.append([np.asarray(x, np.float64) for x in jax.tree.leaves(u)])
    return out, state


@pytest.mark.parametrize("per_leaf", [False, True])
def test_matches_numpy_reference(per_leaf):
    rng = np.random.default_rng(0)
    drift = _tree(rng)  # a persistent main direction plus noise, like mini-batch gradients
    mains = [jax.tree.map(lambda d, n: d + 0.5 * n, drift, _tree(rng)) for _ in range(12)]
    auxs = [_tree(rng) for _ in range(12)]
    got, _ = _run(bloop(0.7, decay=0.9, per_leaf=per_leaf), mains, auxs)
    want = _numpy_bloop(mains, auxs, 0.7, 0.9, per_leaf)
    for step_got, step_want in zip(got, want, strict=True):
        for x, y in zip(step_got, step_want, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_whole_vector_and_per_leaf_differ_and_whole_is_orthogonal():
    rng = np.random.default_rng(1)
    g, a = _tree(rng), _tree(rng)
    whole, _ = _run(bloop(1.0, decay=0.0), [g], [a])
    leafwise, _ = _run(bloop(1.0, decay=0.0, per_leaf=True), [g], [a])
    flat_g = np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])
    projected = np.concatenate([np.ravel(x) for x in whole[0]]) - flat_g
    assert abs(projected @ flat_g) < 1e-4 * np.linalg.norm(projected) * np.linalg.norm(flat_g)
    assert not all(np.allclose(x, y) for x, y in zip(whole[0], leafwise[0], strict=True))


def test_strength_zero_is_main_gradient():
    rng = np.random.default_rng(2)
    g, a = _tree(rng), _tree(rng)
    got, _ = _run(bloop(0.0), [g], [a])
    for x, y in zip(got[0], jax.tree.leaves(g), strict=True):
        np.testing.assert_array_equal(x, np.asarray(y))


def test_inject_hyperparams_strength():
    rng = np.random.default_rng(3)
    g, a = _tree(rng), _tree(rng)
    tx = optax.inject_hyperparams(bloop)(strength=0.5, decay=0.9)
    state = tx.init(g)
    update = jax.jit(lambda g, s, a: tx.update(g, s, aux_grads=a))
    u1, _ = update(g, state, a)
    state.hyperparams["strength"] = jnp.asarray(2.0)
    u2, _ = update(g, state, a)
    want1, = _numpy_bloop([g], [a], 0.5, 0.9, False)
    want2, = _numpy_bloop([g], [a], 2.0, 0.9, False)
    for x, y in zip(jax.tree.leaves(u1), want1, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    for x, y in zip(jax.tree.leaves(u2), want2, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_chain_passes_aux_grads_through():
    rng = np.random.default_rng(4)
    g, a = _tree(rng), _tree(rng)
    tx = optax.chain(optax.clip_by_global_norm(1e6), bloop(0.3), optax.sgd(0.1))
    state = tx.init(g)
    u, _ = jax.jit(lambda g, s, a: tx.update(g, s, aux_grads=a))(g, state, a)
    want, = _numpy_bloop([g], [a], 0.3, 0.99, False)
    for x, y in zip(jax.tree.leaves(u), want, strict=True):
        np.testing.assert_allclose(x, -0.1 * y, rtol=1e-5, atol=1e-6)


def test_apply_if_finite_skips_nonfinite_main_gradients():
    rng = np.random.default_rng(5)
    g, a = _tree(rng), _tree(rng)
    tx = optax.apply_if_finite(bloop(0.5), max_consecutive_errors=3)
    state = tx.init(g)
    bad = jax.tree.map(lambda x: x.at[0].set(jnp.nan), g)
    u, state = tx.update(bad, state, aux_grads=a)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))
    assert int(state.inner_state.count) == 0
    u, state = tx.update(g, state, aux_grads=a)
    want, = _numpy_bloop([g], [a], 0.5, 0.99, False)
    for x, y in zip(jax.tree.leaves(u), want, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_multisteps_runs_and_emits_every_k():
    # MultiSteps averages the main gradients only; aux_grads goes to the inner update as given.
    rng = np.random.default_rng(6)
    g, a = _tree(rng), _tree(rng)
    tx = optax.MultiSteps(bloop(0.5), every_k_schedule=2)
    state = tx.init(g)
    u, state = tx.update(g, state, aux_grads=a)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))
    u, state = tx.update(g, state, aux_grads=a)
    want, = _numpy_bloop([g], [a], 0.5, 0.99, False)
    for x, y in zip(jax.tree.leaves(u), want, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("per_leaf", [False, True])
def test_zero_inputs_are_finite(per_leaf):
    zeros = jax.tree.map(jnp.zeros_like, _tree(np.random.default_rng(7)))
    aux = _tree(np.random.default_rng(8))
    got, _ = _run(bloop(1.0, per_leaf=per_leaf), [zeros, zeros], [zeros, aux])
    assert all(np.all(np.isfinite(x)) for step in got for x in step)
    # ‖e‖ = 0: nothing is projected, the aux gradient passes whole.
    for x, y in zip(got[1], jax.tree.leaves(aux), strict=True):
        np.testing.assert_allclose(x, np.asarray(y), rtol=1e-6)


def test_bfloat16_params_give_bfloat16_updates():
    rng = np.random.default_rng(9)
    g = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _tree(rng))
    a = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _tree(rng))
    tx = bloop(0.5)
    state = tx.init(g)
    u, state = jax.jit(lambda g, s, a: tx.update(g, s, aux_grads=a))(g, state, a)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))
    assert all(np.all(np.isfinite(np.asarray(x, np.float32))) for x in jax.tree.leaves(u))


def test_missing_aux_grads():
    tx = bloop(0.5)
    g = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"bloop: update needs the auxiliary gradients.*aux_grads"):
        tx.update(g, tx.init(g))
    chained = optax.chain(bloop(0.5), optax.sgd(0.1))
    with pytest.raises(ValueError, match=r"bloop: .*pass aux_grads= to the chain"):
        chained.update(g, chained.init(g))


@pytest.mark.parametrize("kwargs, match", [
    (dict(strength=-0.1), r"bloop: strength must be a finite number >= 0; got -0.1"),
    (dict(strength=0.1, decay=1.0), r"bloop: decay must lie in \[0, 1\); got 1.0"),
    (dict(strength=0.1, decay=-0.5), r"bloop: decay must lie in \[0, 1\)"),
    (dict(strength=0.1, per_leaf="yes"), r"bloop: per_leaf must be True or False"),
    (dict(strength="big"), r"bloop: strength must be a real number"),
])
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bloop(**kwargs)


def test_aux_of_another_structure_names_the_leaf():
    tx = bloop(0.5)
    g = {"w": jnp.ones(3), "b": jnp.ones(2)}
    state = tx.init(g)
    with pytest.raises(ValueError, match=r"leaf \"\['b'\]\" of the main gradients is missing"):
        tx.update(g, state, aux_grads={"w": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"aux_grads has leaf \"\['x'\]\""):
        tx.update(g, state, aux_grads={"w": jnp.ones(3), "b": jnp.ones(2), "x": jnp.ones(1)})
    with pytest.raises(ValueError, match=r"aux_grads leaf \"\['w'\]\" has shape \(4,\)"):
        tx.update(g, state, aux_grads={"w": jnp.ones(4), "b": jnp.ones(2)})
