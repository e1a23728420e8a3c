"""The bad-input matrix: every case has a defined outcome.

Either a ``ValueError`` that names the leaf path (where there is one), its shape and the fix,
or a documented finite result:

* NaN / Inf gradients propagate to the update (and momentum) of the leaf that holds them and
  of no other leaf; ``optax.apply_if_finite`` skips such a step and keeps the state intact.
* zero gradients give a zero direction (the update is weight decay alone);
* rank-1, rank-deficient, 1×n and n×1 matrices give the Newton–Schulz map of their nonzero
  singular values and nothing outside their range (below 1e-3: float32 round-off amplified by
  the iteration); a zero-sized axis gives an empty update;
* gradients of magnitude 1e-30 or 1e30 (float32, bf16) give the same matrix-path update as at
  1 (every lmo is scale invariant); optax's AdamW fallback squares gradients, so beyond
  |g| ≈ 1.8e19 its second moment is inf and those leaves get zero updates (optax's own
  behaviour); Adafactor saturates its statistics and stays finite;
* float16 parameters train with float16 updates given ``mu_dtype="float32"`` (without it
  the AdamW fallback refuses them: its float16 eps underflows); integer leaves get a zero
  update (also with the float0 gradients of ``jax.grad(allow_int=True)``); complex leaves take
  the fallback optimizer (routing reason ``dtype ...``), exactly as ``optax.adamw`` treats
  them, and Adafactor's statistics refuse them naming the leaf; Python float leaves work as in
  ``optax.adamw``.

And every bad argument or misuse raises where it enters (a constructor, ``init`` or the first
``update``) with a ``ValueError`` that names the callee, the argument and the fix.
"""

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _ready import NAMES, READY, STATE_KINDS, UNROUTED, adamw, build, tiered

import optorth
from optorth import MatrixSpec

RULES = [(r"^stack", MatrixSpec.stacked())]
SHAPES = {
    "embed/embedding": (10, 8),  # fallback (embedding)
    "dense/kernel": (8, 16),
    "dense/bias": (16,),
    "row/kernel": (1, 16),
    "col/kernel": (16, 1),
    "empty/kernel": (0, 16),
    "stack/kernel": (2, 8, 16),
    "stack_empty/kernel": (2, 0, 4),
}
MATRIX_LEAVES = ("dense/kernel", "row/kernel", "col/kernel", "empty/kernel", "stack/kernel",
                 "stack_empty/kernel")
WEIGHT_DECAY = 0.1


def _tree(values: dict):
    tree = {}
    for path, value in values.items():
        outer, inner = path.split("/")
        tree.setdefault(outer, {})[inner] = value
    return tree


def _flat(tree) -> dict:
    return {optorth.matrices._paths.path_to_str(p): x
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _params(dtype=jnp.float32):
    keys = jax.random.split(jax.random.PRNGKey(0), len(SHAPES))
    return _tree({path: jax.random.normal(k, shape, dtype)
                  for k, (path, shape) in zip(keys, SHAPES.items(), strict=True)})


def _grads(params, scale=1.0, seed=1, rank=None):
    """Gaussian gradients times ``scale`` (computed in float32); ``rank`` limits matrix rank."""
    def leaf(i, x):
        key = jax.random.PRNGKey(seed + i)
        if rank is not None and x.ndim >= 2 and min(x.shape[-2:]) > rank:
            a, b = jax.random.split(key)
            g = (jax.random.normal(a, x.shape[:-1] + (rank,))
                 @ jax.random.normal(b, x.shape[:-2] + (rank, x.shape[-1])))
        else:
            g = jax.random.normal(key, x.shape)
        return (g * scale).astype(x.dtype)

    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(treedef, [leaf(i, x) for i, x in enumerate(leaves)])


def _finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))) for x in jax.tree.leaves(tree))


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def _nonfinite_adamw_moments(state) -> set[str]:
    """Paths of non-finite state leaves, asserting they are all AdamW second moments."""
    nonfinite = {jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_flatten_with_path(
        state)[0] if not bool(jnp.all(jnp.isfinite(x.astype(jnp.float32))))}
    assert all("['fallback']" in p and ".nu[" in p for p in nonfinite), nonfinite
    return nonfinite


