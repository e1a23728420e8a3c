"""polyak_momentum against the generalized Polyak step written in NumPy, conformance, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optorth.contrib import polyak_momentum


def _quadratic(seed=0, n=6):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = q @ np.diag(np.logspace(0, 2, n)) @ q.T
    b = rng.normal(size=n)
    x_star = np.linalg.solve(a, b)
    f_star = -0.5 * b @ x_star
    return a, b, float(f_star), rng.normal(size=n)


def _numpy_alr_mag(a, b, f_star, x0, beta, max_step, c, steps):
    """ALR-(S)MAG: d = g + βd; η = min((f − f*)/(c‖d‖²), η_max); x ← x − ηd."""
    x, d, xs = x0.copy(), np.zeros_like(x0), []
    for _ in range(steps):
        f = 0.5 * x @ a @ x - b @ x
        g = a @ x - b
        d = g + beta * d
        eta = min((f - f_star) / (c * (d @ d)), max_step)
        x = x - eta * d
        xs.append(x.copy())
    return np.array(xs)


def _run(tx, a, b, x0, steps, jit=True):
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    loss_fn = lambda p: 0.5 * p["x"] @ a @ p["x"] - b @ p["x"]  # noqa: E731
    params = {"x": jnp.asarray(x0, jnp.float32)}
    state = tx.init(params)

    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step) if jit else step
    xs = []
    for _ in range(steps):
        params, state = step(params, state)
        xs.append(np.asarray(params["x"]))
    return np.array(xs), state


@pytest.mark.parametrize("beta,variant,c,max_step", [
    (0.9, "deterministic", 1.0, 10.0), (0.5, "deterministic", 1.0, 0.02),
    (0.9, "stochastic", 2.0, 10.0)])
def test_matches_numpy_reference(beta, variant, c, max_step):
    a, b, f_star, x0 = _quadratic()
    # f_star shifted down a little so that f − f* stays well above float32 resolution
    f_lb = f_star - 1e-2
    ref = _numpy_alr_mag(a, b, f_lb, x0, beta, max_step, c, 12)
    got, _ = _run(polyak_momentum(beta, f_star=f_lb, max_step=max_step, variant=variant, c=c),
                  a, b, x0, 12)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_beta_zero_is_optax_polyak_sgd():
    a, b, f_star, x0 = _quadratic(1)
    got, _ = _run(polyak_momentum(0.0, f_star=f_star - 1, max_step=0.5), a, b, x0, 10)
    ref, _ = _run(optax.polyak_sgd(max_learning_rate=0.5, f_min=f_star - 1, variant="sps+"),
                  a, b, x0, 10)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_converges_on_ill_conditioned_quadratic():
    a, b, f_star, x0 = _quadratic(2)
    xs, _ = _run(polyak_momentum(0.9, f_star=f_star, max_step=10.0), a, b, x0, 300)
    x = xs[-1]
    assert 0.5 * x @ a @ x - b @ x - f_star < 1e-3 * (0.5 * x0 @ a @ x0 - b @ x0 - f_star)


def test_chain_passes_value_and_jit():
    tx = optax.chain(optax.clip_by_global_norm(1e6), polyak_momentum(0.5, max_step=10.0))
    params = {"w": jnp.array([2.0, 0.0])}
    state = tx.init(params)
    update = jax.jit(tx.update)
    u, state = update({"w": jnp.array([2.0, 0.0])}, state, params, value=jnp.float32(2.0))
    np.testing.assert_allclose(u["w"], [-1.0, 0.0])


def test_inject_hyperparams_changes_update():
    tx = optax.inject_hyperparams(polyak_momentum)(beta=0.5, max_step=0.1)
    params = {"w": jnp.array([2.0, 0.0])}
    state = tx.init(params)
    g = {"w": jnp.array([2.0, 0.0])}
    u1, _ = jax.jit(tx.update)(g, state, params, value=jnp.float32(2.0))
    state.hyperparams["max_step"] = jnp.asarray(0.2)
    u2, _ = jax.jit(tx.update)(g, state, params, value=jnp.float32(2.0))
    np.testing.assert_allclose(u1["w"], [-0.2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(u2["w"], [-0.4, 0.0], rtol=1e-6)
    state.hyperparams["f_star"] = jnp.asarray(1.5)  # gap 0.5, ‖d‖² = 4 → η = 0.125
    u3, _ = jax.jit(tx.update)(g, state, params, value=jnp.float32(2.0))
    np.testing.assert_allclose(u3["w"], [-0.25, 0.0], rtol=1e-6)


def test_zero_gradient_and_loss_at_f_star_are_finite():
    tx = polyak_momentum(0.9)
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    u, state = tx.update({"w": jnp.zeros(3)}, state, params, value=jnp.float32(1.0))
    assert np.all(np.asarray(u["w"]) == 0)
    u, state = tx.update({"w": jnp.ones(3)}, state, params, value=jnp.float32(0.0))
    assert np.all(np.asarray(u["w"]) == 0) and float(state.step_size) == 0.0


def test_traced_value_below_f_star_gives_zero_step():
    tx = polyak_momentum(0.9, f_star=1.0)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    u, state = jax.jit(tx.update)({"w": jnp.ones(3)}, state, params, value=jnp.float32(0.5))
    assert np.all(np.asarray(u["w"]) == 0) and float(state.step_size) == 0.0
    np.testing.assert_allclose(state.momentum["w"], np.ones(3))  # momentum still accumulated


def test_bf16_params_give_bf16_updates():
    tx = polyak_momentum(0.9)
    params = {"w": jnp.ones((2, 3), jnp.bfloat16)}
    state = tx.init(params)
    u, state = jax.jit(tx.update)({"w": jnp.ones((2, 3), jnp.bfloat16)}, state, params,
                                  value=jnp.bfloat16(2.0))
    assert u["w"].dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(u["w"], np.float32)))
    assert state.momentum["w"].dtype == jnp.float32


@pytest.mark.parametrize("kwargs,match", [
    (dict(beta=1.0), r"polyak_momentum: beta must lie in \[0, 1\)"),
    (dict(beta=-0.1), r"polyak_momentum: beta must lie in \[0, 1\)"),
    (dict(max_step=-1.0), r"polyak_momentum: max_step must be a finite number >= 0"),
    (dict(c=0.0), r"polyak_momentum: c must be a finite number > 0"),
    (dict(c=0.5), r"c=0.5 applies to variant='stochastic' only"),
    (dict(variant="stoch"), r"variant='stoch'; expected one of .*Did you mean 'stochastic'"),
    (dict(nesterov=True), r"nesterov=True is not offered"),
    (dict(f_star="0"), r"f_star must be a real number"),
    (dict(eps=-1.0), r"eps must be a finite number >= 0"),
])
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        polyak_momentum(**kwargs)


def test_missing_value_and_value_below_f_star():
    tx = polyak_momentum(0.9, f_star=1.0)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"polyak_momentum: update needs the loss value.*"
                                         r"tx.update\(grads, state, params, value=loss\)"):
        tx.update(params, state, params)
    with pytest.raises(ValueError, match=r"the loss value=0.5 is below f_star=1.0"):
        tx.update(params, state, params, value=0.5)
    with pytest.raises(ValueError, match=r"value must be the scalar loss"):
        tx.update(params, state, params, value=jnp.ones(3))
