"""Online refinement: gating, validity with fallback, improvement, jit and checkpoints."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optorth

JORDAN = jnp.asarray(optorth.PRESETS["jordan"].rows(), jnp.float32)


def momentum_like(seed, shapes=((24, 40), (40, 24), (3, 16, 32))):
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
        o = np.asarray(optorth.newton_schulz(m, coeffs), np.float64)
        o = o if o.shape[-2] <= o.shape[-1] else np.swapaxes(o, -1, -2)
        gram = o @ np.swapaxes(o, -1, -2)
        eye = np.eye(gram.shape[-1])
        total.append(np.mean(np.sum((gram - eye) ** 2, axis=(-2, -1)) / gram.shape[-1]))
    return float(np.mean(total))


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(every=0), "every"), (dict(inner_steps=2.0), "inner_steps"),
     (dict(objective="polar"), "objective"), (dict(learning_rate=0.0), "learning_rate"),
     (dict(sigma_min=1.5), "sigma_min"), (dict(max_matrices=0), "max_matrices")],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optorth.OnlineLearning(**kwargs)


def test_gated_by_count_and_jittable():
    config = optorth.OnlineLearning(every=3, inner_steps=2, learning_rate=1e-3)
    refine = jax.jit(lambda c, m, n: optorth.refine_coefficients(c, m, config, count=n))
    mats = momentum_like(0)
    for count in range(6):
        new, info = refine(JORDAN, mats, jnp.int32(count))
        due = (count + 1) % 3 == 0
        assert bool(info.refined) == due
        if not due:
            np.testing.assert_array_equal(new, JORDAN)
            assert not bool(info.accepted) and np.isnan(float(info.loss_before))


@pytest.mark.parametrize("objective", ["orthogonality", "spectrum"])
def test_repeated_refinement_improves_and_stays_valid(objective):
    config = optorth.OnlineLearning(inner_steps=8, learning_rate=3e-3, objective=objective)
    refine = jax.jit(lambda c, m: optorth.refine_coefficients(c, m, config))
    mats = momentum_like(1)
    coeffs, accepted = JORDAN, 0
    for _ in range(6):
        coeffs, info = refine(coeffs, mats)
        accepted += int(info.accepted)
        assert optorth.validate_schedule(np.asarray(coeffs, np.float64)).ok
    assert accepted >= 1
    assert np_orthogonality(coeffs, mats) < np_orthogonality(JORDAN, mats) * 0.98


def test_unstable_candidates_fall_back_to_the_last_valid_table():
    config = optorth.OnlineLearning(inner_steps=3, learning_rate=2.0)  # wild steps
    refine = jax.jit(lambda c, m: optorth.refine_coefficients(c, m, config))
    rejected = 0
    for seed in range(3):
        new, info = refine(JORDAN, momentum_like(seed))
        assert optorth.validate_schedule(np.asarray(new, np.float64)).ok
        if not bool(info.accepted):
            rejected += 1
            np.testing.assert_array_equal(new, JORDAN)
    assert rejected >= 1


def test_max_error_constraint():
    config = optorth.OnlineLearning(inner_steps=8, learning_rate=3e-3, max_error=0.5295)
    new, _ = jax.jit(lambda c, m: optorth.refine_coefficients(c, m, config))(
        JORDAN, momentum_like(2))
    assert optorth.validate_schedule(np.asarray(new, np.float64)).max_error <= 0.5296


def test_spectrum_objective_rejects_aol():
    config = optorth.OnlineLearning(objective="spectrum")
    with pytest.raises(ValueError, match="aol"):
        optorth.refine_coefficients(JORDAN, momentum_like(0), config, precondition="aol")


def test_bf16_objective_runs_and_stays_valid():
    config = optorth.OnlineLearning(inner_steps=2, dtype=jnp.bfloat16, margin=0.02)
    new, info = jax.jit(lambda c, m: optorth.refine_coefficients(c, m, config))(
        JORDAN, momentum_like(3, shapes=((12, 20),)))
    assert new.dtype == jnp.float32 and np.isfinite(float(info.loss_after))
    assert optorth.validate_schedule(np.asarray(new, np.float64)).ok


# ----- inside an optimizer: the integration pattern, jit and checkpointing -------------------
class LearnedState(NamedTuple):
    coeffs: jax.Array
    count: jax.Array


def learned_orthogonalize(schedule, config):
    """The pattern for ``orthogonalize(..., learn=config)``: coefficients live in the state."""

    def init_fn(params):
        del params
        return LearnedState(jnp.asarray(optorth.resolve_schedule(schedule).rows(), jnp.float32),
                            jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        mats = [u for u in jax.tree.leaves(updates) if u.ndim >= 2]
        coeffs, _ = optorth.refine_coefficients(state.coeffs, mats, config, count=state.count)
        out = jax.tree.map(lambda u: optorth.newton_schulz(u, coeffs) if u.ndim >= 2 else u,
                           updates)
        return out, LearnedState(coeffs, state.count + 1)

    return optax.GradientTransformation(init_fn, update_fn)


def test_inside_an_optimizer_jit_and_orbax_checkpoint(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    config = optorth.OnlineLearning(every=2, inner_steps=2, learning_rate=3e-3)
    opt = optax.chain(optax.trace(0.9), learned_orthogonalize("jordan", config), optax.sgd(0.1))
    params = {"w": jnp.ones((16, 24)), "v": jnp.ones((3, 8, 8)), "b": jnp.zeros(4)}
    target = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(p.size), p.shape),
                          params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: sum(jnp.sum((a - b) ** 2) for a, b in zip(
            jax.tree.leaves(p), jax.tree.leaves(target), strict=True)))(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    for _ in range(4):
        params, state = step(params, state)
    path = tmp_path / "ckpt"
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, {"params": params, "state": state})
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(path, {"params": params, "state": state})
    p1, s1 = params, state
    p2, s2 = restored["params"], restored["state"]
    for _ in range(4):
        p1, s1 = step(p1, s1)
        p2, s2 = step(p2, s2)
    jax.tree.map(np.testing.assert_array_equal, (p1, s1), (p2, s2))
    coeffs = s1[1].coeffs
    assert int(s1[1].count) == 8
    assert optorth.validate_schedule(np.asarray(coeffs, np.float64)).ok