# ----- values: every ready optimizer, one compilation each -------------------------------------
@pytest.mark.parametrize("name", tiered())
def test_edge_values_for_every_ready_optimizer(name):
    params = _params()
    tx = optax.apply_if_finite(build(name, RULES, weight_decay=WEIGHT_DECAY),
                               max_consecutive_errors=100)
    state = tx.init(params)
    update = jax.jit(tx.update)

    # Zero gradients: finite; the matrix path's direction is zero, so only weight decay acts.
    updates, _ = update(jax.tree.map(jnp.zeros_like, params), state, params)
    assert _finite(updates)
    if name not in UNROUTED:
        lr = READY[name][1]["learning_rate"]
        for path in MATRIX_LEAVES:
            np.testing.assert_allclose(_flat(updates)[path],
                                       -lr * WEIGHT_DECAY * _flat(params)[path], rtol=1e-6)

    # Low-rank gradients: finite updates of the right shapes and a finite state.
    for grads in (_grads(params, rank=1), _grads(params, rank=3)):
        updates, new_state = update(grads, state, params)
        assert _finite(updates) and _finite(new_state), name
        assert jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, params)

    # 1e-30 and 1e30: the matrix path is scale invariant (same update as at scale 1); every
    # update is finite. Only optax's AdamW fallback keeps a non-finite second moment (g² = inf
    # in float32 beyond |g| ≈ 1.8e19; those leaves then get zero updates).
    base, _ = update(_grads(params), state, params)
    for scale in (1e-30, 1e30):
        updates, new_state = update(_grads(params, scale), state, params)
        assert _finite(updates), (name, scale)
        if name not in UNROUTED:
            for path in MATRIX_LEAVES:
                np.testing.assert_allclose(_flat(updates)[path], _flat(base)[path], atol=1e-6,
                                           err_msg=f"{name} {scale} {path}")
        nonfinite = _nonfinite_adamw_moments(new_state)
        assert bool(nonfinite) == (scale == 1e30 and name not in ("adafactor", "factored_muon"))

    # NaN / Inf in one leaf: apply_if_finite skips the step; the inner state stays intact.
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        grads = _grads(params)
        grads["dense"]["kernel"] = grads["dense"]["kernel"].at[3, 5].set(bad)
        updates, new_state = update(grads, state, params)
        assert all(float(jnp.max(jnp.abs(u), initial=0.0)) == 0.0
                   for u in jax.tree.leaves(updates))
        _assert_same(new_state.inner_state, state.inner_state)
        assert int(new_state.notfinite_count) == 1 and not bool(new_state.last_finite)


def test_nonfinite_gradients_stay_in_their_leaf_without_apply_if_finite():
    params = _params()
    tx = build("muon", RULES)
    state = tx.init(params)
    grads = _grads(params)
    grads["dense"]["kernel"] = grads["dense"]["kernel"].at[0, 0].set(jnp.nan)
    updates, state = jax.jit(tx.update)(grads, state, params)
    for path, u in _flat(updates).items():
        assert bool(jnp.all(jnp.isfinite(u))) == (path != "dense/kernel"), path
    mu = optorth.optimizers.matrix_state(state)[0].mu
    assert not _finite(mu["dense"]["kernel"]) and _finite(mu["stack"]["kernel"])


LOW_PRECISION = ("muon", "normuon", "factored_muon", "adafactor")


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("name", [n if n in LOW_PRECISION else pytest.param(
    n, marks=pytest.mark.slow) for n in NAMES])
