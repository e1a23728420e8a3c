"""optorth.contrib.diffgrad against Algorithm 1 of the paper in NumPy, conformance, bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optorth.contrib import diffgrad, scale_by_diffgrad


def _numpy_diffgrad(grads, lr, b1, b2, eps):
    """Dubey et al. 2019, Algorithm 1, elementwise, g_0 = 0: the updates −α ξ m̂/(√v̂ + ε)."""
    m = v = prev = np.zeros_like(grads[0], np.float64)
    out = []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        xi = 1 / (1 + np.exp(-np.abs(prev - g)))
        out.append(-lr * xi * m_hat / (np.sqrt(v_hat) + eps))
        prev = g
    return out


def _grads(steps=15, shape=(4, 6), seed=0):
    rng = np.random.default_rng(seed)
    # varying gradients: a slowly turning signal, noise and changing scale
    base = rng.standard_normal(shape)
    return [np.float32((base * np.cos(0.3 * t) + 0.4 * rng.standard_normal(shape))
                       * (1 + 0.5 * np.sin(t))) for t in range(steps)]


@pytest.mark.parametrize("b1, b2, eps", [(0.9, 0.999, 1e-8), (0.5, 0.9, 1e-3)])
def test_matches_numpy_reference(b1, b2, eps):
    grads = _grads()
    tx = diffgrad(0.01, b1=b1, b2=b2, eps=eps)
    state = tx.init(jnp.zeros(grads[0].shape))
    update = jax.jit(tx.update)
    want = _numpy_diffgrad(grads, 0.01, b1, b2, eps)
    for g, w in zip(grads, want, strict=True):
        u, state = update(jnp.asarray(g), state)
        np.testing.assert_allclose(np.asarray(u), w, rtol=1e-5, atol=1e-9)


def test_diffgrad_is_scale_by_diffgrad_then_learning_rate():
    grads = _grads(steps=3)
    a, b = diffgrad(0.1), optax.chain(scale_by_diffgrad(), optax.scale_by_learning_rate(0.1))
    sa, sb = a.init(jnp.zeros((4, 6))), b.init(jnp.zeros((4, 6)))
    for g in grads:
        ua, sa = a.update(jnp.asarray(g), sa)
        ub, sb = b.update(jnp.asarray(g), sb)
        np.testing.assert_array_equal(np.asarray(ua), np.asarray(ub))


def test_constant_gradient_halves_adam():
    # ξ = sigmoid(0) = 1/2 once consecutive gradients agree; step 1 has ξ = sigmoid(|g|).
    g = jnp.full((3,), 0.7)
    dg, adam = scale_by_diffgrad(), optax.scale_by_adam()
    s1, s2 = dg.init(g), adam.init(g)
    for step in range(4):
        u1, s1 = dg.update(g, s1)
        u2, s2 = adam.update(g, s2)
        factor = 1 / (1 + np.exp(-0.7)) if step == 0 else 0.5
        # optax computes 1 − 0.999^t in float32 (about 1e-5 relative error), hence 1e-4 here
        np.testing.assert_allclose(np.asarray(u1), factor * np.asarray(u2), rtol=1e-4)


def test_inject_hyperparams_learning_rate():
    grads = _grads(steps=2)
    tx = optax.inject_hyperparams(diffgrad)(learning_rate=0.01)
    state = tx.init(jnp.zeros((4, 6)))
    update = jax.jit(tx.update)
    u1, _ = update(jnp.asarray(grads[0]), state)
    state.hyperparams["learning_rate"] = jnp.asarray(0.03)
    u2, _ = update(jnp.asarray(grads[0]), state)
    np.testing.assert_allclose(np.asarray(u2), 3 * np.asarray(u1), rtol=1e-5)
    assert not np.allclose(np.asarray(u1), np.asarray(u2))


def test_inject_hyperparams_b1_b2_eps():
    grads = _grads(steps=4)
    tx = optax.inject_hyperparams(diffgrad)(learning_rate=0.01, b1=0.5, b2=0.9, eps=1e-3)
    state = tx.init(jnp.zeros((4, 6)))
    want = _numpy_diffgrad(grads, 0.01, 0.5, 0.9, 1e-3)
    for g, w in zip(grads, want, strict=True):
        u, state = jax.jit(tx.update)(jnp.asarray(g), state)
        np.testing.assert_allclose(np.asarray(u), w, rtol=1e-5, atol=1e-9)


def test_multisteps_averages_before_the_update():
    grads = _grads(steps=4)
    tx = optax.MultiSteps(diffgrad(0.01), every_k_schedule=2)
    state = tx.init(jnp.zeros((4, 6)))
    means = [(grads[0] + grads[1]) / 2, (grads[2] + grads[3]) / 2]
    want = _numpy_diffgrad(means, 0.01, 0.9, 0.999, 1e-8)
    emitted = []
    for g in grads:
        u, state = jax.jit(tx.update)(jnp.asarray(g), state)
        emitted.append(np.asarray(u))
    np.testing.assert_allclose(emitted[1], want[0], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(emitted[3], want[1], rtol=1e-5, atol=1e-9)
    assert np.all(emitted[0] == 0) and np.all(emitted[2] == 0)


def test_apply_if_finite():
    grads = _grads(steps=2)
    tx = optax.apply_if_finite(diffgrad(0.01), max_consecutive_errors=2)
    state = tx.init(jnp.zeros((4, 6)))
    u, state = tx.update(jnp.full((4, 6), jnp.inf), state)
    assert np.all(np.asarray(u) == 0)
    want = _numpy_diffgrad(grads, 0.01, 0.9, 0.999, 1e-8)
    for g, w in zip(grads, want, strict=True):
        u, state = tx.update(jnp.asarray(g), state)
        np.testing.assert_allclose(np.asarray(u), w, rtol=1e-5, atol=1e-9)


def test_zero_gradients_are_finite():
    tx = diffgrad(0.01)
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    state = tx.init(params)
    for _ in range(3):
        u, state = jax.jit(tx.update)(params, state)
        assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))


def test_bfloat16_params_give_bfloat16_updates():
    params = {"w": jnp.ones((2, 3), jnp.bfloat16)}
    tx = diffgrad(0.01)
    state = tx.init(params)
    u, state = jax.jit(tx.update)({"w": jnp.full((2, 3), 0.3, jnp.bfloat16)}, state)
    assert u["w"].dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(u["w"], np.float32)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(learning_rate=-1.0), r"diffgrad: learning_rate must be a finite number >= 0"),
    (dict(learning_rate="fast"), r"diffgrad: learning_rate must be a number or an optax sched"),
    (dict(learning_rate=0.1, b1=1.0), r"diffgrad: b1 must lie in \[0, 1\); got 1.0"),
    (dict(learning_rate=0.1, b2=1.5), r"diffgrad: b2 must lie in \[0, 1\); got 1.5"),
    (dict(learning_rate=0.1, eps=0.0), r"diffgrad: eps must be > 0; got 0.0.*NaN"),
    (dict(learning_rate=0.1, eps=-1e-8), r"diffgrad: eps must be a finite number >= 0"),
])
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        diffgrad(**kwargs)


def test_bad_hyperparameters_scale_by_diffgrad():
    with pytest.raises(ValueError, match=r"scale_by_diffgrad: b1 must lie in \[0, 1\)"):
        scale_by_diffgrad(b1=-0.1)
