"""Weight decay modes (`optorth.WeightDecay`) against NumPy from the papers' equations.

Cautious weight decay, Algorithm 1 of Chen et al., "Cautious Weight Decay" (arXiv 2510.12402):
x ← x − η (u + λ · 1[u ⊙ x ≥ 0] ⊙ x), with u the optimizer's direction. The direction u of
each ready optimizer is read from the same optimizer without decay (decay is the last block
before the learning rate, so it never feeds the state); the decay itself is NumPy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optorth
from tests._ready import NAMES, UNROUTED, build

LR, RATE = 0.05, 0.3


def _problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(8, 16)), "v": rng.normal(size=(16, 8)),
              "b": rng.normal(size=(16,))}
    grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(3)]
    cast = lambda t: jax.tree.map(lambda a: jnp.asarray(a, dtype), t)  # noqa: E731
    return cast(params), [cast(g) for g in grads]


def _numpy_decay(u, x, rate, *, cautious, coupled, lr):
    """The update of Algorithm 1 (coupled) or its learning-rate-independent variant."""
    mask = (u * x >= 0).astype(np.float64) if cautious else np.ones_like(x)
    if coupled:
        return -lr * (u + rate * mask * x)
    return -lr * u - rate * mask * x


def _build(name, weight_decay):
    overrides = {"learning_rate": LR, "weight_decay": weight_decay}
    if name in UNROUTED:
        return build(name, **overrides)
    return build(name, fallback=optax.set_to_zero(), **overrides)


def _check_against_numpy(name, weight_decay, dtype, tol):
    params, grads = _problem(dtype)
    plain, decayed = _build(name, 0.0), _build(name, weight_decay)
    s0, s1 = plain.init(params), decayed.init(params)
    fractions = []
    for g in grads:
        u0, s0 = jax.jit(plain.update)(g, s0, params)
        u1, s1 = jax.jit(decayed.update)(g, s1, params)
        for key in ("w", "v"):
            direction = -np.asarray(u0[key], np.float64) / LR
            x = np.asarray(params[key], np.float64)
            want = _numpy_decay(direction, x, weight_decay.rate,
                                cautious=weight_decay.cautious,
                                coupled=weight_decay.coupled, lr=LR)
            np.testing.assert_allclose(np.asarray(u1[key], np.float64), want, rtol=tol,
                                       atol=tol, err_msg=f"{name} {key}")
            fractions.append(np.mean(direction * x >= 0))
        params = optax.apply_updates(params, u1)
    # The mask is neither all ones nor all zeros: the test can tell cautious from plain.
    assert 0.1 < np.mean(fractions) < 0.9


@pytest.mark.parametrize("name", NAMES)
def test_cautious_decay_of_every_ready_optimizer_is_algorithm_1_float64(name):
    with jax.enable_x64(True):
        _check_against_numpy(name, optorth.WeightDecay(RATE, cautious=True), jnp.float64, 1e-6)


@pytest.mark.parametrize("name", ["muon", "adamuon", "signum", "adafactor"])
def test_cautious_decay_float32(name):
    _check_against_numpy(name, optorth.WeightDecay(RATE, cautious=True), jnp.float32, 1e-5)


@pytest.mark.parametrize("cautious", [False, True])
def test_decay_independent_of_the_learning_rate(cautious):
    wd = optorth.WeightDecay(RATE, cautious=cautious, coupled=False)
    with jax.enable_x64(True):
        _check_against_numpy("muon", wd, jnp.float64, 1e-6)


def test_plain_weight_decay_object_equals_the_float():
    params, grads = _problem(jnp.float32)
    a = _build("normuon", RATE)
    b = _build("normuon", optorth.WeightDecay(RATE))
    ua, _ = a.update(grads[0], a.init(params), params)
    ub, _ = b.update(grads[0], b.init(params), params)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), ua, ub)


def test_cautious_default_fallback_is_cautious_adamw_in_numpy():
    """AdamW (b1 0.9, b2 0.95, eps 1e-10, lr 3e-3) with Algorithm 1's cautious decay."""
    with jax.enable_x64(True):
        params, grads = _problem(jnp.float64)
        cautious = optorth.WeightDecay(RATE, cautious=True)
        tx = optorth.optimizers.default_fallback(weight_decay=cautious)
        state = tx.init(params)
        x = np.asarray(params["b"])
        m = v = np.zeros_like(x)
        for t, g in enumerate(grads, start=1):
            updates, state = tx.update(g, state, params)
            gb = np.asarray(g["b"])
            m, v = 0.9 * m + 0.1 * gb, 0.95 * v + 0.05 * gb**2
            u = (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.95**t)) + 1e-10)
            want = _numpy_decay(u, x, RATE, cautious=True, coupled=True, lr=3e-3)
            np.testing.assert_allclose(np.asarray(updates["b"]), want, rtol=1e-6, atol=1e-9)
            params = optax.apply_updates(params, updates)
            x = np.asarray(params["b"])


def test_default_fallback_without_decay_is_optax_adamw():
    params, grads = _problem(jnp.float32)
    ours, ref = optorth.optimizers.default_fallback(), optax.adamw(
        3e-3, b1=0.9, b2=0.95, eps=1e-10, weight_decay=0.0)
    assert jax.tree.structure(ours.init(params)) == jax.tree.structure(ref.init(params))
    u1, _ = ours.update(grads[0], ours.init(params), params)
    u2, _ = ref.update(grads[0], ref.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, u1, u2)


def test_weight_decay_mask_applies_to_cautious_decay():
    params, grads = _problem(jnp.float32)
    mask = {"w": True, "v": False, "b": False}
    tx = optorth.muon(LR, weight_decay=optorth.WeightDecay(RATE, cautious=True),
                      weight_decay_mask=mask, fallback=optax.set_to_zero())
    plain = optorth.muon(LR, fallback=optax.set_to_zero())
    u1, _ = tx.update(grads[0], tx.init(params), params)
    u0, _ = plain.update(grads[0], plain.init(params), params)
    np.testing.assert_array_equal(u1["v"], u0["v"])
    assert not np.allclose(u1["w"], u0["w"])


def test_works_under_inject_hyperparams():
    params, grads = _problem(jnp.float32)
    wd = optorth.WeightDecay(RATE, cautious=True)
    injected = optax.inject_hyperparams(optorth.muon)(
        learning_rate=LR, weight_decay=wd, fallback=optax.set_to_zero())
    direct = optorth.muon(LR, weight_decay=wd, fallback=optax.set_to_zero())
    s1, s2 = injected.init(params), direct.init(params)
    for g in grads:
        u1, s1 = jax.jit(injected.update)(g, s1, params)
        u2, s2 = direct.update(g, s2, params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), u1, u2)
    assert float(s1.hyperparams["learning_rate"]) == pytest.approx(LR)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.1", True, None])
def test_bad_rates_are_refused(bad):
    with pytest.raises(ValueError, match="WeightDecay: rate"):
        optorth.WeightDecay(bad)


def test_bad_modes_are_refused():
    with pytest.raises(ValueError, match="cautious must be True or False"):
        optorth.WeightDecay(0.1, cautious="yes")
    with pytest.raises(ValueError, match="coupled must be True or False"):
        optorth.WeightDecay(0.1, coupled=1)
    with pytest.raises(ValueError, match="weight_decay"):
        optorth.muon(weight_decay=-1.0)
