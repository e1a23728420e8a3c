"""optorth.muon configured like optax.contrib.muon reproduces its parameter trajectory.

optax 0.2.8's muon debiases its EMA NAdam-style, normalizes by ‖X‖_F + 1e-8, routes leaves by
its dimension-numbers tree, and uses NAdamW (Nesterov on, Muon's eps, b2 0.999, Muon's lr)
for the rest. optorth is configured to match: ``bias_correction=True,
ns=NewtonSchulz(eps=1e-8), fallback=optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8,
nesterov=True)`` and rules that route the embedding to the fallback (optax sends every 2-D
leaf to Muon by default).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import MuonDimensionNumbers as DimNums

import optorth
from optorth import MatrixSpec

LR, WD, STEPS = 0.02, 0.01, 20


def _params():
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    return {
        "embed": {"embedding": jax.random.normal(keys[0], (12, 8))},
        "dense": {"kernel": 0.3 * jax.random.normal(keys[1], (8, 16)), "bias": jnp.zeros(16)},
        "stack": {"kernel": 0.3 * jax.random.normal(keys[2], (2, 16, 16))},
        "conv": {"kernel": 0.3 * jax.random.normal(keys[3], (3, 1, 16, 8))},
        "out": {"kernel": 0.3 * jax.random.normal(keys[4], (8, 12))},
    }


def _loss(params, tokens):
    h = params["embed"]["embedding"][tokens]  # (T, 8)
    h = jnp.tanh(h @ params["dense"]["kernel"] + params["dense"]["bias"])
    for layer in range(2):
        h = jnp.tanh(h @ params["stack"]["kernel"][layer])
    window = jnp.stack([jnp.roll(h, s, axis=0) for s in (-1, 0, 1)])[:, None]  # (3, 1, T, 16)
    h = jnp.tanh(jnp.einsum("abti,abio->to", window, params["conv"]["kernel"]))
    logits = h @ params["out"]["kernel"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()


OPTAX_DIMS = {
    "embed": {"embedding": None},
    "dense": {"kernel": DimNums(), "bias": None},
    "stack": {"kernel": DimNums(reduction_axis=1, output_axis=2)},
    "conv": {"kernel": DimNums(reduction_axis=(0, 1, 2), output_axis=3)},
    "out": {"kernel": DimNums()},
}
RULES = [("^stack/kernel$", MatrixSpec.stacked()), ("^out/kernel$", MatrixSpec())]
MATCH_OPTAX = dict(bias_correction=True, weight_decay=WD, rules=RULES,
                   fallback=optax.adamw(LR, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                                        nesterov=True))


def _trajectory(tx):
    params = _params()
    state = tx.init(params)

    @jax.jit
    def step(params, state, tokens):
        grads = jax.grad(_loss)(params, tokens)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for i in range(STEPS):
        tokens = jax.random.randint(jax.random.PRNGKey(100 + i), (7,), 0, 12)
        params, state = step(params, state, tokens)
    return params


@pytest.mark.parametrize("variant", ["muon", "turbo_muon"])
def test_matches_optax_contrib_muon_for_20_steps(variant):
    if variant == "muon":
        reference = optax.contrib.muon(LR, weight_decay=WD,
                                       muon_weight_dimension_numbers=OPTAX_DIMS)
        ours = optorth.muon(LR, ns=optorth.NewtonSchulz(eps=1e-8), **MATCH_OPTAX)
    else:
        rows = optorth.ns.PRESETS["turbo"].table  # You's table without its first row, with AOL
        reference = optax.contrib.muon(LR, ns_coeffs=rows, ns_steps=len(rows),
                                       preconditioning="aol", weight_decay=WD,
                                       muon_weight_dimension_numbers=OPTAX_DIMS)
        ours = optorth.turbo_muon(LR, ns=optorth.NewtonSchulz("turbo", eps=1e-8),
                                  **MATCH_OPTAX)
    expected, got = _trajectory(reference), _trajectory(ours)
    start = _params()
    for path in (("embed", "embedding"), ("dense", "kernel"), ("dense", "bias"),
                 ("stack", "kernel"), ("conv", "kernel"), ("out", "kernel")):
        e, g, s = (t[path[0]][path[1]] for t in (expected, got, start))
        assert float(jnp.max(jnp.abs(e - s))) > 0.05  # every leaf moved
        np.testing.assert_allclose(g, e, atol=1e-5, err_msg=str(path))


def test_default_routing_differs_from_optax_where_it_should():
    """optax 0.2.8 sends 2-D embeddings to Muon and 3-D/4-D kernels to AdamW by default."""
    params = _params()
    routes = optorth.route(params, RULES[:1])
    assert routes["embed"]["embedding"] == "fallback"
    assert routes["conv"]["kernel"] == MatrixSpec.conv()
    assert routes["stack"]["kernel"] == MatrixSpec.stacked()
