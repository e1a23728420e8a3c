"""aegd against AEGD written in NumPy, the energy property, conformance, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optorth.contrib import aegd


def _logistic(seed=0, n=40, d=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.sign(x @ rng.normal(size=d) + 0.3 * rng.normal(size=n))
    return x, y, rng.normal(size=d)


def _np_loss_grad(w, x, y):
    m = y * (x @ w)
    loss = np.mean(np.logaddexp(0.0, -m))
    grad = x.T @ (-y / (1.0 + np.exp(m))) / len(y)
    return loss, grad


def _numpy_aegd(x, y, w0, eta, c, steps, scale=1.0):
    """Liu & Tian, Algorithm 1: r_0 = √(f_0 + c); v = ∇f/(2√(f + c)); r ← r/(1 + 2ηv²);
    w ← w − 2η r v (with the gradient multiplied by ``scale``, a fixed preconditioner)."""
    w, ws, rs = w0.copy(), [], []
    r = None
    for _ in range(steps):
        f, g = _np_loss_grad(w, x, y)
        if r is None:
            r = np.full_like(w, np.sqrt(f + c))
        v = scale * g / (2 * np.sqrt(f + c))
        r = r / (1 + 2 * eta * v * v)
        w = w - 2 * eta * r * v
        ws.append(w.copy())
        rs.append(r.copy())
    return np.array(ws), np.array(rs)


def _run(tx, x, y, w0, steps):
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    loss_fn = lambda w: jnp.mean(jnp.logaddexp(0.0, -y * (x @ w)))  # noqa: E731
    params = jnp.asarray(w0, jnp.float32)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state

    ws, rs = [], []
    for _ in range(steps):
        params, state = step(params, state)
        ws.append(np.asarray(params))
        rs.append(np.asarray(state.energy))
    return np.array(ws), np.array(rs), state


@pytest.mark.parametrize("eta,c", [(0.5, 1.0), (3.0, 0.5)])
def test_matches_numpy_reference(eta, c):
    x, y, w0 = _logistic()
    ref_w, ref_r = _numpy_aegd(x, y, w0, eta, c, 15)
    got_w, got_r, _ = _run(aegd(eta, c), x, y, w0, 15)
    np.testing.assert_allclose(got_w, ref_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_r, ref_r, rtol=1e-5)


def test_preconditioner_transforms_the_gradient_first():
    x, y, w0 = _logistic(1)
    ref_w, _ = _numpy_aegd(x, y, w0, 0.2, 1.0, 12, scale=3.0)
    got_w, _, _ = _run(aegd(0.2, preconditioner=optax.scale(3.0)), x, y, w0, 12)
    np.testing.assert_allclose(got_w, ref_w, rtol=1e-5, atol=1e-6)
    _, _, state = _run(aegd(0.2, preconditioner=optax.scale_by_rms()), x, y, w0, 3)
    assert np.all(np.isfinite(np.asarray(state.energy)))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), eta=st.floats(1e-3, 100.0),
       c=st.floats(1e-2, 10.0), scale=st.floats(1e-3, 1e3))
def test_energy_never_increases(seed, eta, c, scale):
    rng = np.random.default_rng(seed)
    tx = aegd(eta, c)
    params = jnp.zeros(7)
    state = tx.init(params)
    update = jax.jit(tx.update)
    previous = None
    for _ in range(30):
        g = jnp.asarray(scale * rng.normal(size=7), jnp.float32)
        value = jnp.float32(rng.exponential(scale))
        u, state = update(g, state, params, value=value)
        r = np.asarray(state.energy)
        assert np.all(np.isfinite(r)) and np.all(np.isfinite(np.asarray(u)))
        if previous is not None:
            assert np.all(r <= previous)
        previous = r


def test_inject_hyperparams_and_chain():
    tx = optax.inject_hyperparams(aegd)(learning_rate=0.1)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    g = {"w": jnp.array([1.0, -1.0])}
    u1, _ = jax.jit(tx.update)(g, state, params, value=jnp.float32(3.0))
    state.hyperparams["learning_rate"] = jnp.asarray(0.2)
    u2, _ = jax.jit(tx.update)(g, state, params, value=jnp.float32(3.0))
    assert not np.allclose(u1["w"], u2["w"])
    chained = optax.chain(optax.clip_by_global_norm(1e6), aegd(0.1))
    s = chained.init(params)
    u3, _ = jax.jit(chained.update)(g, s, params, value=jnp.float32(3.0))
    np.testing.assert_allclose(u3["w"], u1["w"], rtol=1e-6)


def test_schedule_learning_rate():
    tx = aegd(optax.linear_schedule(0.1, 0.0, 2))
    params = jnp.ones(2)
    state = tx.init(params)
    _, state = tx.update(jnp.ones(2), state, params, value=1.0)
    _, state = tx.update(jnp.ones(2), state, params, value=1.0)
    u, state = tx.update(jnp.ones(2), state, params, value=1.0)
    np.testing.assert_allclose(u, 0.0)


def test_zero_gradient_bf16_and_traced_guard():
    tx = aegd(0.1)
    params = {"w": jnp.zeros((2, 3), jnp.bfloat16)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    u, state = update({"w": jnp.zeros((2, 3), jnp.bfloat16)}, state, params,
                      value=jnp.bfloat16(1.0))
    assert u["w"].dtype == jnp.bfloat16 and np.all(np.asarray(u["w"], np.float32) == 0)
    np.testing.assert_allclose(state.energy["w"], np.sqrt(2.0), rtol=1e-6)
    assert state.energy["w"].dtype == jnp.float32
    # f + c ≤ 0 under jit: the step is skipped, the energy kept
    u, state2 = update({"w": jnp.ones((2, 3), jnp.bfloat16)}, state, params,
                       value=jnp.bfloat16(-2.0))
    assert np.all(np.asarray(u["w"], np.float32) == 0)
    np.testing.assert_array_equal(state2.energy["w"], state.energy["w"])


def test_first_invalid_value_leaves_energy_unstarted():
    tx = aegd(0.1)
    state = tx.init(jnp.ones(2))
    _, state = jax.jit(tx.update)(jnp.ones(2), state, None, value=jnp.float32(-5.0))
    assert not bool(state.started)
    _, state = jax.jit(tx.update)(jnp.ones(2), state, None, value=jnp.float32(3.0))
    assert bool(state.started) and np.all(np.asarray(state.energy) < 2.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(learning_rate=-1.0), r"aegd: learning_rate must be a finite number >= 0"),
    (dict(learning_rate=0.1, c=-1.0), r"aegd: c must be a finite number > 0"),
    (dict(learning_rate=0.1, c=0.0), r"aegd: c must be a finite number > 0"),
    (dict(learning_rate="fast"), r"aegd: learning_rate must be a number or an optax schedule"),
    (dict(learning_rate=0.1, preconditioner="adam"), r"preconditioner must be an optax"),
])
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        aegd(**kwargs)


def test_missing_value_and_nonpositive_shift():
    tx = aegd(0.1, c=1.0)
    state = tx.init(jnp.ones(2))
    with pytest.raises(ValueError, match=r"aegd: update needs the loss value.*"
                                         r"tx.update\(grads, state, params, value=loss\)"):
        tx.update(jnp.ones(2), state)
    with pytest.raises(ValueError, match=r"the loss value=-2.0 plus c=1.0 must be > 0"):
        tx.update(jnp.ones(2), state, value=-2.0)
