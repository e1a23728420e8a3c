"""optorth.adafactor against the paper's update equations written out in NumPy, and the
per-matrix RMS blocks against optax's per-leaf ones."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optorth

RNG = np.random.default_rng(1)
SHAPES = {"matrix": (6, 10), "vector": (7,), "stack": (3, 5, 8)}
#: The rank-3 leaf is a stack of matrices (routing alone cannot tell; see optorth.route).
RULES = [("^stack$", optorth.MatrixSpec.stacked())]
STACKED = {"s": optorth.MatrixSpec.stacked()}


# ---------------------------------------------------------------- NumPy reference (float64)
def _rms(x):
    return np.sqrt(np.mean(np.square(x)))


class PaperMatrix:
    """Algorithm 4 of Shazeer & Stern (arXiv 1804.04235) for one n × m matrix."""

    def __init__(self, shape):
        self.r, self.c = np.zeros(shape[0]), np.zeros(shape[1])

    def direction(self, g, beta, eps1=1e-30):
        self.r = beta * self.r + (1 - beta) * (g**2 + eps1) @ np.ones(g.shape[1]) / g.shape[1]
        self.c = beta * self.c + (1 - beta) * np.ones(g.shape[0]) @ (g**2 + eps1) / g.shape[0]
        v_hat = np.outer(self.r, self.c) / np.mean(self.r)
        return g / np.sqrt(v_hat)


class PaperVector:
    """Algorithm 5 (unfactored) for a vector."""

    def __init__(self, shape):
        self.v = np.zeros(shape)

    def direction(self, g, beta, eps1=1e-30):
        self.v = beta * self.v + (1 - beta) * (g**2 + eps1)
        return g / np.sqrt(self.v)


def paper_step(x, g, stat, t, max_step, d=1.0, eps2=1e-3):
    """X_t = X_{t−1} − α_t Û_t for one matrix / vector; returns the update −α_t Û_t."""
    rho = min(max_step, 1.0 / np.sqrt(t))
    beta = 1.0 - t**-0.8
    u = stat.direction(g, beta)
    u_hat = u / max(1.0, _rms(u) / d)
    alpha = max(eps2, _rms(x)) * rho
    return -alpha * u_hat, _rms(u) > d


def paper_run(x0, grads, max_step):
    """Runs the paper's algorithm on each matrix of each leaf (stack: each slice)."""
    x = {k: v.astype(np.float64).copy() for k, v in x0.items()}
    stats = {
        "matrix": PaperMatrix(SHAPES["matrix"]),
        "vector": PaperVector(SHAPES["vector"]),
        "stack": [PaperMatrix(SHAPES["stack"][1:]) for _ in range(SHAPES["stack"][0])],
    }
    updates, clipped = [], False
    for t, g in enumerate(grads, start=1):
        u = {}
        for k in ("matrix", "vector"):
            u[k], c = paper_step(x[k], g[k], stats[k], t, max_step)
            clipped |= c
        slices = [
            paper_step(x["stack"][i], g["stack"][i], s, t, max_step)
            for i, s in enumerate(stats["stack"])
        ]
        u["stack"] = np.stack([s[0] for s in slices])
        clipped |= any(s[1] for s in slices)
        x = {k: x[k] + u[k] for k in x}
        updates.append(u)
    return updates, clipped


def _problem(steps=20, rng=RNG):
    x0 = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    x0["vector"] *= 1e-4  # RMS below ε2 = 1e-3: the floor of the relative step is used
    x0["stack"][1] *= 30.0  # per-matrix parameter scale differs across the stack
    scales = [30.0 if t in (9, 15) else 1.0 for t in range(steps)]  # jumps trigger clipping
    grads = [{k: s * rng.standard_normal(v) for k, v in SHAPES.items()} for s in scales]
    return x0, grads


def _optorth_run(tx, x0, grads, dtype=jnp.float32):
    params = {k: jnp.asarray(v, dtype) for k, v in x0.items()}
    state = tx.init(params)
    update = jax.jit(tx.update)
    outs = []
    for g in grads:
        u, state = update({k: jnp.asarray(v, dtype) for k, v in g.items()}, state, params)
        params = optax.apply_updates(params, u)
        outs.append(u)
    return outs, state


