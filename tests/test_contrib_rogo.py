"""optorth.contrib.rogo against GPM's and ROGO's equations in NumPy, conformance, bad inputs.

The NumPy reference is written independently of the module: GPM's basis by the energy
criterion on a NumPy SVD, ROGO's relaxing space by the official code's greedy search (top
eigenvector, deflate, repeat), and training on the paper's *reparametrized* layer
W_eff = (I − S Sᵀ + S Λ Sᵀ) K with the penalty β ‖Λ − I‖², K and Λ both stepped by SGD; the
optax chain ``rogo() → sgd`` must follow W_eff step by step.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from optorth import MatrixSpec
from optorth.contrib import RogoState, add_task_subspace, relax_subspace, rogo

M, N = 8, 5  # fan-in, fan-out


# ----- NumPy reference -------------------------------------------------------------------------
def np_gpm(basis, reps, threshold):
    """GPM (Saha et al., Eq. 5, 8-9): append the fewest residual directions reaching the energy
    threshold; ``basis`` is (m, k), ``reps`` (samples, m)."""
    act = reps.T.astype(np.float64)
    total = np.sum(act**2)
    resid = act - basis @ (basis.T @ act)
    u, s, _ = np.linalg.svd(resid, full_matrices=False)
    captured = (total - np.sum(s**2)) / total
    k = 0
    while k < len(s) and captured < threshold:
        captured += s[k] ** 2 / total
        k += 1
    return np.hstack([basis, u[:, :k]])


def np_relax(frozen, grad, relax_threshold, grad_threshold):
    """The official code's search: U from the gradient's SVD; repeatedly the unit u in the
    remaining frozen space maximising ‖U Uᵀ u‖, kept while that is ≥ relax_threshold."""
    u, s, _ = np.linalg.svd(grad, full_matrices=False)
    ratio = s**2 / np.sum(s**2)
    r = 1
    while np.sum(ratio[:r]) < grad_threshold:
        r += 1
    uu = u[:, :r] @ u[:, :r].T
    trusts = []
    while frozen.shape[1] > 0:
        ux, _, _ = np.linalg.svd(frozen.T @ uu @ frozen)
        v = frozen @ ux[:, :1]
        v /= np.linalg.norm(v)
        if np.linalg.norm(uu @ v) < relax_threshold:
            break
        trusts.append(v)
        q, _ = np.linalg.qr(np.hstack([v, frozen]))
        frozen = q[:, 1 : frozen.shape[1]]  # span(frozen) minus v
    return np.hstack(trusts) if trusts else np.zeros((frozen.shape[0], 0))


def np_train_reparam(k0, basis, relax, x, y, lr, penalty, steps):
    """SGD on K and Λ of W_eff = (I − S Sᵀ + S Λ Sᵀ) K, K's gradient GPM-projected;
    loss ½‖X W_eff − Y‖²/n + β‖Λ − I‖². Returns W_eff after each step."""
    k, lam = k0.copy(), np.eye(relax.shape[1])
    eye, out = np.eye(k0.shape[0]), []
    for _ in range(steps):
        p = eye - relax @ relax.T + relax @ lam @ relax.T
        w_eff = p @ k
        g = x.T @ (x @ w_eff - y) / len(x)  # dL/dW_eff
        grad_k = p.T @ g
        grad_k -= basis @ (basis.T @ grad_k)
        grad_lam = relax.T @ g @ k.T @ relax + 2 * penalty * (lam - np.eye(len(lam)))
        k, lam = k - lr * grad_k, lam - lr * grad_lam
        p = eye - relax @ relax.T + relax @ lam @ relax.T
        out.append(p @ k)
    return out


def _tasks(seed=0):
    """Two tasks whose inputs share two of their three directions."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(M, M)))
    x1 = rng.normal(size=(64, 3)) @ (np.diag([3.0, 2.0, 1.0]) @ q[:, :3].T)
    x2 = rng.normal(size=(64, 3)) @ (np.diag([3.0, 2.0, 1.5]) @ q[:, [0, 1, 3]].T)
    return x1, x2, rng.normal(size=(M, N)), rng.normal(size=(M, N))


