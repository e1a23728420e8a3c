"""normuon, adamuon and factored_muon against NumPy re-implementations of their papers'
update equations, plus their state sizes and the blocks they are made of."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optorth
from optorth import (
    MatrixSpec,
    adamuon,
    factored_muon,
    keep_matrix_norm,
    normuon,
    scale_by_elementwise_rms,
    scale_by_neuron_rms,
    scale_to_rms,
)
from optorth.optimizers import fallback_state, matrix_state

RNG = np.random.default_rng(5)
SHAPES = {"w": (16, 32), "w_tall": (32, 16), "b": (32,)}
JORDAN = (3.4445, -4.7750, 2.0315)


# ---------------------------------------------------------------- NumPy reference (float64)
def ns_jordan(g):
    """Muon's quintic Newton–Schulz, 5 steps, on the wide orientation (float64)."""
    a, b, c = JORDAN
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(5):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def normuon_direction(o, stats, t, b2=0.95):
    v = stats.get("v", np.zeros(o.shape[1]))
    v = b2 * v + (1 - b2) * np.mean(o**2, axis=0)  # per output neuron (column of (in, out))
    stats["v"] = v
    o_hat = o / (np.sqrt(v) + 1e-10)
    return o_hat * np.linalg.norm(o) / (np.linalg.norm(o_hat) + 1e-10)


def factored_direction(o, stats, t, b2=0.95):
    beta = min(b2, 1 - t**-0.8)
    r = beta * stats.get("r", 0.0) + (1 - beta) * np.mean(o**2 + 1e-30, axis=1)
    c = beta * stats.get("c", 0.0) + (1 - beta) * np.mean(o**2 + 1e-30, axis=0)
    stats.update(r=r, c=c)
    o_hat = o / np.sqrt(np.outer(r, c) / np.mean(r))
    return o_hat * np.linalg.norm(o) / (np.linalg.norm(o_hat) + 1e-10)


def adamuon_direction(o, stats, t, b2=0.999):
    v = b2 * stats.get("v", 0.0) + (1 - b2) * o**2
    stats["v"] = v
    o_hat = o / (np.sqrt(v / (1 - b2**t)) + 1e-8)
    return 0.2 * np.sqrt(o.size) * o_hat / (np.linalg.norm(o_hat) + 1e-8)


def reference_run(direction, params, grads, lr, wd, keller, beta=0.95):
    """Nesterov EMA momentum → NS → direction → [Keller scale] → weight decay → −lr."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    mom = {k: np.zeros(v.shape) for k, v in p.items()}
    stats = {k: {} for k in p}
    updates = []
    for t, g in enumerate(grads, start=1):
        u = {}
        for k in ("w", "w_tall"):
            mom[k] = beta * mom[k] + (1 - beta) * g[k]
            d = direction(ns_jordan((1 - beta) * g[k] + beta * mom[k]), stats[k], t)
            m, n = d.shape
            d = d * np.sqrt(max(1.0, n / m)) if keller else d
            u[k] = -lr * (d + wd * p[k])
        updates.append(u)
        p = {k: p[k] + u[k] for k in u}
    return updates


def _run(tx, params, grads):
    state = tx.init(params)
    step = jax.jit(tx.update)
    outs = []
    for g in grads:
        u, state = step({k: jnp.asarray(v, jnp.float32) for k, v in g.items()}, state, params)
        params = optax.apply_updates(params, u)
        outs.append(u)
    return outs, state


def _problem(steps=4, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: jnp.asarray(rng.standard_normal(s) * 0.1, jnp.float32) for k, s in SHAPES.items()}
    grads = [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(steps)]
    return params, grads


CASES = {
    "normuon": (normuon, normuon_direction, dict(learning_rate=0.02, weight_decay=0.01), True),
    "factored_muon": (
        factored_muon,
        factored_direction,
        dict(learning_rate=0.02, weight_decay=0.01),
        True,
    ),
    "adamuon": (adamuon, adamuon_direction, dict(learning_rate=6e-4, weight_decay=0.1), False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_numpy_reimplementation(name):
    """Four steps on a wide and a tall matrix: momentum, NS, the second-moment normalization,
    the scale, weight decay and the learning rate, against float64 NumPy. AdaMuon divides
    each entry by its own |O| at the first step, so float32 round-off of tiny entries of O
    shows more (observed ≤ 6e-5 of the largest entry, against ≤ 2e-6 for the others)."""
    factory, direction, kwargs, keller = CASES[name]
    tol = 3e-4 if name == "adamuon" else 2e-5
    params, grads = _problem()
    ours, _ = _run(factory(**kwargs), params, grads)
    ref = reference_run(
        direction, params, grads, kwargs["learning_rate"], kwargs["weight_decay"], keller
    )
    for step, (u, r) in enumerate(zip(ours, ref, strict=True)):
        for k in ("w", "w_tall"):
            scale = np.abs(r[k]).max()
            np.testing.assert_allclose(u[k], r[k], rtol=0, atol=tol * scale, err_msg=f"{k}@{step}")
        assert np.isfinite(np.asarray(u["b"])).all()


def _shapes(tree):
    return jax.tree.map(lambda x: x.shape, tree)


def test_state_sizes_match_docstrings():
    """Matrix path: momentum (m·n) + normuon n, adamuon m·n, factored_muon m + n per matrix,
    per matrix of a stacked leaf too. factored_muon's fallback is Adafactor (no m·n)."""
    params = {"w": jnp.zeros((16, 32)), "stack": jnp.zeros((3, 8, 24)), "b": jnp.zeros(32)}
    rules = [("stack", MatrixSpec.stacked())]
    states = {f.__name__: f(rules=rules).init(params) for f in (normuon, adamuon, factored_muon)}
    masked = optax.MaskedNode()
    for name, state in states.items():
        momentum = matrix_state(state)[0].mu
        assert _shapes(momentum) == {"w": (16, 32), "stack": (3, 8, 24), "b": masked}, name
    second = {k: matrix_state(s)[2] for k, s in states.items()}
    assert _shapes(second["normuon"].v) == {"w": (1, 32), "stack": (3, 24), "b": masked}
    assert _shapes(second["adamuon"].v) == {"w": (16, 32), "stack": (3, 8, 24), "b": masked}
    assert _shapes(second["factored_muon"].v_row) == {"w": (1, 16), "stack": (3, 8), "b": masked}
    assert _shapes(second["factored_muon"].v_col) == {"w": (1, 32), "stack": (3, 24), "b": masked}
    # The fallback is optorth.adafactor(), a ready optimizer with its own integer-leaf guard.
    adafactor_state = fallback_state(states["factored_muon"])
    fallback = adafactor_state.inner_states["train"].inner_state[0]
    assert isinstance(fallback, optorth.blocks.ScaleByFactoredRMSState)
    assert _shapes(fallback.v) == {"w": masked, "stack": masked, "b": (32,)}


