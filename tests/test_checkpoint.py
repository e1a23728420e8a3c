"""Orbax checkpoints of optimizer states, and the explicit coefficient-restore policy.

For every ready optimizer: save after a few steps, restore into the structure of a fresh
state, check every leaf is bit-identical (dtype included), and check training continues
exactly as an uninterrupted run. Coefficient tables that differ from the schedule (learned)
survive the round trip; `optorth.reconcile_coefficients` decides explicitly what a
restored state continues with when they differ from the optimizer constructed now.
"""


import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from _ready import FAST, NAMES, adamw, build, tiered
from flax import nnx

import optorth
from optorth import MatrixSpec
from optorth.blocks import OrthogonalizeState
from optorth.checkpoint import coefficient_states

RULES = [(r"^blocks/kernel$", MatrixSpec.stacked())]
#: Ready optimizers without a Newton–Schulz block (no coefficient table in their state).
NO_COEFFICIENTS = ("auon", "hybrid_auon", "normalized_sgdm", "signum", "adafactor")
#: Jordan's table (5 rows) and You's 5-row table: two valid tables of the same shape.
YOU = np.asarray(optorth.ns.resolve_schedule("you").rows(), np.float32)


def _params(dtype=jnp.float32):
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    return {
        "embed": {"embedding": jax.random.normal(keys[0], (10, 8), dtype)},
        "dense": {"kernel": jax.random.normal(keys[1], (8, 16), dtype),
                  "bias": jnp.zeros((16,), dtype)},
        "blocks": {"kernel": jax.random.normal(keys[2], (2, 16, 8), dtype)},
        "conv": {"kernel": jax.random.normal(keys[3], (3, 3, 2, 4), dtype)},
    }


def _step_fn(tx):
    """A training step on a moving quadratic: g = p − target + noise(k) (not jitted)."""
    target = jax.tree.map(lambda p: 0.5 * jnp.ones_like(p), _params())

    def step(params, state, k):
        def grad(p, t, i):
            noise = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(i), k), p.shape)
            return (p - t.astype(p.dtype) + 0.1 * noise.astype(p.dtype)).astype(p.dtype)

        leaves, treedef = jax.tree.flatten(params)
        grads = jax.tree.unflatten(treedef, [
            grad(p, t, i) for i, (p, t) in enumerate(zip(leaves, jax.tree.leaves(target),
                                                         strict=True))])
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def _stepper(tx):
    """`_step_fn` of ``tx``, jitted."""
    return jax.jit(_step_fn(tx))


@functools.cache
def _muon():
    """``optorth.muon(rules=RULES)`` and its jitted step, shared by the tests below (one
    compilation for all of them)."""
    tx = optorth.muon(rules=RULES)
    return tx, _stepper(tx)


def _run(step, params, state, start, count):
    for k in range(start, start + count):
        params, state = step(params, state, k)
    return params, state


def _assert_bit_identical(a, b):
    flat_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
    flat_b, tree_b = jax.tree_util.tree_flatten_with_path(b)
    assert tree_a == tree_b
    for (path, x), (_, y) in zip(flat_a, flat_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert x.tobytes() == y.tobytes(), jax.tree_util.keystr(path)


def _save(path, tree):
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, tree)


def _restore(path, target):
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(path, abstract)


def _with_coeffs(state, table):
    """``state`` with every (T, 3) coefficient table replaced by ``table`` (a learned one)."""
    def replace(x):
        if not isinstance(x, OrthogonalizeState) or isinstance(x.coeffs, dict):
            return x
        if isinstance(x.coeffs, nnx.Variable):  # nnx.Optimizer.opt_state
            x.coeffs.set_value(jnp.asarray(table, jnp.float32))
            return x
        return x._replace(coeffs=jnp.asarray(table, jnp.float32))

    return jax.tree.map(replace, state, is_leaf=lambda x: isinstance(x, OrthogonalizeState))


def _learned(state):
    """``state`` with every coefficient table nudged, as online learning would leave it."""
    def nudge(x):
        if not isinstance(x, OrthogonalizeState):
            return x
        return x._replace(coeffs=jax.tree.map(lambda c: c * jnp.float32(1.001), x.coeffs))

    return jax.tree.map(nudge, state, is_leaf=lambda x: isinstance(x, OrthogonalizeState))


def _round_trip(tmp_path, tx, params):
    step = _stepper(tx)
    state = tx.init(params)
    # Committed arrays, like Orbax's restored ones: one compilation serves both runs.
    params, state = jax.device_put((params, state), jax.devices()[0])
    params, state = _run(step, params, state, 0, 3)
    _save(tmp_path / "ckpt", {"params": params, "state": state})
    restored = _restore(tmp_path / "ckpt", {"params": params, "state": tx.init(params)})
    _assert_bit_identical(restored, {"params": params, "state": state})
    _assert_bit_identical(_run(step, params, state, 3, 3),
                          _run(step, restored["params"], restored["state"], 3, 3))
    return restored["state"]


