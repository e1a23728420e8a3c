"""Online refinement: gating, validity with fallback, improvement, jit and checkpoints."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optorth

JORDAN = jnp.asarray(optorth.ns.PRESETS["jordan"].rows(), jnp.float32)


@functools.partial(jax.jit, static_argnames=("config", "precondition"))
def refine(coeffs, mats, config, count=None, precondition="frobenius"):
    """One jitted entry point: equal (hashable) configs share a compilation."""
    return optorth.ns.refine_coefficients(coeffs, mats, config, count=count,
                                          precondition=precondition)


CONFIG = optorth.OnlineLearning(inner_steps=4, learning_rate=1e-3)
#: The engine settings the learned tables run with (Frobenius, safety 1, plain iteration).
ENGINE = optorth.NewtonSchulz("jordan", method="standard")


def momentum_like(seed, shapes=((12, 20), (20, 12), (2, 8, 16))):
    """Matrices with decaying spectra, like momenta (σ/σ_max from 1 down to ~1e-3)."""
    out = []
    for i, shape in enumerate(shapes):
        key = jax.random.PRNGKey(seed * 10 + i)
        g = jax.random.normal(key, shape)
        k = min(shape[-2:])
        decay = jnp.logspace(0, -3, k)
        u, _, vt = jnp.linalg.svd(g, full_matrices=False)
        out.append((u * decay) @ vt)
    return out


def np_orthogonality(coeffs, mats):
    """Mean ‖OOᵀ − I‖²_F / m with O from the engine, measured in float64."""
    total = []
    for m in mats:
        o = np.asarray(optorth.newton_schulz(m, ENGINE, coeffs=coeffs), np.float64)
        o = o if o.shape[-2] <= o.shape[-1] else np.swapaxes(o, -1, -2)
        gram = o @ np.swapaxes(o, -1, -2)
        eye = np.eye(gram.shape[-1])
        total.append(np.mean(np.sum((gram - eye) ** 2, axis=(-2, -1)) / gram.shape[-1]))
    return float(np.mean(total))


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(every=0), "OnlineLearning: every must be a positive int; got 0"),
     (dict(every=True), "every must be a positive int; got True"),
     (dict(inner_steps=2.0), "inner_steps must be a positive int; got 2.0"),
     (dict(objective="polar"), "objective='polar'; expected one of"),
     (dict(learning_rate=0.0), "learning_rate must be a finite number > 0; got 0.0"),
     (dict(learning_rate=-1), "learning_rate must be a finite number > 0; got -1"),
     (dict(learning_rate=float("nan")), "learning_rate must be a finite number > 0"),
     (dict(learning_rate="1e-3"), "learning_rate must be a real number"),
     (dict(learning_rate=jnp.asarray(1e-3)), "learning_rate must be a Python number"),
     (dict(sigma_min=1.5), r"sigma_min must lie in \(0, 1\); got 1.5"),
     (dict(sigma_min=0.0), "sigma_min must be a finite number > 0"),
     (dict(max_matrices=0), "max_matrices must be a positive int"),
     (dict(max_error=0.0), "max_error must be a finite number > 0; got 0.0"),
     (dict(max_error=float("inf")), "max_error must be a finite number > 0"),
     (dict(margin=-0.1), "margin must be a finite number >= 0; got -0.1"),
     (dict(margin=1.0), r"margin must lie in \[0, 1\)"),
     (dict(dtype="int32"), "dtype=int32 is not a floating dtype"),
     (dict(dtype="bf16"), "dtype='bf16' is not a dtype")],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optorth.OnlineLearning(**kwargs)


def test_config_is_normalized_and_hashable():
    a = optorth.OnlineLearning(learning_rate=1, dtype=jnp.bfloat16, max_error=1)
    b = optorth.OnlineLearning(learning_rate=1.0, dtype="bfloat16", max_error=1.0)
    assert a == b and hash(a) == hash(b) and a.dtype == "bfloat16"


def test_refine_rejects_bad_tables_and_configs():
    with pytest.raises(ValueError, match=r"refine_coefficients: .*\(T, 3\).*\(5, 2\)"):
        optorth.ns.refine_coefficients(JORDAN[:, :2], momentum_like(0), CONFIG)
    with pytest.raises(ValueError, match="refine_coefficients: config must be an optorth"):
        optorth.ns.refine_coefficients(JORDAN, momentum_like(0), {"every": 10})
    with pytest.raises(ValueError, match="refine_coefficients: precondition='l2'"):
        optorth.ns.refine_coefficients(JORDAN, momentum_like(0), CONFIG, precondition="l2")


def test_gated_by_count_and_jittable():
    config = dataclasses.replace(CONFIG, every=3)
    mats = momentum_like(0)
    for count in range(6):
        new, info = refine(JORDAN, mats, config, jnp.int32(count))
        due = (count + 1) % 3 == 0
        assert bool(info.refined) == due
        if not due:
            np.testing.assert_array_equal(new, JORDAN)
            assert not bool(info.accepted) and np.isnan(float(info.loss_before))


@pytest.mark.parametrize("objective", ["orthogonality", "spectrum"])
def test_repeated_refinement_improves_and_stays_valid(objective):
    config = dataclasses.replace(CONFIG, objective=objective)
    mats = momentum_like(1)
    coeffs, accepted = JORDAN, 0
    for _ in range(8):
        coeffs, info = refine(coeffs, mats, config)
        accepted += int(info.accepted)
        assert optorth.validate_schedule(np.asarray(coeffs, np.float64)).ok
    assert accepted >= 1
    assert np_orthogonality(coeffs, mats) < np_orthogonality(JORDAN, mats) * 0.98


def test_unstable_candidates_fall_back_to_the_last_valid_table():
    config = dataclasses.replace(CONFIG, learning_rate=2.0)  # wild steps
    rejected = 0
    for seed in range(3):
        new, info = refine(JORDAN, momentum_like(seed), config)
        assert optorth.validate_schedule(np.asarray(new, np.float64)).ok
        if not bool(info.accepted):
            rejected += 1
            np.testing.assert_array_equal(new, JORDAN)
    assert rejected >= 1


def test_max_error_constraint():
    config = dataclasses.replace(CONFIG, max_error=0.5295)
    new, _ = refine(JORDAN, momentum_like(2), config)
    assert optorth.validate_schedule(np.asarray(new, np.float64)).max_error <= 0.5296


def test_spectrum_objective_rejects_aol():
    config = optorth.OnlineLearning(objective="spectrum")
    with pytest.raises(ValueError, match="aol"):
        refine(JORDAN, momentum_like(0), config, precondition="aol")


def test_bf16_objective_runs_and_stays_valid():
    config = optorth.OnlineLearning(inner_steps=2, dtype=jnp.bfloat16, margin=0.02)
    new, info = refine(JORDAN, momentum_like(3, shapes=((12, 20),)), config)
    assert new.dtype == jnp.float32 and np.isfinite(float(info.loss_after))
    assert optorth.validate_schedule(np.asarray(new, np.float64)).ok


# ----- inside the optimizer: NewtonSchulz(learn=...), jit and checkpointing --------------------
def _stepper(opt, target):
    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: sum(jnp.sum((a - b) ** 2) for a, b in zip(
            jax.tree.leaves(p), jax.tree.leaves(target), strict=True)))(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def test_learn_refines_the_table_in_state_when_due():
    learn = dataclasses.replace(CONFIG, every=2)
    specs = optorth.matrices.route_specs()
    tx = optorth.orthogonalize(optorth.NewtonSchulz("jordan", learn=learn), specs=specs)
    plain = optorth.orthogonalize(optorth.NewtonSchulz("jordan"), specs=specs)
    mats = {"w": momentum_like(4, shapes=((12, 20),))[0], "b": jnp.ones(3)}
    state, plain_state = tx.init(mats), plain.init(mats)
    assert int(state.count) == 0 and plain_state.count is None
    update = jax.jit(tx.update)
    out, state = update(mats, state)  # count 0: not due, the Jordan table is used
    np.testing.assert_array_equal(out["w"], jax.jit(plain.update)(mats, plain_state)[0]["w"])
    np.testing.assert_array_equal(state.coeffs, JORDAN)
    _, state = update(mats, state)  # count 1: due
    assert int(state.count) == 2 and not np.array_equal(state.coeffs, JORDAN)
    assert optorth.validate_schedule(np.asarray(state.coeffs, np.float64)).ok
    np.testing.assert_array_equal(state.fingerprint, plain_state.fingerprint)


@pytest.mark.parametrize("kwargs, match", [
    ({"schedule": "root"}, "NewtonSchulz: learn= refines one .* one table per matrix shape"),
    ({"learn": {"every": 10}}, "NewtonSchulz: learn must be an optorth.OnlineLearning"),
    ({"learn": "yes"}, "learn must be an optorth.OnlineLearning or None; got str"),
])
def test_learn_rejects_what_it_cannot_learn(kwargs, match):
    kwargs = {"learn": CONFIG, **kwargs}
    with pytest.raises(ValueError, match=match):
        optorth.NewtonSchulz(**kwargs)


def test_muon_learns_online_under_jit_and_orbax_checkpoint(tmp_path):
    import orbax.checkpoint as ocp
    ns = optorth.NewtonSchulz(learn=dataclasses.replace(CONFIG, every=2))
    opt = optorth.muon(learning_rate=0.05, ns=ns)
    params = {"w": jnp.ones((8, 12)), "v": jnp.ones((6, 6)), "b": jnp.zeros(4)}
    target = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(p.size), p.shape),
                          params)
    step = _stepper(opt, target)
    state = opt.init(params)
    for _ in range(4):
        params, state = step(params, state)
    path = tmp_path / "ckpt"
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, {"params": params, "state": state})
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(path, {"params": params, "state": opt.init(params)})
    # Learned from the table the optimizer is constructed with: the default policy keeps it.
    s2 = optorth.reconcile_coefficients(restored["state"], opt.init(params))
    p1, s1, p2 = params, state, restored["params"]
    for _ in range(4):
        p1, s1 = step(p1, s1)
        p2, s2 = step(p2, s2)
    jax.tree.map(np.testing.assert_array_equal, (p1, s1), (p2, s2))
    ((_, learned),) = optorth.checkpoint.coefficient_states(s1)
    assert int(learned.count) == 8 and not np.array_equal(learned.coeffs, JORDAN)
    assert optorth.validate_schedule(np.asarray(learned.coeffs, np.float64)).ok