def test_low_precision_parameters(name, dtype):
    """bf16: 1e-30 and 1e30 gradients; float16: its own extremes (6e-8, 1.5e4) and plain ones.

    float16 with the AdamW fallback needs ``mu_dtype="float32"`` (see the error case below).
    """
    params = _params(dtype)
    f16 = {"mu_dtype": "float32"} if dtype == jnp.float16 and name not in UNROUTED else {}
    tx = build(name, RULES, weight_decay=WEIGHT_DECAY, **f16)
    state = tx.init(params)
    update = jax.jit(tx.update)
    scales = (1e-30, 1e30, 1.0) if dtype == jnp.bfloat16 else (6e-8, 6e4 / 4, 1.0)
    for scale in scales:
        grads = _grads(params, scale)
        assert _finite(grads)
        updates, new_state = update(grads, state, params)
        assert _finite(updates), (name, scale)
        assert bool(_nonfinite_adamw_moments(new_state)) == (
            scale == 1e30 and name not in ("adafactor", "factored_muon"))
        assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
        moved = [float(jnp.max(jnp.abs(_flat(updates)[p].astype(jnp.float32))))
                 for p in ("dense/kernel", "stack/kernel")]
        assert min(moved) > 0, (name, scale)


# ----- the spectral direction on degenerate matrices (float64 SVD ground truth) ---------------
JORDAN_BAND = (0.68, 1.13)  # the image of (1e-3, 1] under Jordan's five steps, rounded out


def _degenerate():
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal((8, 1)), rng.standard_normal((1, 16))
    low = rng.standard_normal((8, 3)) @ rng.standard_normal((3, 16))
    return {"rank1": u @ v, "rank3": low, "row": rng.standard_normal((1, 16)),
            "col": rng.standard_normal((16, 1)), "empty": np.zeros((0, 16))}


def test_degenerate_matrices_follow_the_svd():
    mats = _degenerate()
    tx = optorth.orthogonalize()
    out = jax.jit(tx.update)(jax.tree.map(jnp.asarray, mats), tx.init(mats))[0]
    assert out["empty"].shape == (0, 16)
    for name, rank in (("rank1", 1), ("rank3", 3), ("row", 1), ("col", 1)):
        x, y = mats[name], np.asarray(out[name], np.float64)
        u, s, vt = np.linalg.svd(x, full_matrices=False)
        polar = u[:, :rank] @ vt[:rank]  # the polar factor on the range of x
        coords = u[:, :rank].T @ y @ vt[:rank].T  # y in the singular bases of x: diagonal
        assert np.all(np.diag(coords) > JORDAN_BAND[0]) and np.all(np.diag(coords) < JORDAN_BAND[1])
        np.testing.assert_allclose(coords - np.diag(np.diag(coords)), 0, atol=1e-5)
        residual = y - u[:, :rank] @ coords @ vt[:rank]  # nothing outside the range of x
        assert np.abs(residual).max() < 1e-3, name
        assert np.abs(y - polar).max() < 0.35 * np.abs(polar).max() + 1e-6


# ----- leaf dtypes: integer, complex, Python scalars -------------------------------------------
def test_complex_leaves_take_the_fallback_like_optax():
    ramp = jnp.arange(128).reshape(8, 16)
    params = {"w": jnp.ones((8, 16)), "x": (ramp % 7).astype(jnp.complex64)}
    grads = {"w": jnp.ones((8, 16)), "x": ((ramp % 3) * (1 + 2j)).astype(jnp.complex64)}
    report = optorth.describe_routing(params)
    assert re.search(r"^x .*fallback .*dtype complex64$", report, re.M)
    for name in ("muon", "normuon", "trust_region"):
        tx = build(name, fallback=adamw(0.5, weight_decay=0.1))
        reference = adamw(0.5, weight_decay=0.1)
        updates, _ = tx.update(grads, tx.init(params), params)
        expected, _ = reference.update({"x": grads["x"]}, reference.init({"x": params["x"]}),
                                       {"x": params["x"]})
        assert updates["x"].dtype == jnp.complex64
        np.testing.assert_allclose(updates["x"], expected["x"], rtol=1e-6, err_msg=name)
    # Sent to the matrix path explicitly: refused, naming the leaf.
    with pytest.raises(ValueError, match=r"Leaf 'x' of shape \(8, 16\) and dtype complex64 is "
                                         r"complex, but MatrixSpec"):
        optorth.muon(rules=[("^x$", MatrixSpec())]).init(params)