#: The round trips of all ready optimizers run in two groups, each one jitted init, one jitted
#: step and one checkpoint for all its optimizers (not a compilation per optimizer): one
#: optimizer per code path in the fast tier, the others in the slow tier.
GROUPS = (FAST, tuple(name for name in NAMES if name not in FAST))


def _round_trips(directory, names):
    """`_round_trip`, from nudged (learned) tables, of every optimizer in ``names`` at once.

    Returns name -> (saved, restored, continued, continued from restored): each
    ``{"params", "state"}`` after 3 steps, its Orbax restore, and both after 3 more steps.
    """
    txs = {name: build(name, RULES) for name in names}
    steps = {name: _step_fn(tx) for name, tx in txs.items()}

    @jax.jit
    def init(params):
        return {name: {"params": params, "state": _learned(tx.init(params))}
                for name, tx in txs.items()}

    @jax.jit
    def step(runs, k):
        return {name: dict(zip(("params", "state"), steps[name](run["params"], run["state"], k),
                               strict=True)) for name, run in runs.items()}

    def run(runs, start, count):
        for k in range(start, start + count):
            runs = step(runs, k)
        return runs

    # Committed arrays, like Orbax's restored ones: one compilation serves both runs.
    fresh = jax.device_put(init(_params()), jax.devices()[0])
    saved = run(fresh, 0, 3)
    _save(directory / "ckpt", saved)
    restored = _restore(directory / "ckpt", fresh)  # into the structure of fresh states
    results = saved, restored, run(saved, 3, 3), run(restored, 3, 3)
    return {name: tuple(result[name] for result in results) for name in names}


@pytest.fixture(scope="module")
def round_trips(tmp_path_factory):
    """name -> `_round_trips`'s result, computed for the name's group on first use."""
    done = {}

    def get(name):
        group = next(group for group in GROUPS if name in group)
        if group not in done:
            done[group] = _round_trips(tmp_path_factory.mktemp("round_trips"), group)
        return done[group][name]

    return get


@pytest.mark.parametrize("name", tiered())
def test_round_trip_is_bit_exact_and_training_continues_identically(round_trips, name):
    saved, restored, continued, continued_from_restored = round_trips(name)
    _assert_bit_identical(restored, saved)
    _assert_bit_identical(continued_from_restored, continued)
    fresh = coefficient_states(_learned(build(name, RULES).init(_params())))
    restored = coefficient_states(restored["state"])
    assert len(restored) == len(fresh) == (0 if name in NO_COEFFICIENTS else 1)
    for (_, a), (_, b) in zip(restored, fresh, strict=True):
        if a.count is None:  # a fixed table: the nudged ("learned") table survived
            _assert_bit_identical(a, b)
        else:  # learning online (every 2 updates) went on from the nudged table
            assert int(a.count) == 3 and int(a.fingerprint) == int(b.fingerprint)


def test_round_trip_bf16_state_and_inject_hyperparams(tmp_path):
    # hyperparam_dtype: optax otherwise keeps injected hyperparameters in the params' bf16.
    tx = optax.inject_hyperparams(optorth.root, hyperparam_dtype=jnp.float32)(
        learning_rate=0.01, rules=RULES)
    state = _round_trip(tmp_path, tx, _params(jnp.bfloat16))
    moments = [x for x in jax.tree.leaves(state) if getattr(x, "ndim", 0) >= 2
               and x.dtype == jnp.bfloat16]
    assert moments  # the momentum stayed bf16 (mu_dtype=None) and round-tripped bit-exact
    assert isinstance(optorth.coefficients(state), dict)  # per-shape tables
    assert state.hyperparams["learning_rate"] == np.float32(0.01)


def test_round_trip_with_online_learned_coefficients(tmp_path):
    learn = optorth.OnlineLearning(every=2, inner_steps=2, learning_rate=3e-3)
    tx = optorth.muon(learning_rate=0.02, rules=RULES, ns=optorth.NewtonSchulz(learn=learn))
    state = _round_trip(tmp_path, tx, _params())
    ((_, coeffs),) = coefficient_states(state)
    assert coeffs.coeffs.shape == (5, 3)
    assert int(coeffs.fingerprint) == int(optorth.ns.coefficient_fingerprint(
        optorth.ns.resolve_schedule("jordan").rows()))


