"""A conformance suite run over every ready optimizer of optorth.

Each optimizer must: jit; wrap in ``optax.inject_hyperparams`` with the learning rate and
weight decay injectable (and changing them in the state must change the update); compose with
``optax.MultiSteps`` and ``optax.apply_if_finite``; give bf16 updates for bf16 parameters; keep
float32 state when asked (``mu_dtype="float32"``); give a finite update for a zero gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _ready import FAST, tiered

import optorth

FACTORIES = {
    "muon": optorth.muon,
    "turbo_muon": optorth.turbo_muon,
    "root": optorth.root,
    "auon": optorth.auon,
    "hybrid_auon": optorth.hybrid_auon,
    "normalized_sgdm": optorth.normalized_sgdm,
    "signum": optorth.signum,
    "trust_region": optorth.trust_region,
    "normuon": optorth.normuon,
    "adamuon": optorth.adamuon,
    "factored_muon": optorth.factored_muon,
}
STACKED = [(r"^blocks/kernel$", optorth.MatrixSpec.stacked())]


def _params(dtype=jnp.float32):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    return {
        "embed": {"embedding": jax.random.normal(keys[0], (10, 8), dtype)},
        "dense": {"kernel": jax.random.normal(keys[1], (8, 16), dtype),
                  "bias": jnp.zeros((16,), dtype)},
        "blocks": {"kernel": jax.random.normal(keys[2], (2, 16, 8), dtype)},
    }


def _grads(params, seed=1):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    noise = [jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(treedef, noise)


def _is_coeffs(x):
    return isinstance(x, optorth.blocks.OrthogonalizeState)


def _without_coeffs(state):
    return [x for x in jax.tree.leaves(state, is_leaf=_is_coeffs) if not _is_coeffs(x)]


def _coeffs(state):
    return [x for x in jax.tree.leaves(state, is_leaf=_is_coeffs) if _is_coeffs(x)]


def _float_leaves(tree):
    return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]


@pytest.mark.parametrize("name,mu_dtype", [
    (n, "float32") if n in FAST else pytest.param(n, "float32", marks=pytest.mark.slow)
    for n in sorted(FACTORIES)] + [("muon", None)])
def test_jit_dtypes_and_zero_gradient(name, mu_dtype):
    params = _params(jnp.bfloat16)
    tx = FACTORIES[name](learning_rate=0.01, rules=STACKED, mu_dtype=mu_dtype,
                         weight_decay=0.1)
    state = tx.init(params)
    step = jax.jit(tx.update)
    state_dtype = jnp.bfloat16 if mu_dtype is None else jnp.float32
    for grads in (_grads(params), jax.tree.map(jnp.zeros_like, params)):
        updates, state = step(grads, state, params)
        for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
            assert u.dtype == jnp.bfloat16 and u.shape == p.shape
            assert bool(jnp.all(jnp.isfinite(u.astype(jnp.float32))))
        moments = [x for x in _float_leaves(_without_coeffs(state)) if x.ndim >= 1]
        assert moments and all(x.dtype == state_dtype for x in moments)
        assert all(x.dtype == jnp.float32 for x in _float_leaves(_coeffs(state)))
    # The matrix path ran for the kernels: they carry its momentum; the rest does not.
    mu = optorth.optimizers.matrix_state(state)[0].mu
    assert mu["dense"]["kernel"].shape == (8, 16) and mu["blocks"]["kernel"].shape == (2, 16, 8)
    assert isinstance(mu["embed"]["embedding"], optax.MaskedNode)
    assert isinstance(mu["dense"]["bias"], optax.MaskedNode)


@pytest.mark.parametrize("name", tiered(sorted(FACTORIES)))
def test_inject_multisteps_apply_if_finite(name):
    params = _params()
    inner = optax.inject_hyperparams(FACTORIES[name])(
        learning_rate=0.01, weight_decay=0.1, rules=STACKED)
    tx = optax.MultiSteps(optax.apply_if_finite(inner, max_consecutive_errors=3),
                          every_k_schedule=2)
    state = tx.init(params)
    step = jax.jit(tx.update)
    grads, zeros = _grads(params), jax.tree.map(jnp.zeros_like, params)
    bad = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.inf), grads)

    def hyper(state):
        return state.inner_opt_state.inner_state.hyperparams

    def two_steps(g, state):
        updates, state = step(g, state, params)  # accumulates
        assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))
        return step(g, state, params)  # applies the mean

    # Zero gradient, fresh momentum: the matrix update is pure weight decay, -lr·wd·p.
    updates, _ = two_steps(zeros, state)
    np.testing.assert_allclose(updates["dense"]["kernel"], -1e-3 * params["dense"]["kernel"],
                               rtol=1e-5, atol=1e-8)
    hyper(state)["learning_rate"] = jnp.asarray(0.02, jnp.float32)
    hyper(state)["weight_decay"] = jnp.asarray(0.5, jnp.float32)
    updates, _ = two_steps(zeros, state)
    np.testing.assert_allclose(updates["dense"]["kernel"], -1e-2 * params["dense"]["kernel"],
                               rtol=1e-5, atol=1e-8)
    hyper(state)["learning_rate"] = jnp.asarray(0.01, jnp.float32)

    updates, state = two_steps(grads, state)
    assert all(float(jnp.max(jnp.abs(u))) > 0 for u in jax.tree.leaves(updates))
    updates, state = two_steps(bad, state)  # non-finite mean: skipped
    assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))
    assert int(state.inner_opt_state.notfinite_count) == 1

    hyper(state)["learning_rate"] = jnp.asarray(0.0, jnp.float32)
    updates, state = two_steps(grads, state)
    for path in (("dense", "kernel"), ("blocks", "kernel")):
        assert float(jnp.max(jnp.abs(updates[path[0]][path[1]]))) == 0.0
