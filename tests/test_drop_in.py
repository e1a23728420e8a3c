"""Drop-in safety in other people's training code.

Settings that third-party trainers use (``jax_numpy_rank_promotion="raise"``, Linen boxed
parameters, learning-rate schedules, conv kernels under Adafactor) and the routing mistakes a
user never sees (rules that match nothing, an output layer on the matrix path) each get a test
here: a correct result, or a warning / error that names the leaf and the fix.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optorth
from optorth import MatrixSpec

NON_SQUARE = {"w": jnp.ones((4, 12)) + jnp.eye(4, 12), "s": jnp.ones((3, 4, 12)) + jnp.eye(4, 12),
              "b": jnp.zeros(12)}
STACKED = [("^s$", MatrixSpec.stacked())]


@pytest.mark.parametrize("name", ["muon", "turbo_muon", "root", "normuon", "adamuon",
                                  "factored_muon", "trust_region", "auon"])
def test_rank_promotion_raise_gives_the_same_update(name):
    tx = getattr(optorth, name)(rules=STACKED)
    expected, _ = tx.update(NON_SQUARE, tx.init(NON_SQUARE), NON_SQUARE)
    with jax.numpy_rank_promotion("raise"):
        got, _ = jax.jit(tx.update)(NON_SQUARE, tx.init(NON_SQUARE), NON_SQUARE)
    for key in NON_SQUARE:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["gram", "standard"])
@pytest.mark.parametrize("precondition", ["frobenius", "schatten", "spectral", "aol"])
def test_newton_schulz_under_rank_promotion_raise(method, precondition):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 16))
    ns = optorth.NewtonSchulz("polar_express5", method=method, precondition=precondition)
    expected = optorth.newton_schulz(x, ns)
    with jax.numpy_rank_promotion("raise"):
        got = optorth.newton_schulz(x, ns)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _boxed_mlp():
    import flax.linen as nn

    class Mlp(nn.Module):
        @nn.compact
        def __call__(self, x):
            init = nn.with_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))
            x = nn.relu(nn.Dense(16, kernel_init=init)(x))
            return nn.Dense(8, kernel_init=nn.with_partitioning(
                nn.initializers.lecun_normal(), ("mlp", "embed")))(x)

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Mlp(name="Mlp_0")(x)

    return Model().init(jax.random.PRNGKey(0), jnp.ones((2, 8)))["params"]


def _targets(tree):
    return {d.path: d.target for d in optorth.matrices.routing_decisions(tree)[0]}


def test_linen_boxed_parameters_have_their_plain_paths():
    params = _boxed_mlp()
    assert set(_targets(params)) == {"Mlp_0/Dense_0/kernel", "Mlp_0/Dense_0/bias",
                                     "Mlp_0/Dense_1/kernel", "Mlp_0/Dense_1/bias"}


def test_rule_ending_in_kernel_matches_a_boxed_kernel():
    params = _boxed_mlp()
    specs = optorth.route(params, [(r"Mlp_0/Dense_1/kernel$", "fallback")])
    assert specs["Mlp_0"]["Dense_1"]["kernel"] == "fallback"
    assert specs["Mlp_0"]["Dense_0"]["kernel"] == MatrixSpec()


def test_muon_updates_boxed_parameters_like_unboxed_ones():
    import flax.linen as nn

    params = _boxed_mlp()
    plain = nn.meta.unbox(params)
    rules = [(r"Dense_1/kernel$", "fallback")]
    tx = optorth.muon(rules=rules)
    boxed_updates, _ = tx.update(params, tx.init(params), params)
    plain_updates, _ = tx.update(plain, tx.init(plain), plain)
    assert isinstance(boxed_updates["Mlp_0"]["Dense_0"]["kernel"], nn.Partitioned)
    for got, want in zip(jax.tree.leaves(boxed_updates), jax.tree.leaves(plain_updates),
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


# ----- the routing report: never raises, every leaf, suggested rules, warnings -------------
def _dense_general_attention():
    """Flax DenseGeneral attention kernels: q/k/v (d, heads, head_dim), out (heads, head_dim, d)."""
    block = {"attn_q_proj": {"kernel": jnp.zeros((16, 2, 8)), "bias": jnp.zeros((2, 8))},
             "attn_k_proj": {"kernel": jnp.zeros((16, 2, 8)), "bias": jnp.zeros((2, 8))},
             "attn_v_proj": {"kernel": jnp.zeros((16, 2, 8)), "bias": jnp.zeros((2, 8))},
             "attn_out_proj": {"kernel": jnp.zeros((2, 8, 16)), "bias": jnp.zeros(16)},
             "mlp": {"kernel": jnp.zeros((16, 64))}, "mlp_out": {"kernel": jnp.zeros((64, 16))}}
    return {"h_0": block, "h_1": jax.tree.map(jnp.copy, block),
            "wte": {"embedding": jnp.zeros((32, 16))}}


def test_describe_routing_lists_every_leaf_of_an_ambiguous_tree_without_raising():
    params = _dense_general_attention()
    text = optorth.describe_routing(params)
    for path in ("h_0/attn_q_proj/kernel", "h_1/attn_out_proj/kernel", "h_1/mlp_out/kernel"):
        assert any(line.startswith(path) for line in text.splitlines()), path
    rows = [line for line in text.splitlines() if line.startswith("h_") and "unresolved" in line]
    assert len(rows) == 8
    assert text.splitlines()[-1] == "4 matrix leaves, 9 fallback leaves, 8 unresolved leaves"


def test_suggested_rules_fit_dense_general_attention_and_cover_every_layer():
    params = _dense_general_attention()
    report = optorth.matrices.routing_report(params)
    rules = [(s.pattern, s.spec) for s in report.suggestions]
    assert len(rules) == 2  # one rule for q/k/v of every layer, one for the outputs
    specs = optorth.route(params, rules)
    qkv, out = specs["h_1"]["attn_k_proj"]["kernel"], specs["h_0"]["attn_out_proj"]["kernel"]
    # Fan-in is the model dimension d = 16 for q/k/v and heads·head_dim = 16 for the output.
    assert qkv.matrix_shape((16, 2, 8)) == (1, 16, 16)
    assert out.matrix_shape((2, 8, 16)) == (1, 16, 16)
    assert qkv.reduction == (-3,) and out.output == (-1,)


def test_route_names_every_ambiguous_leaf_in_one_error():
    params = _dense_general_attention()
    with pytest.raises(ValueError) as info:
        optorth.route(params)
    message = str(info.value)
    for path in ("h_0/attn_q_proj/kernel", "h_1/attn_v_proj/kernel", "h_1/attn_out_proj/kernel"):
        assert repr(path) in message
    assert r"(^|/)(attn_k_proj|attn_q_proj|attn_v_proj)/kernel$" in message
    assert "optorth.MatrixSpec((-3,), (-2, -1))" in message


def test_stacked_and_conv1d_suggestions_follow_names_and_shapes():
    params = {"layers": {"mlp": {"kernel": jnp.zeros((4, 16, 64))}},
              "stem": {"kernel": jnp.zeros((3, 16, 32))},
              "vol": {"kernel": jnp.zeros((3, 3, 3, 4, 8))}}
    suggestions = {s.paths[0]: s.spec for s in optorth.matrices.routing_report(params).suggestions}
    assert suggestions == {"layers/mlp/kernel": MatrixSpec.stacked(),
                           "stem/kernel": MatrixSpec.conv(spatial_dims=1),
                           "vol/kernel": MatrixSpec.conv(spatial_dims=3)}


def test_describe_routing_reports_bad_rules_instead_of_raising():
    text = optorth.describe_routing({"w": jnp.zeros((4, 8))}, [("(", "fallback"), ("^w$", "x")])
    assert "'(' is not a valid regular expression" in text
    assert "rules[1] = ('^w$', 'x'): target must be" in text


def test_rule_matching_nothing_warns_at_init_and_in_the_report():
    params = {"w": jnp.zeros((4, 8)), "b": jnp.zeros(8)}
    rules = [(r"^Mlp_0/Dense_1/kernel$", "fallback")]
    with pytest.warns(optorth.matrices.RoutingWarning,
                      match=r"optorth.muon: rule '\^Mlp_0/Dense_1/kernel\$' matches no leaf"):
        optorth.muon(rules=rules).init(params)
    assert "matches no leaf" in optorth.describe_routing(params, rules)


@pytest.mark.parametrize("make", ["dict", "sequential"])
def test_likely_output_layer_on_the_matrix_path_warns(make):
    from flax import nnx

    if make == "dict":
        params = {"linear1": {"kernel": jnp.zeros((12, 8)), "bias": jnp.zeros(8)},
                  "linear2": {"kernel": jnp.zeros((8, 3)), "bias": jnp.zeros(3)}}
        path = "linear2/kernel"
    else:
        model = nnx.Sequential(nnx.Linear(12, 8, rngs=nnx.Rngs(0)), nnx.relu,
                               nnx.Linear(8, 3, rngs=nnx.Rngs(1)))
        params, path = nnx.state(model, nnx.Param), "layers/2/kernel"
    with pytest.warns(optorth.matrices.RoutingWarning,
                      match=rf"leaf '{path}' of shape \(8, 3\) takes the matrix path but looks "
                            r"like the output layer"):
        optorth.muon().init(params)
    # An explicit rule keeps it on the matrix path, silently.
    report = optorth.matrices.routing_report(params, [(f"^{path}$", MatrixSpec())])
    assert report.warnings == []


def test_hidden_layers_of_a_transformer_give_no_output_layer_warning():
    params = _dense_general_attention()
    rules = [(s.pattern, s.spec) for s in optorth.matrices.routing_report(params).suggestions]
    assert optorth.matrices.routing_report(params, rules).warnings == []


def test_an_embedding_as_long_as_the_width_does_not_make_hidden_layers_output_layers():
    """A positional embedding with context = width = 32 has as many rows as every hidden layer
    has outputs; a size that hidden layers read as input is not a vocabulary. The head
    (32 → 96 = the token embedding's rows) is still flagged."""
    params = {"wpe": {"embedding": jnp.zeros((32, 32))}, "wte": {"embedding": jnp.zeros((96, 32))},
              "proj": {"kernel": jnp.zeros((32, 32))}, "up": {"kernel": jnp.zeros((32, 64))},
              "down": {"kernel": jnp.zeros((64, 32))}}
    assert optorth.matrices.routing_report(params).warnings == []
    params["final"] = {"kernel": jnp.zeros((32, 96))}
    (warning,) = optorth.matrices.routing_report(params).warnings
    assert "'final/kernel'" in warning and "match an embedding's vocabulary" in warning


def test_tied_embedding_on_the_matrix_path_and_no_matrix_leaf_warn():
    params = {"wte": {"embedding": jnp.zeros((32, 16))}, "b": jnp.zeros(16)}
    warnings = optorth.matrices.routing_report(params, [("wte", MatrixSpec())]).warnings
    assert len(warnings) == 1 and "named like an embedding or output head ('wte')" in warnings[0]
    with pytest.warns(optorth.matrices.RoutingWarning, match="no leaf takes the matrix path"):
        optorth.muon().init(params)


# ----- schedules reach the default fallback -------------------------------------------------
WARMUP = optax.warmup_cosine_decay_schedule(0.0, 0.02, 10, 100)
EMBED = {"embed": jnp.ones((16, 8)), "w": jnp.ones((8, 32)) / 8, "b": jnp.zeros(32)}


@pytest.mark.parametrize("name", ["muon", "normuon", "factored_muon", "signum"])
def test_schedule_reaches_the_default_fallback_at_step_0_of_a_warmup(name):
    tx = getattr(optorth, name)(learning_rate=WARMUP)
    updates, _ = tx.update(EMBED, tx.init(EMBED), EMBED)
    # At step 0 the warmup is at 0: the embedding and the bias must not move either.
    np.testing.assert_array_equal(updates["embed"], 0.0)
    np.testing.assert_array_equal(updates["b"], 0.0)


def test_default_fallback_follows_the_schedule_at_its_own_peak():
    tx = optorth.muon(learning_rate=WARMUP)
    reference = optax.adamw(3e-3, b1=0.9, b2=0.95, eps=1e-10, weight_decay=0.0)
    grads = {"embed": jnp.full((16, 8), 0.5)}
    state, ref_state = tx.init(EMBED), reference.init({"embed": EMBED["embed"]})
    for _ in range(11):  # step 10 is the schedule's peak: the fallback runs at 3e-3
        updates, state = tx.update({**grads, "w": EMBED["w"], "b": EMBED["b"]}, state, EMBED)
        expected, ref_state = reference.update(grads, ref_state, {"embed": EMBED["embed"]})
    np.testing.assert_allclose(updates["embed"], expected["embed"], rtol=1e-5)


@pytest.mark.parametrize("schedule, text", [
    (lambda count: -0.01 + 0.0 * count, r"gives -0.01 at step 0"),
    (optax.linear_schedule(0.02, -0.02, 100), r"gives -0.*at step 5\d; a learning rate must"),
    (lambda count: jnp.where(count > 50, jnp.nan, 0.01), r"gives nan at step 51"),
    (optax.constant_schedule(0.0), r"is 0 at every step"),
])
def test_bad_schedules_are_refused_at_construction(schedule, text):
    with pytest.raises(ValueError, match=r"optorth.muon: the learning-rate schedule " + text):
        optorth.muon(learning_rate=schedule)