# ----- fingerprints ---------------------------------------------------------------------------
def test_fingerprint_identifies_the_initial_table_eagerly_and_under_jit():
    params = _params()
    tx, step = _muon()
    eager = coefficient_states(tx.init(params))[0][1]
    jitted = coefficient_states(jax.jit(tx.init)(params))[0][1]
    assert eager.fingerprint.dtype == jnp.uint32 and int(eager.version) == optorth.ns.STATE_VERSION
    assert int(eager.fingerprint) == int(jitted.fingerprint) != 0
    assert int(eager.fingerprint) == int(optorth.ns.coefficient_fingerprint(eager.coeffs))
    you = optorth.muon(ns=optorth.NewtonSchulz("you"), rules=RULES)
    other = coefficient_states(you.init(params))
    assert int(other[0][1].fingerprint) != int(eager.fingerprint)
    six = coefficient_states(optorth.muon(ns=optorth.NewtonSchulz(steps=6), rules=RULES).init(
        params))
    assert int(six[0][1].fingerprint) != int(eager.fingerprint)
    # A learned table keeps the fingerprint of the table it started from.
    learned = _run(step, params, _with_coeffs(tx.init(params), YOU), 0, 1)[1]
    assert int(coefficient_states(learned)[0][1].fingerprint) == int(eager.fingerprint)


# ----- the restore policy ---------------------------------------------------------------------
def _restored_and_reference(tmp_path, saved_tx, current_tx, learned=None):
    params = _params()
    state = saved_tx.init(params)
    if learned is not None:
        state = _with_coeffs(state, learned)
    _save(tmp_path / "ckpt", state)
    reference = current_tx.init(params)
    return _restore(tmp_path / "ckpt", reference), reference


def _coeffs(state):
    return np.asarray(optorth.coefficients(state))


def test_learned_coefficients_policies(tmp_path):
    tx = optorth.muon(rules=RULES)
    restored, reference = _restored_and_reference(tmp_path, tx, tx, learned=YOU)
    for policy in ("same_schedule", "keep"):  # same starting table: learned table kept
        np.testing.assert_array_equal(
            _coeffs(optorth.reconcile_coefficients(restored, reference, policy)), YOU)
    overridden = optorth.reconcile_coefficients(restored, reference, "override")
    np.testing.assert_array_equal(_coeffs(overridden), _coeffs(reference))
    with pytest.raises(ValueError, match=r"inner_states/train/inner_state/inner_states/matrix/"
                                         r"inner_state/1.*differ.*"
                                         r"policy='error' forbids.*policy='keep'"):
        optorth.reconcile_coefficients(restored, reference, "error")
    # Identical tables pass every policy unchanged.
    for policy in optorth.checkpoint.POLICIES:
        _assert_bit_identical(optorth.reconcile_coefficients(reference, reference, policy),
                              reference)


def test_changed_schedule_is_never_silent(tmp_path):
    saved = optorth.muon(rules=RULES)
    current = optorth.muon(ns=optorth.NewtonSchulz("you"), rules=RULES)
    restored, reference = _restored_and_reference(tmp_path, saved, current)
    # Orbax alone restores the checkpoint's (Jordan) table into the new optimizer's state.
    np.testing.assert_allclose(_coeffs(restored)[0], [3.4445, -4.7750, 2.0315], rtol=1e-6)
    with pytest.raises(ValueError, match="did not start from the same table"):
        optorth.reconcile_coefficients(restored, reference)
    np.testing.assert_array_equal(
        _coeffs(optorth.reconcile_coefficients(restored, reference, "override")), YOU)
    kept = optorth.reconcile_coefficients(restored, reference, "keep")
    np.testing.assert_array_equal(_coeffs(kept), _coeffs(restored))


def test_changed_step_count_restores_into_the_old_structure_then_overrides(tmp_path):
    params = _params()
    saved, step = _muon()
    current = optorth.muon(ns=optorth.NewtonSchulz(steps=7), rules=RULES)
    state = _run(step, params, saved.init(params), 0, 2)[1]
    _save(tmp_path / "ckpt", state)
    reference = current.init(params)
    # The stored table is (5, 3), the new optimizer's (7, 3): Orbax refuses to restore into
    # the new structure ("Requested shape: (7, 3) is not compatible with the stored shape:
    # (5, 3)"; not exercised here, since the refused restore leaves Orbax's reader coroutines
    # pending until interpreter exit), so restore into the old structure and override.
    with ocp.StandardCheckpointer() as ckptr:
        stored = ckptr.metadata(tmp_path / "ckpt").item_metadata.tree
    ((path, _),) = coefficient_states(reference)
    stored_coeffs = stored["inner_states"]["train"]["inner_state"]["inner_states"]["matrix"][
        "inner_state"][1]["coeffs"]
    assert stored_coeffs.shape == (5, 3)
    assert path == "inner_states/train/inner_state/inner_states/matrix/inner_state/1"
    restored = _restore(tmp_path / "ckpt", saved.init(params))
    with pytest.raises(ValueError, match=r"table 5×3.*table 7×3"):
        optorth.reconcile_coefficients(restored, reference)
    state = optorth.reconcile_coefficients(restored, reference, "override")
    assert _coeffs(state).shape == (7, 3)
    mu = optorth.optimizers.matrix_state(state)[0].mu  # the checkpoint's
    np.testing.assert_array_equal(
        mu["dense"]["kernel"], optorth.optimizers.matrix_state(restored)[0].mu["dense"]["kernel"])
    new_params, _ = _stepper(current)(params, state, 2)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new_params))