@pytest.mark.parametrize("name", ["adafactor", "factored_muon"])
def test_complex_leaves_are_refused_by_factored_statistics(name):
    """Adafactor (factored_muon's fallback) keeps real second moments: a complex leaf is an
    error that names it, not a silently wrong |g|² (optax.adafactor drops the imaginary part)."""
    params = {"w": jnp.ones((8, 16)), "c": jnp.ones((4, 6), jnp.complex64)}
    with pytest.raises(ValueError, match=r"leaf 'c' of shape \(4, 6\) has dtype complex64"):
        build(name).init(params)


@pytest.mark.parametrize("name", tiered(fast=STATE_KINDS))
def test_integer_leaves_with_float0_gradients_get_zero_updates(name):
    params = {"dense": {"kernel": jnp.ones((8, 16)) + jnp.eye(8, 16)},
              "step": jnp.asarray(3, jnp.int32), "ids": jnp.arange(4)}

    def loss(p):
        return jnp.sum(jnp.tanh(p["dense"]["kernel"])) + 0.0 * p["step"]

    grads = jax.grad(loss, allow_int=True)(params)
    assert grads["step"].dtype == jax.dtypes.float0
    tx = build(name)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    for key in ("step", "ids"):
        assert updates[key].dtype == params[key].dtype and not np.any(updates[key])
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["ids"], params["ids"])
    assert new["step"].dtype == jnp.int32 and int(new["step"]) == 3
    assert float(jnp.max(jnp.abs(new["dense"]["kernel"] - params["dense"]["kernel"]))) > 0


def test_python_float_leaves_work_as_in_optax_adamw():
    params = {"scale": 1.0, "dense": {"kernel": jnp.ones((8, 16))}}
    grads = {"scale": 0.5, "dense": {"kernel": jnp.ones((8, 16))}}
    tx = optorth.muon(fallback=adamw(0.1))
    reference = adamw(0.1)
    expected, _ = reference.update({"scale": 0.5}, reference.init({"scale": 1.0}), {"scale": 1.0})
    for update in (tx.update, jax.jit(tx.update)):
        updates, _ = update(grads, tx.init(params), params)
        np.testing.assert_allclose(updates["scale"], expected["scale"], rtol=1e-6)
        assert float(optax.apply_updates(params, updates)["scale"]) < 1.0
    with pytest.raises(ValueError, match=r"optorth.muon: leaf 'name' is 'x' \(str\), not an "
                                         r"array or a number"):
        tx.init({"name": "x", **params})


# ----- errors that name the leaf, its shape and the fix ---------------------------------------
P = {"dense": {"kernel": jnp.ones((8, 16)), "bias": jnp.zeros(16)}}


def _update(grads, params=P, tx=None):
    tx = optorth.muon() if tx is None else tx
    return tx.update(grads, tx.init(params), params)


