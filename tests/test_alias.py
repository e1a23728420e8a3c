"""Ready optimizers against their formulas written out independently in NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optorth
from optorth import MatrixSpec

JORDAN = (3.4445, -4.7750, 2.0315)


def _ns(g, rows=(JORDAN,) * 5, eps=1e-7):
    """Newton–Schulz in float64 on the wide orientation, Frobenius-normalized."""
    x = np.asarray(g, np.float64)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (np.linalg.norm(x) + eps)
    for a, b, c in rows:
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def _tree(seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {
        "embed": jax.random.normal(keys[0], (10, 4)),
        "wide": {"kernel": jax.random.normal(keys[1], (4, 16)), "bias": jnp.ones(16)},
        "tall": {"kernel": jax.random.normal(keys[2], (16, 4))},
    }


def _run(tx, params, grads_list):
    state = tx.init(params)
    step = jax.jit(tx.update)
    for grads in grads_list:
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, updates


def test_muon_reproduces_the_reference_formula():
    """KellerJordan/Muon: m.lerp_(g, 1-β); u = g.lerp_(m, β); NS5; Keller scale; p(1-lr·wd)."""
    lr, beta, wd = 0.02, 0.95, 0.1
    adam_lr, b1, b2, adam_eps, adam_wd = 3e-4, 0.9, 0.95, 1e-10, 0.05
    params = _tree()
    grads_list = [_tree(seed) for seed in range(1, 6)]
    fallback = optax.adamw(adam_lr, b1=b1, b2=b2, eps=adam_eps, weight_decay=adam_wd)
    tx = optorth.muon(lr, beta, weight_decay=wd, fallback=fallback)
    got, _ = _run(tx, params, grads_list)

    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    mom = {k: 0.0 for k in ("wide", "tall")}
    adam = {k: [0.0, 0.0] for k in ("embed", "bias")}
    for t, grads in enumerate(grads_list, start=1):
        g = jax.tree.map(lambda x: np.asarray(x, np.float64), grads)
        for name in ("wide", "tall"):
            mom[name] = mom[name] + (1 - beta) * (g[name]["kernel"] - mom[name])
            u = g[name]["kernel"] + beta * (mom[name] - g[name]["kernel"])
            fan_in, fan_out = p[name]["kernel"].shape
            o = _ns(u) * np.sqrt(max(1.0, fan_out / fan_in))
            p[name]["kernel"] = p[name]["kernel"] * (1 - lr * wd) - lr * o
        for name, value, grad in (("embed", p["embed"], g["embed"]),
                                  ("bias", p["wide"]["bias"], g["wide"]["bias"])):
            m, v = adam[name]
            m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad ** 2
            adam[name] = [m, v]
            step = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + adam_eps)
            new = value * (1 - adam_lr * adam_wd) - adam_lr * step
            if name == "embed":
                p["embed"] = new
            else:
                p["wide"]["bias"] = new
    for path in (("wide", "kernel"), ("tall", "kernel"), ("wide", "bias")):
        np.testing.assert_allclose(got[path[0]][path[1]], p[path[0]][path[1]], atol=2e-5)
    np.testing.assert_allclose(got["embed"], p["embed"], atol=2e-5)


def _singular_values(x):
    return np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)


def _spread_spectrum(shape, seed):
    """Matrices (any leading batch; conv kernels flattened) with singular values in [0.05, 1]."""
    if len(shape) == 1:
        return jnp.ones(shape)
    rows, cols = (int(np.prod(shape[:-1])), shape[-1]) if len(shape) == 4 else shape[-2:]
    batch = shape[0] if len(shape) == 3 else 1
    rng = np.random.default_rng(seed)
    k = min(rows, cols)
    mats = []
    for _ in range(batch):
        u, _ = np.linalg.qr(rng.standard_normal((rows, k)))
        v, _ = np.linalg.qr(rng.standard_normal((cols, k)))
        mats.append(u @ np.diag(np.linspace(0.05, 1.0, k)) @ v.T)
    return jnp.asarray(np.stack(mats).reshape(shape), jnp.float32)


def test_matrix_path_updates_have_orthogonalized_spectra():
    """The matrix path ran: each matrix of each update has Newton–Schulz singular values."""
    params = {"dense": jnp.zeros((16, 32)), "stack": jnp.zeros((2, 16, 16)),
              "conv": jnp.zeros((3, 3, 4, 8)), "bias": jnp.zeros(8)}
    grads = jax.tree.map(lambda x: _spread_spectrum(x.shape, x.size), params)
    rules = [("^stack$", MatrixSpec.stacked())]
    for schedule, band in (("jordan", (0.6, 1.2)), ("you6", (0.98, 1.01))):
        tx = optorth.muon(1.0, rules=rules, ns=optorth.NewtonSchulz(schedule), scale=None,
                          fallback=optax.adamw(1.0))
        updates, _ = tx.update(grads, tx.init(params), params)
        matrices = [updates["dense"], *updates["stack"], updates["conv"].reshape(36, 8)]
        for m in matrices:
            sv = _singular_values(-m)
            assert band[0] < sv.min() and sv.max() < band[1], (schedule, sv)
    # Not the gradient's spectrum, which spreads over a factor of 20.
    assert _singular_values(grads["dense"]).max() / _singular_values(grads["dense"]).min() > 19


def test_root_reproduces_its_formula():
    lr, beta, wd, q = 1e-3, 0.95, 0.1, 0.9
    params = {"w": jax.random.normal(jax.random.PRNGKey(0), (8, 24))}
    grads_list = [{"w": jax.random.t(jax.random.PRNGKey(s), 3.0, (8, 24))}
                  for s in range(1, 4)]
    got, _ = _run(optorth.root(lr, beta, weight_decay=wd, quantile=q), params, grads_list)
    p, buf = np.asarray(params["w"], np.float64), 0.0
    for grads in grads_list:
        g = np.asarray(grads["w"], np.float64)
        buf = beta * buf + g
        u = g + beta * buf
        eps = np.quantile(np.abs(u), q)
        o = _ns(np.clip(u, -eps, eps)) * 0.2 * np.sqrt(24)
        p = p * (1 - lr * wd) - lr * o
    np.testing.assert_allclose(got["w"], p, atol=1e-6)


@pytest.mark.parametrize("norm,lmo", [
    ("frobenius", lambda m: m / np.linalg.norm(m)),
    ("sign", np.sign),
    ("column", lambda m: m / np.linalg.norm(m, axis=0, keepdims=True)),
])
def test_trust_region_is_a_centre_shrink_step(norm, lmo):
    """X ← (1 − ηλ) X − η·lmo(M), M_0 = G_0, M_k = β M + (1 − β) G (Kovalev)."""
    eta, lam, beta = 0.1, 0.5, 0.9
    params = {"w": jax.random.normal(jax.random.PRNGKey(0), (6, 10))}
    grads_list = [{"w": jax.random.normal(jax.random.PRNGKey(s), (6, 10))} for s in range(1, 4)]
    tx = optorth.trust_region(eta, norm=norm, beta=beta, weight_decay=lam)
    got, _ = _run(tx, params, grads_list)
    x, m = np.asarray(params["w"], np.float64), None
    for grads in grads_list:
        g = np.asarray(grads["w"], np.float64)
        m = g if m is None else beta * m + (1 - beta) * g
        x = (1 - eta * lam) * x - eta * lmo(m)
    np.testing.assert_allclose(got["w"], x, atol=1e-6)


def test_norm_optimizers_take_their_direction_per_matrix():
    params = {"stack": jnp.zeros((3, 6, 10)), "bias": jnp.zeros(10)}
    grads = {"stack": jax.random.normal(jax.random.PRNGKey(1), (3, 6, 10))
             * jnp.asarray([1e-3, 1.0, 1e3])[:, None, None], "bias": jnp.ones(10)}
    rules = [("^stack$", MatrixSpec.stacked())]
    state_free = {}
    for name, factory in (("nsgd", optorth.normalized_sgdm), ("signum", optorth.signum)):
        tx = factory(0.1, rules=rules)
        state_free[name], _ = tx.update(grads, tx.init(params), params)
    # normalized SGD: every matrix step has Frobenius norm lr, whatever its gradient's scale.
    np.testing.assert_allclose(jnp.linalg.norm(state_free["nsgd"]["stack"], axis=(-2, -1)),
                               [0.1] * 3, rtol=1e-5)
    np.testing.assert_allclose(state_free["signum"]["stack"], -0.1 * jnp.sign(grads["stack"]))
    # AuON ≈ Nesterov normalized SGD with Keller scaling (its cosh factor is ≈ 1).
    auon = optorth.auon(0.1, rules=rules)
    nsgd = optorth.normalized_sgdm(0.1, 0.95, nesterov=True,
                                   norm=optorth.norms.Frobenius(scale="keller"), rules=rules)
    a, _ = auon.update(grads, auon.init(params), params)
    n, _ = nsgd.update(grads, nsgd.init(params), params)
    np.testing.assert_allclose(a["stack"], n["stack"], rtol=2e-2, atol=1e-6)
    assert float(jnp.max(jnp.abs(a["stack"] - n["stack"]))) > 0  # but not identical


def test_hybrid_auon_step():
    params = {"w": jnp.zeros((8, 16))}
    g = jax.random.normal(jax.random.PRNGKey(3), (8, 16))
    tx = optorth.hybrid_auon(0.5)
    updates, _ = tx.update({"w": g}, tx.init(params), params)
    u = (1 - 0.95) * g + 0.95 * (1 - 0.95) * g  # first Nesterov step
    expected = -0.5 * np.sqrt(16 / 8) * optorth.norms.HybridAuON().lmo(u)
    np.testing.assert_allclose(updates["w"], expected, rtol=1e-5, atol=1e-7)


def test_weight_decay_mask_applies_on_both_paths():
    """``weight_decay_mask`` masks the matrix path; the fallback takes its own ``mask=``."""
    params = _tree()
    mask = {"embed": False, "wide": {"kernel": False, "bias": True}, "tall": {"kernel": True}}
    fallback = optax.adamw(0.01, b1=0.9, b2=0.95, eps=1e-10, weight_decay=0.2, mask=mask)
    tx = optorth.muon(0.1, weight_decay=0.5, weight_decay_mask=mask, fallback=fallback)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["tall"]["kernel"], -0.05 * params["tall"]["kernel"],
                               rtol=1e-6)
    np.testing.assert_allclose(updates["wide"]["bias"], -0.002 * params["wide"]["bias"],
                               rtol=1e-6)
    assert float(jnp.max(jnp.abs(updates["wide"]["kernel"]))) == 0
    assert float(jnp.max(jnp.abs(updates["embed"]))) == 0


def test_fallback_override_and_routing_errors():
    params = _tree()
    tx = optorth.muon(0.02, fallback=optax.sgd(0.1))
    grads = _tree(1)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["wide"]["bias"], -0.1 * grads["wide"]["bias"], rtol=1e-6)
    np.testing.assert_allclose(updates["embed"], -0.1 * grads["embed"], rtol=1e-6)
    with pytest.raises(ValueError, match=r"'blocks/kernel' of shape \(2, 4, 4\)"):
        optorth.muon().init({"blocks": {"kernel": jnp.zeros((2, 4, 4))}})