def test_reconcile_refuses_bad_input():
    params = _params()
    state = optorth.muon(rules=RULES).init(params)
    with pytest.raises(ValueError, match="Unknown policy 'latest'"):
        optorth.reconcile_coefficients(state, state, "latest")
    other = optorth.signum(0.01, rules=RULES).init(params)
    with pytest.raises(ValueError, match="different structures"):
        optorth.reconcile_coefficients(state, other)
    newer = jax.tree.map(
        lambda x: x._replace(version=jnp.asarray(optorth.ns.STATE_VERSION + 1, jnp.int32))
        if isinstance(x, OrthogonalizeState) else x,
        state, is_leaf=lambda x: isinstance(x, OrthogonalizeState))
    with pytest.raises(ValueError, match="newer than this optorth"):
        optorth.reconcile_coefficients(newer, state, "keep")
    # A hand-built state has no fingerprint: differing tables need an explicit policy.
    hand = OrthogonalizeState(jnp.asarray(YOU))
    ref = optorth.orthogonalize().init({"w": jnp.ones((4, 8))})
    with pytest.raises(ValueError, match="fingerprint unknown"):
        optorth.reconcile_coefficients(hand, ref)
    np.testing.assert_array_equal(optorth.reconcile_coefficients(hand, ref, "keep").coeffs, YOU)


# ----- Flax NNX -------------------------------------------------------------------------------
class MLP(nnx.Module):
    def __init__(self, rngs):
        self.embed = nnx.Embed(10, 8, rngs=rngs)
        self.hidden = nnx.Linear(8, 16, rngs=rngs)
        self.lm_head = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, tokens):
        return self.lm_head(jax.nn.relu(self.hidden(self.embed(tokens))))


TOKENS = jnp.arange(12).reshape(3, 4) % 10


@nnx.jit
def _nnx_step(model, optimizer):
    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(TOKENS), TOKENS).mean()

    optimizer.update(model, nnx.grad(loss_fn)(model))


def _nnx_pair(tx):
    model = MLP(nnx.Rngs(0))
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def test_nnx_optimizer_round_trip_with_learned_coefficients(tmp_path):
    """Save nnx.state(optimizer); restore into a new one with nnx.update; reconcile."""
    tx = optorth.muon(learning_rate=0.02, fallback=adamw(1e-2))
    model, optimizer = _nnx_pair(tx)
    optimizer.opt_state = _with_coeffs(optimizer.opt_state, YOU)  # a learned table
    for _ in range(2):
        _nnx_step(model, optimizer)
    _save(tmp_path / "ckpt", {"model": nnx.state(model), "opt": nnx.state(optimizer)})

    model2, optimizer2 = _nnx_pair(tx)
    reference = jax.tree.map(jnp.copy, optimizer2.opt_state)  # as constructed now
    restored = _restore(tmp_path / "ckpt", {"model": nnx.state(model2),
                                            "opt": nnx.state(optimizer2)})
    nnx.update(model2, restored["model"])
    nnx.update(optimizer2, restored["opt"])
    with pytest.raises(ValueError, match="policy='error' forbids"):
        optorth.reconcile_coefficients(optimizer2.opt_state, reference, "error")
    optimizer2.opt_state = optorth.reconcile_coefficients(optimizer2.opt_state, reference)
    _assert_bit_identical(nnx.as_pure(nnx.state((model2, optimizer2))),
                          nnx.as_pure(nnx.state((model, optimizer))))
    for _ in range(2):
        _nnx_step(model, optimizer)
        _nnx_step(model2, optimizer2)
    _assert_bit_identical(nnx.as_pure(nnx.state((model2, optimizer2))),
                          nnx.as_pure(nnx.state((model, optimizer))))
    np.testing.assert_array_equal(_coeffs(nnx.as_pure(optimizer2.opt_state)), YOU)