def test_neuron_normalization_equalizes_columns():
    """With β2 = 0, v is this step's per-column mean of O², so every output neuron of Ô has
    the same norm, and keep_matrix_norm restores the input Frobenius norm."""
    o = jnp.asarray(RNG.standard_normal((12, 20)) * np.linspace(0.1, 3.0, 20), jnp.float32)
    tx = keep_matrix_norm(scale_by_neuron_rms(0.0))
    out, _ = tx.update({"w": o}, tx.init({"w": o}))
    cols = np.linalg.norm(np.asarray(out["w"]), axis=0)
    np.testing.assert_allclose(cols, cols.mean(), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out["w"]), np.linalg.norm(o), rtol=1e-5)


def test_elementwise_rms_and_rms_alignment():
    o = jnp.asarray(RNG.standard_normal((12, 20)), jnp.float32)
    tx = optax.chain(scale_by_elementwise_rms(0.999), scale_to_rms(0.2))
    out, _ = tx.update({"w": o}, tx.init({"w": o}))
    # step 1 with bias correction: v̂ = O², so Ô = sign(O) (up to ε), then RMS 0.2
    np.testing.assert_allclose(out["w"], 0.2 * np.sign(o), rtol=1e-5)


def test_blocks_respect_stacked_specs_and_skip_fallback():
    specs = {"s": MatrixSpec.stacked(), "b": "fallback"}
    tree = {"s": jnp.asarray(RNG.standard_normal((3, 6, 10)), jnp.float32), "b": jnp.ones(10)}
    tx = keep_matrix_norm(scale_by_neuron_rms(0.0, specs=specs), specs=specs)
    state = tx.init(tree)
    assert state.v["s"].shape == (3, 10) and isinstance(state.v["b"], optax.MaskedNode)
    out, _ = tx.update(tree, state)
    np.testing.assert_array_equal(out["b"], tree["b"])
    for i in range(3):  # each matrix keeps its own norm
        np.testing.assert_allclose(
            np.linalg.norm(out["s"][i]), np.linalg.norm(tree["s"][i]), rtol=1e-5
        )


@pytest.mark.parametrize("factory", [normuon, adamuon, factored_muon])
def test_bf16_params_and_momentum(factory):
    """bf16 parameters, bf16 momentum: finite bf16 updates, float32 statistics, and the
    matrices still take the matrix path."""
    params = {k: jnp.asarray(RNG.standard_normal(s), jnp.bfloat16) for k, s in SHAPES.items()}
    grads = [{k: 1e4 * RNG.standard_normal(s) for k, s in SHAPES.items()} for _ in range(2)]
    tx = factory(mu_dtype="bfloat16")
    state = tx.init(params)
    dtypes = {x.dtype for x in jax.tree.leaves(matrix_state(state)) if x.shape == (16, 32)}
    assert jnp.dtype(jnp.bfloat16) in dtypes, "the momentum of 'w' must be on the matrix path"
    for g in grads:
        u, state = tx.update({k: jnp.asarray(v, jnp.bfloat16) for k, v in g.items()}, state, params)
        for k, v in u.items():
            assert v.dtype == jnp.bfloat16 and np.isfinite(np.asarray(v, np.float32)).all(), k
    second_moment = matrix_state(state)[2]
    stats = [x for x in jax.tree.leaves(second_moment) if x.ndim]
    assert stats and all(x.dtype == jnp.float32 for x in stats)


@pytest.mark.parametrize("factory", [normuon, adamuon, factored_muon])
def test_inject_hyperparams(factory):
    """Every float argument is injectable; the injected optimizer computes the same update."""
    params, grads = _problem(steps=1)
    g = {k: jnp.asarray(v, jnp.float32) for k, v in grads[0].items()}
    plain = factory(learning_rate=0.01)
    injected = optax.inject_hyperparams(factory)(learning_rate=0.01)
    u0, _ = plain.update(g, plain.init(params), params)
    state = injected.init(params)
    u1, state = jax.jit(injected.update)(g, state, params)
    assert {"learning_rate", "beta2", "beta", "eps"} <= set(state.hyperparams)
    for k in SHAPES:
        np.testing.assert_allclose(u1[k], u0[k], rtol=0, atol=1e-4 * float(jnp.abs(u0[k]).max()))
