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
  the AdamW fallback refuses them: its float16 eps underflows); integer and complex leaves take the
  fallback optimizer (routing reason ``dtype ...``), exactly as ``optax.adamw`` treats them.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _ready import NAMES, READY, UNROUTED, build

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
@pytest.mark.parametrize("name", NAMES)
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
    mu = state.inner_states["matrix"].inner_state[0].mu
    assert not _finite(mu["dense"]["kernel"]) and _finite(mu["stack"]["kernel"])


LOW_PRECISION = ("muon", "normuon", "factored_muon", "adafactor")


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("name", [n if n in LOW_PRECISION else
                                  pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
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


# ----- leaf dtypes that take the fallback -----------------------------------------------------
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.complex64])
def test_integer_and_complex_leaves_take_the_fallback_like_optax(dtype):
    params = {"w": jnp.ones((8, 16)), "x": (jnp.arange(128).reshape(8, 16) % 7).astype(dtype)}
    grads = {"w": jnp.ones((8, 16)), "x": (jnp.arange(128).reshape(8, 16) % 3).astype(dtype)}
    report = optorth.describe_routing(params)
    assert re.search(rf"^x .*fallback .*dtype {jnp.dtype(dtype).name}$", report, re.M)
    tx = optorth.muon(adam_learning_rate=0.5, adam_weight_decay=0.1)
    reference = optax.adamw(0.5, b1=0.9, b2=0.95, eps=1e-10, weight_decay=0.1)
    updates, _ = tx.update(grads, tx.init(params), params)
    expected, _ = reference.update({"x": grads["x"]}, reference.init({"x": params["x"]}),
                                   {"x": params["x"]})
    assert updates["x"].dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(updates["x"], expected["x"].astype(dtype))


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
        r"'stack/kernel' of shape \(2, 8, 16\).*rules=\[\(r'\^stack/kernel\$', "
        r"optorth\.MatrixSpec\.stacked\(\)\)\]"),
    "rule with an unknown target": (
        lambda: optorth.muon(rules=[("kernel", "adam")]).init(P),
        r"rules\[0\].*target must be an optorth\.MatrixSpec or 'fallback'"),
    "unknown schedule name": (
        lambda: optorth.muon(schedule="jordna").init(P),
        r"Unknown schedule 'jordna'\. Known presets: jordan, .*polar_express"),
    "step count the schedule does not define": (
        lambda: optorth.muon(schedule="you", steps=7).init(P),
        r"'you' \(extend='fixed'\) defines exactly 5 steps; 7 were requested\. Pass steps=None"),
    "zero steps": (lambda: optorth.muon(steps=0).init(P), r"steps must be a positive int"),
    "raw table of the wrong shape": (
        lambda: optorth.muon(schedule=np.ones((5, 2))).init(P), r"shape \(T, 3\); got \(5, 2\)"),
    "vector given to the engine": (
        lambda: optorth.newton_schulz(jnp.ones(16)),
        r"rank >= 2; got shape \(16,\)\. Reshape vectors to \(1, n\)"),
    "unknown dualizer norm option": (
        lambda: optorth.dualize("sign", gamma=1.0),
        r"dualize\('sign'\) got options \['gamma'\]"),
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