def _span_distance(a, b):
    return np.linalg.norm(a @ a.T - b @ b.T)


# ----- exactness -------------------------------------------------------------------------------
def test_gpm_basis_matches_numpy_and_grows():
    x1, x2, _, _ = _tasks()
    state = rogo().init({"w": jnp.zeros((M, N))})
    state = add_task_subspace(state, {"w": jnp.asarray(x1, jnp.float32)}, 0.97)
    want = np_gpm(np.zeros((M, 0)), x1, 0.97)
    k = int(state.basis_rank["w"][0])
    assert k == want.shape[1] and 1 <= k <= 3
    got = np.asarray(state.basis["w"][0])
    assert _span_distance(got[:, :k], want) < 1e-5
    np.testing.assert_array_equal(got[:, k:], 0.0)
    state = add_task_subspace(state, {"w": jnp.asarray(x2, jnp.float32)}, 0.97)
    want = np_gpm(want, x2, 0.97)
    k = int(state.basis_rank["w"][0])
    got = np.asarray(state.basis["w"][0])[:, :k]
    assert k == want.shape[1]
    assert _span_distance(got, want) < 1e-5
    np.testing.assert_allclose(got.T @ got, np.eye(k), atol=1e-5)


def _orthogonality_case(relax):
    rng = np.random.default_rng(3)
    params = {"dense": {"kernel": jnp.zeros((M, N))}, "bias": jnp.zeros(N),
              "stack": jnp.zeros((2, M, N)), "conv": jnp.zeros((3, 3, 2, N))}
    specs = {"dense": MatrixSpec(), "bias": "fallback", "stack": MatrixSpec.stacked(),
             "conv": MatrixSpec.conv()}
    tx = rogo(relax=relax, specs=specs)
    state = tx.init(params)
    acts = {"dense/kernel": rng.normal(size=(20, 3)) @ rng.normal(size=(3, M)),
            "stack": rng.normal(size=(2, 20, M)),
            "conv": rng.normal(size=(30, 4)) @ rng.normal(size=(4, 18))}
    state = add_task_subspace(state, {k: jnp.asarray(v, jnp.float32) for k, v in acts.items()},
                              0.95)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    updates, _ = jax.jit(tx.update)(grads, state, params)
    pick = {"dense": lambda t: t["dense"]["kernel"], "stack": lambda t: t["stack"],
            "conv": lambda t: t["conv"]}
    for name, get in pick.items():
        spec = get(specs) if name != "dense" else specs["dense"]
        basis = np.asarray(get(state.basis), np.float64)
        assert int(np.min(np.asarray(get(state.basis_rank)))) > 0
        view = np.asarray(spec.to_matrices(get(updates)), np.float64)
        inner = np.einsum("bmk,bmn->bkn", basis, view)
        assert np.max(np.abs(inner)) <= 1e-6 * np.linalg.norm(view), name
        g = np.asarray(spec.to_matrices(get(grads)), np.float64)
        np.testing.assert_allclose(view, g - basis @ np.swapaxes(basis, 1, 2) @ g,
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(updates["bias"], grads["bias"])


def test_projection_exactly_orthogonal_relax_off():
    _orthogonality_case(relax=False)


def test_projection_orthogonal_with_empty_relaxing_space():
    _orthogonality_case(relax=True)  # no relax_subspace call: S = ∅, still pure GPM


@pytest.mark.parametrize("penalty", [0.0, 0.5])
def test_matches_reparametrized_numpy_over_steps(penalty):
    x1, x2, _, target2 = _tasks()
    w0 = np.random.default_rng(1).normal(size=(M, N)) * 0.3
    y2 = x2 @ target2
    params = {"w": jnp.asarray(w0, jnp.float32)}
    tx = optax.chain(rogo(penalty=penalty), optax.sgd(0.01))
    state = tx.init(params)
    state = add_task_subspace(state, {"w": jnp.asarray(x1, jnp.float32)}, 0.97)
    basis = np_gpm(np.zeros((M, 0)), x1, 0.97)

    loss = lambda p: 0.5 * jnp.sum((x2f @ p["w"] - y2f) ** 2) / len(x2)  # noqa: E731
    x2f, y2f = jnp.asarray(x2, jnp.float32), jnp.asarray(y2, jnp.float32)
    grads = jax.grad(loss)(params)
    state = relax_subspace(state, grads, params, relax_threshold=0.8, grad_threshold=0.97)
    g0 = x2.T @ (x2 @ w0 - y2) / len(x2)
    relax = np_relax(basis, g0, 0.8, 0.97)
    r = int(state[0].relax_rank["w"][0])
    assert r == relax.shape[1] and r >= 1, r  # the shared directions are relaxed
    assert _span_distance(np.asarray(state[0].relax["w"][0])[:, :r], relax) < 1e-4

    # the reference uses the module's own relaxed basis (the span is checked above; the
    # basis within a degenerate span is arbitrary)
    relax_used = np.asarray(state[0].relax["w"][0], np.float64)[:, :r]
    want = np_train_reparam(w0, basis, relax_used, x2, y2, 0.01, penalty, 12)

    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    p = params
    for k, w_want in enumerate(want):
        p, state = step(p, state)
        got = np.asarray(p["w"], np.float64)
        err = np.linalg.norm(got - w_want) / np.linalg.norm(w_want)
        assert err <= 1e-5, (k, err)
    # the relaxed model moved along the frozen space, GPM alone would not have
    moved = basis.T @ (np.asarray(p["w"]) - w0)
    assert np.linalg.norm(moved) > 1e-3


def test_relax_off_keeps_old_outputs_over_steps():
    x1, x2, _, target2 = _tasks(2)
    params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(M, N)), jnp.float32)}
    tx = optax.chain(rogo(relax=False), optax.sgd(0.05, momentum=0.9))
    state = add_task_subspace(tx.init(params), {"w": jnp.asarray(x1, jnp.float32)}, 0.999)
    basis = np.asarray(state[0].basis["w"][0], np.float64)
    x2f, y2f = jnp.asarray(x2, jnp.float32), jnp.asarray(x2 @ target2, jnp.float32)
    loss = lambda p: 0.5 * jnp.mean(jnp.sum((x2f @ p["w"] - y2f) ** 2, -1))  # noqa: E731
    p = params
    largest = 0.0
    for _ in range(15):
        g = jax.grad(loss)(p)
        largest = max(largest, float(jnp.linalg.norm(g["w"])))
        u, state = tx.update(g, state, p)
        step = np.asarray(u["w"], np.float64)
        # float32 round-off of the projection, relative to the gradient it projected
        # (momentum 0.9 sums at most 10 of them, times lr 0.05)
        assert np.linalg.norm(basis.T @ step) <= 1e-6 * 0.05 * 10 * largest
        p = optax.apply_updates(p, u)
    # outputs on the old task's inputs move only by float32 rounding of the parameters
    drift = x1 @ (np.asarray(p["w"], np.float64) - np.asarray(params["w"], np.float64))
    assert np.linalg.norm(drift) <= 1e-4 * np.linalg.norm(x1 @ np.asarray(params["w"]))