@pytest.mark.parametrize("max_step", [None, 0.5])
def test_matches_paper_equations_20_steps(max_step):
    """No arguments: exactly the paper (ρ_t = min(1e-2, 1/√t) stays 1e-2 for t ≤ 10⁴).
    max_step=0.5 makes the 1/√t branch active from t = 5 on."""
    x0, grads = _problem()
    lr = None if max_step is None else optorth.optimizers.relative_step_schedule(max_step)
    ours, _ = _optorth_run(optorth.adafactor(lr, rules=RULES), x0, grads)
    ref, clipped = paper_run(x0, grads, 1e-2 if max_step is None else max_step)
    assert clipped, "the problem must exercise update clipping"
    for step, (u, r) in enumerate(zip(ours, ref, strict=True)):
        for k in SHAPES:
            np.testing.assert_allclose(u[k], r[k], rtol=2e-4, atol=1e-12, err_msg=f"{k}@{step}")


def test_relative_step_schedule():
    rho = optorth.optimizers.relative_step_schedule()
    counts = jnp.asarray([0, 9_998, 9_999, 39_999])
    np.testing.assert_allclose(rho(counts), [1e-2, 1e-2, 1e-2, 1 / np.sqrt(40_000)], rtol=1e-6)


def test_fixed_lr_matches_optax_adafactor_on_2d():
    """With a fixed ρ, factoring every matrix and 2-D leaves only, optax.adafactor and
    optorth.adafactor are the same algorithm (optax's default instead takes lr = 1)."""
    shapes = {"w": (12, 20), "b": (20,)}
    params = {k: jnp.asarray(RNG.standard_normal(s), jnp.float32) for k, s in shapes.items()}
    grads = [{k: RNG.standard_normal(s) for k, s in shapes.items()} for _ in range(10)]
    ours, _ = _optorth_run(optorth.adafactor(0.05), params, grads)
    ref, _ = _optorth_run(optax.adafactor(0.05, min_dim_size_to_factor=1), params, grads)
    for u, r in zip(ours, ref, strict=True):
        for k in shapes:
            np.testing.assert_allclose(u[k], r[k], rtol=1e-5)


def test_clip_by_rms_is_per_matrix_unlike_optax():
    """A stack with one loud matrix: optax.clip_by_block_rms shrinks every matrix by the leaf
    RMS; optorth.clip_by_rms clips only the loud one. Identical on a single matrix."""
    quiet = 0.5 * np.sign(RNG.standard_normal((3, 4, 6)))
    stack = quiet.copy()
    stack[0] *= 20.0  # RMS 10 > d = 1
    u = {"s": jnp.asarray(stack, jnp.float32)}
    ours, _ = optorth.clip_by_rms(1.0, specs=STACKED).update(u, optax.EmptyState())
    ref, _ = optax.clip_by_block_rms(1.0).update(u, optax.EmptyState())
    np.testing.assert_allclose(ours["s"][0], stack[0] / 10.0, rtol=1e-6)
    np.testing.assert_allclose(ours["s"][1:], stack[1:], rtol=1e-6)
    leaf_rms = _rms(stack)
    np.testing.assert_allclose(ref["s"][1:], stack[1:] / leaf_rms, rtol=1e-6)
    single = {"m": jnp.asarray(stack[0], jnp.float32)}
    np.testing.assert_allclose(
        optorth.clip_by_rms(1.0).update(single, None)[0]["m"],
        optax.clip_by_block_rms(1.0).update(single, None)[0]["m"],
        rtol=1e-6,
    )


def test_scale_by_param_rms_is_per_matrix_unlike_optax():
    params = {"s": jnp.asarray(RNG.standard_normal((3, 4, 6)) * [[[1.0]], [[1e-5]], [[7.0]]])}
    ones = {"s": jnp.ones((3, 4, 6))}
    ours, _ = optorth.scale_by_param_rms(specs=STACKED).update(ones, None, params)
    expected = [max(1e-3, _rms(np.asarray(params["s"][i]))) for i in range(3)]
    np.testing.assert_allclose(ours["s"][:, 0, 0], expected, rtol=1e-5)
    ref, _ = optax.scale_by_param_block_rms().update(ones, None, params)
    assert np.allclose(ref["s"], _rms(np.asarray(params["s"])))  # one scale for the stack
    with pytest.raises(ValueError, match="needs the parameters"):
        optorth.scale_by_param_rms().update(ones, None)