ERRORS = {
    "update tree has an extra leaf": (
        lambda: _update({"dense": {"kernel": jnp.ones((8, 16)), "bias": jnp.zeros(16),
                                   "extra": jnp.ones(3)}}),
        r"only in the updates \['dense/extra'\].*Pass gradients of the parameter tree"),
    "update tree misses a leaf": (
        lambda: _update({"dense": {"kernel": jnp.ones((8, 16))}}),
        r"only in the params \['dense/bias'\]"),
    "update has a transposed shape": (
        lambda: _update({"dense": {"kernel": jnp.ones((16, 8)), "bias": jnp.zeros(16)}}),
        r"'dense/kernel' has shape \(16, 8\) but the parameter has shape \(8, 16\)"
        r".*Pass gradients with the parameters' shapes"),
    "spec axes that do not exist": (
        lambda: optorth.muon(rules=[("kernel", MatrixSpec((5,), (1,)))]).init(P),
        r"leaf 'dense/kernel' of shape \(8, 16\): reduction axes \[5\] do not exist.*"
        r"Give axes within the leaf's rank"),
    "spec axes that overlap": (
        lambda: optorth.muon(rules=[("kernel", MatrixSpec((0,), (0,)))]).init(P),
        r"leaf 'dense/kernel' of shape \(8, 16\): reduction \(0,\) and output \(0,\) overlap"),
    "spec axis repeated": (
        lambda: optorth.muon(rules=[("kernel", MatrixSpec((0, -2), (1,)))]).init(P),
        r"'dense/kernel'.*repeat an axis.*List each axis once"),
    "heads that do not divide the axis": (
        lambda: optorth.muon(rules=[("kernel", MatrixSpec((0,), (1,), heads=(1, 3)))]).init(P),
        r"'dense/kernel' of shape \(8, 16\).*does not split into 3 equal heads"),
    "rank-3 leaf without a rule": (
        lambda: optorth.muon().init({"stack": {"kernel": jnp.ones((2, 8, 16))}}),
        r"'stack/kernel' of shape \(2, 8, 16\).*rules=\[\(r'\(\^\|/\)stack/kernel\$', "
        r"optorth\.MatrixSpec\.stacked\(\)\)\]"),
    "rule with an unknown target": (
        lambda: optorth.muon(rules=[("kernel", "adam")]).init(P),
        r"rules\[0\].*target must be an optorth\.MatrixSpec or 'fallback'"),
    "unknown schedule name": (
        lambda: optorth.muon(ns=optorth.NewtonSchulz("jordna")),
        r"NewtonSchulz: Unknown schedule 'jordna'\. Known presets: jordan, .*polar_express.*"
        r"Did you mean 'jordan'\?"),
    "unknown schedule name as shorthand": (
        lambda: optorth.muon(ns="jordna"), r"Unknown schedule 'jordna'"),
    "step count the schedule does not define": (
        lambda: optorth.NewtonSchulz("you", steps=7),
        r"'you' \(extend='fixed'\) defines exactly 5 steps; 7 were requested\. Pass steps=None"),
    "zero steps": (lambda: optorth.NewtonSchulz(steps=0), r"steps must be a positive int"),
    "raw table of the wrong shape": (
        lambda: optorth.NewtonSchulz(np.ones((5, 2))),
        r"shape \(T, 3\) with T >= 1; got shape \(5, 2\)"),
    "not a NewtonSchulz": (
        lambda: optorth.muon(ns=5), r"ns must be an optorth.NewtonSchulz, a preset name or an "
                                    r"optorth.Schedule; got int"),
    "vector given to the engine": (
        lambda: optorth.newton_schulz(jnp.ones(16)),
        r"rank >= 2; got shape \(16,\)\. Reshape vectors to \(1, n\)"),
    "norm option out of range": (
        lambda: optorth.dualize(optorth.norms.AuON(gamma=-1.0)),
        r"AuON: gamma must be a finite number > 0; got -1.0"),
    "norm of the wrong kind": (
        lambda: optorth.auon(norm=optorth.norms.Sign()),
        r"optorth.auon: norm must be an optorth.norms.AuON .*optorth.trust_region\(norm=...\)"),
    "unknown norm name": (
        lambda: optorth.trust_region(0.1, norm="max"),
        r"Expected an optorth.norms.Norm .* got 'max'"),
    "float16 leaves on the AdamW fallback without mu_dtype": (
        lambda: optorth.muon().init({"embed": {"embedding": jnp.ones((10, 8), jnp.float16)}}),
        r"'embed/embedding' of shape \(10, 8\) is float16.*Pass mu_dtype='float32'"),
    "unknown restore policy": (
        lambda: optorth.reconcile_coefficients({}, {}, "latest"), r"Unknown policy 'latest'"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_name_the_leaf_shape_and_fix(case):
    fn, pattern = ERRORS[case]
    with pytest.raises(ValueError, match=pattern):
        fn()



# ----- bad values where they enter, across the ready optimizers -------------------------------
def _factory(name):
    return READY[name][0]


def _required(name):
    """The arguments ``name`` cannot be built without (a learning rate for some)."""
    lr = inspect.signature(_factory(name)).parameters["learning_rate"]
    return {"learning_rate": 0.01} if lr.default is inspect.Parameter.empty else {}


READY_NAMES = optorth.optimizers.READY


@pytest.mark.parametrize("value", [1.0, 1.5, -0.1, float("nan")])
@pytest.mark.parametrize("name", READY_NAMES)
def test_beta_outside_zero_one_is_refused(name, value):
    assert "beta" in inspect.signature(_factory(name)).parameters
    with pytest.raises(ValueError, match=rf"optorth\.{name}: beta must lie in \[0, 1\); "
                                         rf"got {value}\. \(1 keeps the first gradient forever"):
        _factory(name)(**_required(name), beta=value)


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
@pytest.mark.parametrize("name", READY_NAMES)
def test_static_learning_rates_must_be_finite_and_nonnegative(name, value):
    with pytest.raises(ValueError, match=rf"optorth\.{name}: learning_rate must be a finite "
                                         rf"number >= 0; got {value}"):
        _factory(name)(learning_rate=value)


@pytest.mark.parametrize("name", READY_NAMES)
def test_learning_rate_must_be_a_number_or_a_schedule(name):
    with pytest.raises(ValueError, match=rf"optorth\.{name}: learning_rate must be a number or "
                                         rf"an optax schedule .*got 'cosine'"):
        _factory(name)(learning_rate="cosine")
    tx = _factory(name)(learning_rate=optax.cosine_decay_schedule(0.01, 10))  # a schedule works
    assert isinstance(tx, optax.GradientTransformation)


SECOND_MOMENTS = ("normuon", "adamuon", "factored_muon")
VALUE_ERRORS = {
    **{f"{name} eps=0": (lambda name=name: _factory(name)(eps=0.0),
                         rf"optorth\.{name}: eps must be a finite number > 0; got 0\.0")
       for name in SECOND_MOMENTS},
    **{f"{name} eps=-1e-8": (lambda name=name: _factory(name)(eps=-1e-8),
                             rf"optorth\.{name}: eps must be a finite number > 0")
       for name in SECOND_MOMENTS},
    **{f"{name} beta2=1": (lambda name=name: _factory(name)(beta2=1.0),
                           rf"optorth\.{name}: beta2 must lie in \[0, 1\); got 1\.0")
       for name in SECOND_MOMENTS},
    "adamuon rms=0": (lambda: optorth.adamuon(rms=0.0),
                      r"optorth\.adamuon: rms must be a finite number > 0; got 0\.0"),
    "root quantile=1.5": (lambda: optorth.root(quantile=1.5),
                          r"soft_threshold: quantile must lie in \[0, 1\]; got 1\.5"),
    "adafactor clipping_threshold=0": (
        lambda: optorth.adafactor(clipping_threshold=0),
        r"optorth\.adafactor: clipping_threshold must be a finite number > 0; got 0"),
    "adafactor eps=0": (lambda: optorth.adafactor(eps=0.0),
                        r"optorth\.adafactor: eps must be a finite number > 0; got 0\.0"),
    "adafactor min_scale=0": (
        lambda: optorth.adafactor(min_scale=0.0),
        r"optorth\.adafactor: min_scale must be a finite number > 0; got 0\.0"),
    "adafactor mu_dtype without beta": (
        lambda: optorth.adafactor(mu_dtype="int8"),
        r"optorth\.adafactor: mu_dtype=int8 is not a floating dtype"),
    "negative weight decay": (
        lambda: optorth.muon(weight_decay=-0.1),
        r"optorth\.muon: weight_decay must be a finite number >= 0; got -0\.1"),
    "integer mu_dtype": (lambda: optorth.signum(0.1, mu_dtype="int32"),
                         r"optorth\.signum: mu_dtype=int32 is not a floating dtype"),
    "fallback that is not a transformation": (
        lambda: optorth.muon(fallback=optax.adamw),
        r"optorth\.muon: fallback must be an optax\.GradientTransformation .*got function"),
    "unknown scale convention": (
        lambda: optorth.muon(scale="moonlight"),
        r"ShapeScale: convention='moonlight'; expected one of \('keller', 'consistent_rms', "
        r"'spectral'\)"),
    "inject_hyperparams turns a dtype class into an array": (
        lambda: optax.inject_hyperparams(optorth.muon)(mu_dtype=jnp.bfloat16).init(P),
        r"optorth\.muon: mu_dtype got an array .*pass dtypes as strings \(mu_dtype='bfloat16'\)"),
}


@pytest.mark.parametrize("case", list(VALUE_ERRORS))
def test_bad_values_are_refused_where_they_enter(case):
    fn, pattern = VALUE_ERRORS[case]
    with pytest.raises(ValueError, match=pattern):
        fn()


def test_inject_hyperparams_takes_dtypes_as_strings():
    tx = optax.inject_hyperparams(optorth.muon)(mu_dtype="bfloat16")
    state = tx.init(P)
    mu = optorth.optimizers.matrix_state(state)[0].mu
    assert mu["dense"]["kernel"].dtype == jnp.bfloat16
    updates, _ = tx.update(P, state, P)
    assert updates["dense"]["kernel"].dtype == jnp.float32


# ----- misuse of update: every error names the optimizer --------------------------------------
G = jax.tree.map(lambda x: 0.1 * jnp.ones_like(x), P)
TRANSPOSED = {"dense": {"kernel": jnp.ones((16, 8)), "bias": jnp.zeros(16)}}


@pytest.mark.parametrize("name", READY_NAMES)
def test_update_misuse_names_the_optimizer(name):
    tx = _factory(name)(**_required(name))
    state = tx.init(P)
    with pytest.raises(ValueError, match=rf"optorth\.{name}: update needs the parameters.*"
                                         rf"tx\.update\(grads, state, params\)"):
        tx.update(G, state)
    with pytest.raises(ValueError, match=rf"optorth\.{name}: update needs the parameters"):
        jax.jit(tx.update)(G, state)
    mismatch = rf"optorth\.{name}: the state does not match this optimizer and these parameters"
    with pytest.raises(ValueError, match=mismatch + r" \(its leaves differ.*tx\.update\(grads, "
                                                    r"state, params\)"):
        tx.update(P, G, state)  # swapped: (params, grads, state)
    other = optorth.adamuon() if name != "adamuon" else optorth.muon()
    with pytest.raises(ValueError, match=mismatch):
        tx.update(G, other.init(P), P)
    with pytest.raises(ValueError, match=mismatch + r" \(leaf '.*' has shape \(\d+(, \d+)*\), "
                                                    r"expected \(\d+(, \d+)*\)\)"):
        tx.update(G, tx.init(TRANSPOSED), P)  # a state built for transposed parameters


@pytest.mark.parametrize("name", ["muon", "turbo_muon", "normuon", "adamuon", "factored_muon"])
def test_state_for_another_step_count_names_the_shapes(name):
    five = _factory(name)(ns=optorth.NewtonSchulz("jordan", steps=5))
    eight = _factory(name)(ns=optorth.NewtonSchulz("jordan", steps=8))
    with pytest.raises(ValueError, match=rf"optorth\.{name}: the state does not match .*"
                                         rf"coeffs' has shape \(5, 3\), expected \(8, 3\)"):
        eight.update(G, five.init(P), P)


def test_reconcile_refuses_a_restored_table_of_nan_under_the_default_policy():
    reference = optorth.muon().init(P)

    def poison(x):
        if isinstance(x, optorth.blocks.OrthogonalizeState):
            return x._replace(coeffs=jnp.full_like(x.coeffs, jnp.nan))
        return x

    restored = jax.tree.map(poison, reference,
                            is_leaf=lambda x: isinstance(x, optorth.blocks.OrthogonalizeState))
    with pytest.raises(ValueError, match=r"'inner_states/train/inner_state/inner_states/matrix/"
                                         r"inner_state/1' are not a finite \(T, 3\) table.*"
                                         r"policy='override'"):
        optorth.reconcile_coefficients(restored, reference)
    for policy in ("keep", "same_schedule"):
        with pytest.raises(ValueError, match="not a finite"):
            optorth.reconcile_coefficients(restored, reference, policy)
    overridden = optorth.reconcile_coefficients(restored, reference, "override")
    assert _finite(overridden)