# ----- conformance -----------------------------------------------------------------------------
def _setup(dtype=jnp.float32, **kw):
    rng = np.random.default_rng(5)
    params = {"hidden": {"kernel": jnp.asarray(rng.normal(size=(M, N)), dtype),
                         "bias": jnp.zeros(N, dtype)},
              "mid": {"kernel": jnp.asarray(rng.normal(size=(N, N)), dtype)}}
    specs = {"hidden": {"kernel": MatrixSpec(), "bias": "fallback"}, "mid": MatrixSpec()}
    tx = rogo(specs=specs, **kw)
    state = tx.init(params)
    state = add_task_subspace(state, {"hidden/kernel": jnp.asarray(rng.normal(size=(10, M))),
                                      "mid/kernel": jnp.asarray(rng.normal(size=(10, N)))}, 0.6)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), dtype), params)
    state = relax_subspace(state, grads, params, relax_threshold=0.3, grad_threshold=0.9,
                           specs=specs)
    return tx, params, state, grads, specs


def test_jit_chain_and_state_structure():
    tx, params, state, grads, specs = _setup()
    assert isinstance(state, RogoState)
    assert int(state.relax_rank["hidden"]["kernel"][0]) >= 1
    assert isinstance(state.basis["hidden"]["bias"], optax.MaskedNode)
    eager, _ = tx.update(grads, state, params)
    jitted, new_state = jax.jit(tx.update)(grads, state, params)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    chain = optax.chain(rogo(specs=specs), optax.sgd(0.1))
    cs = chain.init(params)
    cs = (state,) + tuple(cs[1:])
    u, _ = jax.jit(chain.update)(grads, cs, params)
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(eager), strict=True):
        np.testing.assert_allclose(a, -0.1 * np.asarray(b), rtol=1e-5, atol=1e-6)