@pytest.mark.parametrize("magnitude", [1e4, 1e-20])
def test_bf16_params(magnitude):
    x0, grads = _problem(steps=4)
    grads = [{k: magnitude * np.sign(v) for k, v in g.items()} for g in grads]
    outs, state = _optorth_run(optorth.adafactor(rules=RULES), x0, grads, dtype=jnp.bfloat16)
    stats = [x for x in jax.tree.leaves(state) if x.ndim > 0 or x.dtype != jnp.int32]
    assert stats and all(x.dtype == jnp.float32 for x in stats)
    for u in outs:
        for k, v in u.items():
            assert v.dtype == jnp.bfloat16, k
            assert np.isfinite(np.asarray(v, np.float32)).all(), k
    # |G| = 1e4: Û = sign(G). |G| = 1e-20: G² ≪ ε1, so Û = G/√ε1 = ±1e-5 (Adafactor keeps
    # tiny gradients tiny). The step is ρ·max(ε2, RMS(X)) times that.
    scale = max(1e-3, _rms(x0["matrix"].astype(np.float32))) * 1e-2
    got = np.abs(np.asarray(outs[0]["matrix"], np.float32))
    expected = scale * (1.0 if magnitude == 1e4 else 1e-5)
    np.testing.assert_allclose(got, expected, rtol=2e-2)


def test_momentum_and_masked_weight_decay():
    """X_t = X_{t−1} − ρ (EMA_β1[max(ε2, RMS(X)) Û] + λ·mask·X), checked in NumPy."""
    x0, grads = _problem(steps=5)
    mask = {"matrix": True, "vector": False, "stack": True}
    tx = optorth.adafactor(0.05, beta=0.9, weight_decay=0.1, weight_decay_mask=mask,
                           rules=RULES)
    ours, _ = _optorth_run(tx, x0, grads)
    plain = optorth.adafactor(1.0, rules=RULES)  # ρ = 1: max(ε2, RMS(X))·Û, our direction
    x = {k: jnp.asarray(v, jnp.float32) for k, v in x0.items()}
    state, mom = plain.init(x), {k: np.zeros(v.shape) for k, v in x0.items()}
    for g, u in zip(grads, ours, strict=True):
        d, state = plain.update({k: jnp.asarray(v, jnp.float32) for k, v in g.items()}, state, x)
        for k in x:
            mom[k] = 0.9 * mom[k] + 0.1 * -np.asarray(d[k])
            expected = -0.05 * (mom[k] + 0.1 * mask[k] * np.asarray(x[k]))
            np.testing.assert_allclose(u[k], expected, rtol=2e-4, atol=1e-9)
        x = optax.apply_updates(x, u)


def test_inject_hyperparams():
    x0, grads = _problem(steps=3)
    base, _ = _optorth_run(optorth.adafactor(0.05, weight_decay=0.1, rules=RULES), x0, grads)
    injected = optax.inject_hyperparams(optorth.adafactor)(learning_rate=0.05, weight_decay=0.1,
                                                           rules=RULES)
    outs, state = _optorth_run(injected, x0, grads)
    for u, r in zip(outs, base, strict=True):
        for k in SHAPES:
            np.testing.assert_allclose(u[k], r[k], rtol=1e-5)
    assert set(state.hyperparams) >= {"learning_rate", "weight_decay", "decay_rate"}
    outs, _ = _optorth_run(optax.inject_hyperparams(optorth.adafactor)(rules=RULES), x0, grads)
    ref, _ = _optorth_run(optorth.adafactor(rules=RULES), x0, grads)
    np.testing.assert_allclose(outs[-1]["stack"], ref[-1]["stack"], rtol=1e-5)


def test_flax_nnx_optimizer():
    from flax import nnx
    model = nnx.Linear(8, 16, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optorth.adafactor(), wrt=nnx.Param)
    x = jnp.ones((4, 8))
    loss_fn = lambda m: jnp.mean(m(x) ** 2)  # noqa: E731
    before = loss_fn(model)
    for _ in range(3):
        opt.update(model, nnx.grad(loss_fn)(model))
    assert loss_fn(model) < before


def test_bare_adafactor_factors_a_rank_3_leaf_over_its_last_two_axes():
    """No rules: the rank-3 leaf that optax.adafactor accepts is accepted too, each slice a
    matrix of the paper's algorithm (routing alone refuses to guess its layout)."""
    x0, grads = _problem(steps=12, rng=np.random.default_rng(5))
    ours, _ = _optorth_run(optorth.adafactor(), x0, grads)
    ref, _ = paper_run(x0, grads, 1e-2)
    for step, (u, r) in enumerate(zip(ours, ref, strict=True)):
        for k in SHAPES:
            np.testing.assert_allclose(u[k], r[k], rtol=2e-4, atol=1e-12, err_msg=f"{k}@{step}")
    optax_tx = optax.adafactor(0.01)  # optax accepts every leaf of this tree as well
    params = {k: jnp.asarray(v, jnp.float32) for k, v in x0.items()}
    optax_tx.update(params, optax_tx.init(params), params)
