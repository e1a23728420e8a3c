"""The Newton–Schulz entry points refuse bad input where it enters, with a ValueError that
names the callee, the argument and the fix; good configurations are static, hashable values.

Entry points: ``optorth.NewtonSchulz``, ``optorth.newton_schulz``, ``optorth.Schedule``,
``optorth.validate_schedule``, ``optorth.fit_schedule``, ``optorth.OnlineLearning`` and the
``optorth.ns`` generators, samplers and online refinement. Each case was found by probing the
entry points with a few hundred bad values; every one must fail before any iteration runs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optorth
from optorth.ns import PRESETS

X = jnp.asarray(np.random.default_rng(0).standard_normal((6, 10)), jnp.float32)
JORDAN = PRESETS["jordan"].rows()
NaN, INF = float("nan"), float("inf")


# ----- NewtonSchulz -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        # raw tables
        (dict(schedule=[(3.4445, NaN, 2.0315)] * 5),
         r"NewtonSchulz: the coefficient table has non-finite entries \(NaN or inf\) in rows "
         r"\[0, 1, 2, 3, 4\]"),
        (dict(schedule=np.zeros((0, 3))), r"NewtonSchulz: .*shape \(T, 3\) with T >= 1; got "
                                          r"shape \(0, 3\)"),
        (dict(schedule=[]), r"shape \(T, 3\) with T >= 1; got shape \(0,\)"),
        (dict(schedule=[(10, -1, 0)] * 5),
         r"NewtonSchulz: schedule 'custom' with 5 steps is rejected by "
         r"optorth.validate_schedule: sign flip: step 2 .* exploding or NaN updates"),
        (dict(schedule=np.ones((5, 2))), r"shape \(T, 3\) with T >= 1; got shape \(5, 2\)"),
        (dict(schedule=np.ones((2, 5, 3))), r"got shape \(2, 5, 3\)"),
        (dict(schedule=[[1, 2, 3], [1, 2]]), r"a coefficient table must be a \(T, 3\) array of "
                                             r"numbers"),
        (dict(schedule=[(0.0, 0.0, 0.0)]), r"rejected .*collapse: some σ .* are mapped to 0"),
        (dict(schedule=[(1e308, 1e308, 1e308)]), r"rejected .*(overflow|escape)"),
        (dict(schedule=3), r"NewtonSchulz: a coefficient table must have shape \(T, 3\)"),
        # steps
        (dict(steps=2.5), r"NewtonSchulz: steps must be a positive int; got 2.5"),
        (dict(steps=0), r"NewtonSchulz: steps must be a positive int; got 0"),
        (dict(steps=True), r"NewtonSchulz: steps must be a positive int; got True"),
        (dict(steps="5"), r"steps must be a positive int; got '5'"),
        (dict(steps=10**9), r"steps=1000000000 is more than 1000"),
        (dict(schedule="polar_express5", steps=8),
         r"NewtonSchulz: Schedule 'polar_express5' \(extend='fixed'\) defines exactly 5 steps; "
         r"8 were requested"),
        (dict(schedule=optorth.ns.polar_express_schedule(4), steps=6), r"at most 4 steps; 6"),
        # names
        (dict(schedule="jordn"), r"NewtonSchulz: Unknown schedule 'jordn'\. Known presets: "
                                 r"jordan, .* Did you mean 'jordan'\?"),
        (dict(schedule="cans"), r"computed for a step count.*optorth.ns.cans_schedule"),
        (dict(method="grams"), r"NewtonSchulz: method='grams'; expected one of .*Did you mean "
                               r"'gram'\?"),
        (dict(precondition="frob"), r"NewtonSchulz: precondition='frob'; .*Did you mean "
                                    r"'frobenius'\?"),
        (dict(dtype="int32"), r"NewtonSchulz: dtype=int32 is not a floating dtype"),
        (dict(dtype="bf16"), r"NewtonSchulz: dtype='bf16' is not a dtype"),
        (dict(eps=0), r"NewtonSchulz: eps must be a finite number > 0; got 0"),
        (dict(eps=NaN), r"NewtonSchulz: eps must be a finite number > 0; got nan"),
        (dict(eps="1e-7"), r"eps must be a real number"),
        # online learning
        (dict(schedule="root", learn=optorth.OnlineLearning()),
         r"NewtonSchulz: learn= refines one \(T, 3\) table, but schedule='root' keeps one table "
         r"per matrix shape"),
        (dict(learn="yes"), r"NewtonSchulz: learn must be an optorth.OnlineLearning or None; "
                            r"got str"),
        (dict(learn={"every": 10}), r"learn must be an optorth.OnlineLearning or None; got dict"),
    ],
)
def test_newton_schulz_config_refuses(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optorth.NewtonSchulz(**kwargs)


def test_per_shape_table_is_validated_for_each_shape():
    ns = optorth.NewtonSchulz("root")  # fine: ROOT's rows are checked shape by shape
    assert ns.table((2048, 3072)).shape == (5, 3)
    with pytest.raises(ValueError, match=r"schedule 'root_2048x2048' \(the table for matrices of "
                                         r"shape \(2048, 2048\)\) with 5 steps is rejected.*"
                                         r"escape"):
        ns.table((2048, 2048))
    with pytest.raises(ValueError, match=r"NewtonSchulz: Preset 'root' keeps one table per "
                                         r"matrix shape; pass shape=\(m, n\)"):
        ns.table()
    with pytest.raises(ValueError, match=r"root_schedule: shape must be a matrix shape"):
        ns.table((7,))


def test_traced_schedule_points_to_coeffs():
    with pytest.raises(ValueError, match=r"NewtonSchulz: the schedule must be concrete.*"
                                         r"coeffs=table"):
        jax.jit(lambda t: optorth.NewtonSchulz(t).table())(jnp.ones((5, 3)))


# ----- newton_schulz ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: optorth.newton_schulz(X, "jordan", steps=3),
         r"newton_schulz takes its settings as one optorth.NewtonSchulz; got steps=3. Write "
         r"optorth.newton_schulz\(x, optorth.NewtonSchulz\('jordan', steps=3\)\)"),
        (lambda: optorth.newton_schulz(X, None), r"ns must be an optorth.NewtonSchulz.*NoneType"),
        (lambda: optorth.newton_schulz(X, [(1.0, 0.0, 0.0)]), r"ns must be .*got list"),
        (lambda: optorth.newton_schulz(jnp.ones(5)), r"rank >= 2; got shape \(5,\)"),
        (lambda: optorth.newton_schulz("abc"), r"newton_schulz expects a floating array"),
        (lambda: optorth.newton_schulz(jnp.ones((3, 3), jnp.int32)), r"floating-point.*int32"),
        (lambda: optorth.newton_schulz(X, coeffs=jnp.ones((5, 2))),
         r"newton_schulz_table: .*\(T, 3\) with T >= 1; got shape \(5, 2\)"),
        (lambda: optorth.newton_schulz(X, coeffs=jnp.ones((0, 3))), r"got shape \(0, 3\)"),
    ],
)
def test_newton_schulz_refuses(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----- Schedule, validate_schedule, generators ----------------------------------------------
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: optorth.Schedule([(1, 2, 3)], safety=INF), r"safety must be a finite number"),
        (lambda: optorth.Schedule([(1, 2, 3)], name=3), r"Schedule: name must be a string"),
        (lambda: optorth.Schedule([(1, 2, 3)], provenance=5), r"provenance must be \(key, "
                                                              r"value\) pairs"),
        (lambda: optorth.Schedule([(1, 2, 3)], extend="repeat"), r"Did you mean 'repeat_last'"),
        (lambda: optorth.Schedule(PRESETS["you"].table).rows(2.5),
         r"Schedule 'custom': steps must be a positive int; got 2.5"),
        (lambda: optorth.Schedule.from_dict({"name": "x"}), r"from_dict expects a mapping with "
                                                             r"a 'table' entry"),
        (lambda: optorth.Schedule.from_json("{"), r"Schedule.from_json: not valid JSON"),
        (lambda: optorth.validate_schedule("jordn"), r"validate_schedule: Unknown schedule "
                                                     r"'jordn'.* Did you mean 'jordan'"),
        (lambda: optorth.validate_schedule("jordan", sigma_min=NaN),
         r"validate_schedule: sigma_min must be a finite number > 0"),
        (lambda: optorth.validate_schedule("jordan", steps=0), r"steps must be a positive int"),
        (lambda: optorth.validate_schedule("root", shape="ab"), r"shape must be a matrix shape"),
        (lambda: optorth.ns.polar_express_schedule(3, sigma_max=1e-4),
         r"polar_express_schedule: need 0 < sigma_min < sigma_max"),
        (lambda: optorth.ns.cans_schedule(None), r"cans_schedule: steps must be a positive int"),
        (lambda: optorth.ns.choose_method("ab"), r"choose_method: shape must be a matrix shape"),
        (lambda: optorth.ns.resolve_schedule(3), r"resolve_schedule: schedule must be a preset"),
    ],
)
def test_schedule_entry_points_refuse(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_validator_explains_every_rejection():
    collapse = optorth.validate_schedule([(0.0, 0.0, 0.0)])
    assert not collapse.ok and collapse.reason.startswith("collapse")
    huge = optorth.validate_schedule([(1e308, 1e308, 1e308)])
    assert not huge.ok and not huge.reason.startswith("stable")


# ----- fitting and sampling ---------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=3, sigma_min=None), r"fit_schedule: sigma_min must be a real number"),
        (dict(steps=3, safety=None), r"fit_schedule: safety must be a real number"),
        (dict(steps=3, shape="ab"), r"fit_schedule: shape must be a matrix shape"),
        (dict(steps=3, shape=(2.5, 4)), r"shape must be a matrix shape .* got \(2.5, 4\)"),
        # the objective's settings as the deprecated keywords: checked by its object
        (dict(steps=3, objective="band", delta=0), r"BandObjective: delta must be a finite "
                                                   r"number > 0"),
        (dict(steps=3, iterations=0), r"fit_schedule: iterations must be a positive int"),
        (dict(steps=3, learning_rate=NaN), r"learning_rate must be a finite number > 0"),
        (dict(steps=3, search=-1), r"fit_schedule: search must be an int >= 0"),
        (dict(steps=3, worst_weight=NaN), r"worst_weight must be a finite number >= 0"),
        (dict(steps=3, mean_weight=0, worst_weight=0), r"nothing to fit"),
        (dict(steps=3, init="jordn"), r"fit_schedule: Unknown schedule 'jordn'"),
        (dict(steps=3, init=[(NaN, 1, 1)] * 3), r"fit_schedule: .*non-finite"),
        (dict(steps=3, spectra="abc"), r"spectra must be a list of 1-D arrays"),
        (dict(steps=3, spectra=[[NaN]]), r"fit_schedule: spectra contain no positive finite"),
        (dict(steps=3, objective="matrix", shape=(4, 8), dtype="int32"),
         r"MatrixObjective: dtype=int32 is not a floating dtype"),
    ],
)
@pytest.mark.filterwarnings("ignore:fit_schedule.*is deprecated:DeprecationWarning")
def test_fit_schedule_checks_arguments_before_fitting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optorth.fit_schedule(**{"iterations": 2, "search": 0, **kwargs})


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("zipf", (4, 8), 2), {}, r"sample_spectra: family='zipf'"),
        (("gaussian", (4, 8), 2.5), {}, r"sample_spectra: count must be a positive int"),
        (("log_uniform", (4, 8), 2), dict(sigma_min=0), r"sigma_min must be a finite number"),
        (("gaussian", (0, 8), 2), {}, r"shape must be a matrix shape"),
    ],
)
def test_sample_spectra_refuses(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        optorth.ns.sample_spectra(*args, **kwargs)


# ----- online learning ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(every=0), r"OnlineLearning: every must be a positive int; got 0"),
        (dict(learning_rate=-1), r"OnlineLearning: learning_rate must be a finite number > 0; "
                                 r"got -1"),
        (dict(learning_rate=INF), r"learning_rate must be a finite number > 0; got inf"),
        (dict(max_error=0), r"OnlineLearning: max_error must be a finite number > 0"),
        (dict(margin=-0.5), r"OnlineLearning: margin must be a finite number >= 0"),
        (dict(dtype="int32"), r"OnlineLearning: dtype=int32 is not a floating dtype"),
    ],
)
def test_online_learning_refuses(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optorth.OnlineLearning(**kwargs)


def test_refine_coefficients_refuses_a_bare_array():
    table, config = jnp.asarray(JORDAN, jnp.float32), optorth.OnlineLearning(every=1)
    with pytest.raises(ValueError, match=r"refine_coefficients: matrices must be a list .* "
                                         r"Wrap a single array as \[x\]"):
        optorth.ns.refine_coefficients(table, X, config)
    with pytest.raises(ValueError, match=r"refine_coefficients: matrices\[0\] must be an array "
                                         r"of shape \(..., m, n\); got \(3,\)"):
        optorth.ns.refine_coefficients(table, [jnp.ones(3)], config)
    with pytest.raises(ValueError, match=r"refine_coefficients: safety must be a finite number "
                                         r">= 1"):
        optorth.ns.refine_coefficients(table, [X], config, safety=0.5)


# ----- what works: static, hashable, equal for equal settings ----------------------------
def test_equal_settings_are_equal_and_hashable():
    a = optorth.NewtonSchulz("polar_express5", steps=None, dtype=jnp.bfloat16, eps=1e-7)
    b = optorth.NewtonSchulz(schedule="polar_express5", dtype="bfloat16", eps=1e-7)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert optorth.NewtonSchulz(JORDAN) == optorth.NewtonSchulz(JORDAN.tolist())
    assert optorth.NewtonSchulz("jordan") != optorth.NewtonSchulz("jordan", steps=6)
    assert a.dtype == "bfloat16" and a.compute_dtype == jnp.bfloat16


def test_config_is_a_static_argument_under_jit():
    calls = []

    def traced(x, ns):
        calls.append(ns)
        return optorth.newton_schulz(x, ns)

    jitted = jax.jit(traced, static_argnames="ns")
    for ns in (optorth.NewtonSchulz("you"), optorth.NewtonSchulz("you"),
               optorth.NewtonSchulz("polar_express5", method="gram")):
        out = jitted(X, ns=ns)
        assert out.shape == X.shape and bool(jnp.all(jnp.isfinite(out)))
    assert len(calls) == 2  # equal configs share one compilation
    np.testing.assert_allclose(jitted(X, ns=optorth.NewtonSchulz()), optorth.newton_schulz(X),
                               atol=1e-5)


@pytest.mark.parametrize("name", ["jordan", "you"])  # Frobenius-normalized, safety 1
def test_a_raw_table_equal_to_a_preset_gives_identical_output(name):
    raw = optorth.NewtonSchulz(PRESETS[name].rows(), method="standard")
    preset = optorth.NewtonSchulz(name, method="standard")
    np.testing.assert_array_equal(optorth.newton_schulz(X, raw), optorth.newton_schulz(X, preset))


def test_inject_hyperparams_keeps_the_config_static():
    tx = optax.inject_hyperparams(optorth.muon)(
        learning_rate=0.02, ns=optorth.NewtonSchulz("polar_express5"))
    params = {"w": jnp.ones((6, 10)) / 10, "b": jnp.zeros(10)}
    grads = {"w": X, "b": jnp.ones(10)}
    state = jax.jit(tx.init)(params)
    assert "ns" not in state.hyperparams and "learning_rate" in state.hyperparams
    updates, state = jax.jit(tx.update)(grads, state, params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
    assert float(jnp.abs(updates["w"]).max()) > 0