def test_inside_partition():
    _, params, _, grads, specs = _setup()
    labels = {"hidden": {"kernel": "rogo", "bias": "plain"}, "mid": "rogo"}
    tx = optax.partition({"rogo": rogo(specs=specs), "plain": optax.identity()}, labels)
    state = tx.init(params)
    rng = np.random.default_rng(0)
    state = add_task_subspace(state, {"hidden/kernel": jnp.asarray(rng.normal(size=(10, M)))},
                              0.6)
    u, _ = jax.jit(tx.update)(grads, state, params)
    basis = np.asarray(state.inner_states["rogo"].inner_state.basis["hidden"]["kernel"][0])
    assert np.max(np.abs(basis.T @ np.asarray(u["hidden"]["kernel"]))) < 1e-5
    np.testing.assert_array_equal(u["hidden"]["bias"], grads["hidden"]["bias"])
    state = relax_subspace(state, grads, params, relax_threshold=0.3, specs=specs)
    inner = state.inner_states["rogo"].inner_state
    assert int(inner.relax_rank["hidden"]["kernel"][0]) >= 1


def test_zero_gradients_finite():
    tx, params, state, grads, _ = _setup()
    zeros = jax.tree.map(jnp.zeros_like, grads)
    u, _ = tx.update(zeros, state, params)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))
    st = relax_subspace(state, zeros, params)  # a zero gradient relaxes nothing
    for a, b in zip(jax.tree.leaves(st.relax_rank), jax.tree.leaves(state.relax_rank),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    st = add_task_subspace(state, {"mid/kernel": jnp.zeros((4, N))}, 0.9)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(st))


def test_bf16_params_give_bf16_updates():
    tx, params, state, grads, _ = _setup(jnp.bfloat16)
    u, _ = jax.jit(tx.update)(grads, state, params)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))
    assert state.basis["mid"]["kernel"].dtype == jnp.float32


def test_inject_hyperparams_penalty():
    _, params, state, grads, specs = _setup()
    tx = optax.inject_hyperparams(rogo, static_args=("relax", "specs"))(penalty=0.5, specs=specs)
    s = tx.init(params)
    s = add_task_subspace(s, {"mid/kernel": jnp.ones((3, N))}, 0.9)  # finds the inner state
    s = s._replace(inner_state=state)
    u, s = jax.jit(tx.update)(grads, s, params)
    want, _ = rogo(penalty=0.5, specs=specs).update(grads, state, params)
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    s.hyperparams["penalty"] = jnp.asarray(2.0)
    u2, _ = jax.jit(tx.update)(grads, s, params)
    want2, _ = rogo(penalty=2.0, specs=specs).update(grads, state, params)
    for a, b in zip(jax.tree.leaves(u2), jax.tree.leaves(want2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_add_task_subspace_jit_and_relax_reset():
    tx, params, state, _, _ = _setup()
    acts = {"mid/kernel": jnp.ones((3, N))}
    jitted = jax.jit(lambda s, a: add_task_subspace(s, a, 0.9))(state, acts)
    eager = add_task_subspace(state, acts, 0.9)
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert all(int(np.max(r)) == 0 for r in jax.tree.leaves(eager.relax_rank))


def test_orbax_round_trip(tmp_path):
    tx, params, state, grads, _ = _setup()
    path = tmp_path / "rogo"
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, state)
    fresh = tx.init(params)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, fresh)
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(path, abstract)
    restored = RogoState(*restored) if not isinstance(restored, RogoState) else restored
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    u1, _ = tx.update(grads, state, params)
    u2, _ = tx.update(grads, restored, params)
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2), strict=True):
        np.testing.assert_array_equal(a, b)


# ----- bad inputs -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"penalty": -1.0}, r"rogo: penalty must be a finite number >= 0; got -1.0"),
    ({"penalty": "big"}, r"rogo: penalty must be a real number"),
    ({"relax": "yes"}, r"rogo: relax must be True or False; got 'yes'"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rogo(**kwargs)


def test_bad_task_inputs():
    tx, params, state, grads, specs = _setup()
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"add_task_subspace: threshold must lie strictly "
                                             r"between 0 and 1"):
            add_task_subspace(state, {"mid/kernel": jnp.ones((3, N))}, bad)
    with pytest.raises(ValueError, match=r"activations name 'hidden/bias', which is not a "
                                         r"matrix leaf of the rogo state"):
        add_task_subspace(state, {"hidden/bias": jnp.ones((3, N))}, 0.9)
    with pytest.raises(ValueError, match=r"activations\['hidden/kernel'\] has shape \(3, 5\); "
                                         r"expected \(samples, 8\)"):
        add_task_subspace(state, {"hidden/kernel": jnp.ones((3, N))}, 0.9)
    with pytest.raises(ValueError, match=r"activations must be a dict"):
        add_task_subspace(state, [jnp.ones((3, M))], 0.9)
    with pytest.raises(ValueError, match=r"no RogoState found"):
        add_task_subspace(optax.sgd(0.1).init(params), {"mid/kernel": jnp.ones((3, N))}, 0.9)
    with pytest.raises(ValueError, match=r"relax_subspace: relax_threshold must lie strictly"):
        relax_subspace(state, grads, params, relax_threshold=1.0, specs=specs)
    with pytest.raises(ValueError, match=r"relax_subspace: grad_threshold must lie strictly"):
        relax_subspace(state, grads, params, grad_threshold=0.0, specs=specs)
    with pytest.raises(ValueError, match=r"has matrix leaf 'mid/kernel', but grads lack it"):
        relax_subspace(state, {"hidden": grads["hidden"]}, params, specs=specs)
    with pytest.raises(ValueError, match=r"rogo: update needs params"):
        tx.update(grads, state)
    rogo(relax=False, specs=specs).update(grads, state)  # plain GPM needs no params


def test_beta_is_the_deprecated_name_of_penalty():
    with pytest.warns(DeprecationWarning, match=r"rogo: beta= is deprecated; pass penalty="):
        old = rogo(beta=0.5)
    assert inspect.signature(rogo).parameters.keys() == {"penalty", "relax", "specs"}
    params = {"w": jnp.ones((M, N))}
    grads = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(M, N)), jnp.float32)}
    want, _ = rogo(penalty=0.5).update(grads, rogo(penalty=0.5).init(params), params)
    got, _ = old.update(grads, old.init(params), params)
    np.testing.assert_array_equal(got["w"], want["w"])
    with pytest.raises(TypeError, match="pass penalty= only"):
        rogo(beta=0.5, penalty=0.5)
