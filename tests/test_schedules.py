"""Schedule as data: presets equal their published sources, step rules, serialization, ROOT."""

import dataclasses

import numpy as np
import pytest

import optorth
from optorth.ns._presets import PRESETS, ROOT_ROWS, resolve_schedule, root_schedule
from optorth.ns._schedule import EXTEND_RULES, Schedule

# The tables as published (KellerJordan/Muon, Jiacheng You, arXiv 2505.16932, arXiv 2511.20626),
# transcribed here independently of optorth/ns/_presets.py.
JORDAN_ROW = (3.4445, -4.7750, 2.0315)
YOU_ROWS = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
YOU6_INT_ROWS = (
    (3955, -8306, 5008),
    (3735, -6681, 3463),
    (3799, -6499, 3211),
    (4019, -6385, 2906),
    (2677, -3029, 1162),
    (2172, -1833, 682),
)
POLAR_EXPRESS_RAW = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)
POLAR_EXPRESS_SHIPPED = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
ROOT_PUBLISHED = {
    (2048, 2048): (3.4916, -4.8224, 2.1095),
    (2048, 3072): (3.4509, -4.5790, 1.9325),
    (2048, 8192): (2.9794, -3.6674, 1.6207),
    (2048, 16384): (3.1943, -3.8221, 1.5322),
}


def _paper_safety(rows, s):
    """The paper's listing: every row but the last becomes p(x / s)."""
    return tuple((a / s, b / s**3, c / s**5) for a, b, c in rows[:-1]) + (rows[-1],)


EXPECTED = {
    # name: (table, safety, precondition, steps)
    "jordan": ((JORDAN_ROW,) * 5, 1.0, "frobenius"),
    "you": (YOU_ROWS, 1.0, "frobenius"),
    "you6": (tuple(tuple(v / 1024 for v in row) for row in YOU6_INT_ROWS), 1.0, "frobenius"),
    "polar_express": (_paper_safety(POLAR_EXPRESS_RAW, 1.01), 1.01, "frobenius"),
    "polar_express5": (POLAR_EXPRESS_SHIPPED, 1.02, "frobenius"),
    "turbo": (YOU_ROWS[1:], 1.0, "aol"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_equals_its_published_source_exactly(name):
    table, safety, precondition = EXPECTED[name]
    sched = PRESETS[name]
    assert sched.table == table  # exact float equality, row order included
    assert sched.safety == safety
    assert sched.precondition == precondition
    assert sched.name == name
    assert resolve_schedule(name) is sched


def test_every_preset_is_covered():
    assert set(PRESETS) == set(EXPECTED)
    assert set(optorth.ns.preset_names()) >= set(EXPECTED) | {"root"}


def test_presets_that_repeat_do_so_by_rule():
    # Jordan and Polar Express repeat their last row (as their sources do); the rest are fixed.
    assert PRESETS["jordan"].extend == "repeat_last"
    assert PRESETS["polar_express"].extend == "repeat_last"
    for name in ("you", "you6", "polar_express5", "turbo"):
        assert PRESETS[name].extend == "fixed", name


@pytest.mark.parametrize("key", sorted(ROOT_PUBLISHED))
def test_root_lookup_per_shape(key):
    m, n = key
    expected = (ROOT_PUBLISHED[key],) * 5
    for shape in ((m, n), (n, m), (3, m, n), (2, 4, n, m)):
        sched = root_schedule(shape)
        assert sched.table == expected, shape
        assert sched.name == f"root_{m}x{n}"
        assert resolve_schedule("root", shape=shape) == sched
    assert ROOT_ROWS[key] == ROOT_PUBLISHED[key]


@pytest.mark.parametrize("shape", [(768, 768), (2048, 4096), (1, 2048), (64, 128)])
def test_root_falls_back_to_jordan(shape):
    sched = root_schedule(shape)
    assert sched.table == (JORDAN_ROW,) * 5
    assert dict(sched.provenance)["source"] == "Jordan (ROOT fallback)"


def test_root_needs_a_shape():
    with pytest.raises(ValueError, match=r"one table per matrix shape; pass shape=\(m, n\)"):
        resolve_schedule("root")


def test_unknown_name_lists_the_presets():
    with pytest.raises(ValueError, match="Known presets: jordan"):
        resolve_schedule("jordon")


# --- step rules: never silently a different number of steps -------------------------------


def _rule(extend, rows=3):
    table = tuple((2.0 + t, -1.0, 0.5) for t in range(rows))
    return Schedule(table=table, name=f"s_{extend}", extend=extend)


def test_repeat_last_truncates_and_repeats():
    s = _rule("repeat_last")
    np.testing.assert_array_equal(s.rows(2), np.asarray(s.table)[:2])
    rows = s.rows(6)
    assert rows.shape == (6, 3)
    np.testing.assert_array_equal(rows[:3], np.asarray(s.table))
    np.testing.assert_array_equal(rows[3:], np.repeat(np.asarray(s.table)[-1:], 3, axis=0))


def test_truncate_allows_fewer_and_refuses_more():
    s = _rule("truncate")
    np.testing.assert_array_equal(s.rows(1), np.asarray(s.table)[:1])
    with pytest.raises(ValueError, match=r"extend='truncate'\) defines at most 3 steps; 4"):
        s.rows(4)


@pytest.mark.parametrize("steps", [2, 4])
def test_fixed_allows_only_its_length(steps):
    s = _rule("fixed")
    assert s.rows(3).shape == (3, 3)
    with pytest.raises(ValueError, match=rf"defines exactly 3 steps; {steps} were requested"):
        s.rows(steps)


@pytest.mark.parametrize("steps", [0, -1, 2.5, 3.0, "3", True])
def test_bad_step_counts_raise(steps):
    with pytest.raises(ValueError, match="positive int"):
        _rule("repeat_last").rows(steps)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("extend", EXTEND_RULES)
def test_rows_has_the_requested_length_or_raises(name, extend):
    sched = dataclasses.replace(PRESETS[name], extend=extend)
    for steps in range(1, 12):
        try:
            rows = sched.rows(steps)
        except ValueError as err:
            assert str(steps) in str(err)
            continue
        assert rows.shape == (steps, 3)
        np.testing.assert_array_equal(rows[: min(steps, sched.steps)],
                                      np.asarray(sched.table)[: min(steps, sched.steps)])


def test_engine_refuses_undefined_step_counts_before_running():
    x = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match="NewtonSchulz: .*defines exactly 5 steps; 6"):
        optorth.newton_schulz(x, optorth.NewtonSchulz("you", steps=6))
    with pytest.raises(ValueError, match="exactly 5 steps; 4 were requested"):
        optorth.NewtonSchulz(np.asarray(YOU_ROWS), steps=4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(table=()), r"Schedule 'bad'.*\(T, 3\) with T >= 1; got shape \(0,\)"),
        (dict(table=((1.0, 2.0),)), r"\(T, 3\) with T >= 1; got shape \(1, 2\)"),
        (dict(table=((1.0, 2.0, 3.0), (1.0, 2.0))), r"\(T, 3\) array of numbers"),
        (dict(table=((1.0, float("nan"), 0.0),)), "non-finite entries .* in rows \\[0\\]"),
        (dict(table=((1.0, 0.0, 0.0),), extend="repeat"), "extend='repeat'"),
        (dict(table=((1.0, 0.0, 0.0),), precondition="svd"), "precondition='svd'"),
        (dict(table=((1.0, 0.0, 0.0),), safety=0.99), "safety must be a finite number >= 1"),
        (dict(table=((1.0, 0.0, 0.0),), safety=float("inf")), "safety must be a finite"),
        (dict(table=((1.0, 0.0, 0.0),), safety="1"), "safety must be a real number"),
    ],
)
def test_invalid_schedules_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Schedule(name="bad", **kwargs)


# --- value semantics -----------------------------------------------------------------------


def _all_schedules():
    return (
        list(PRESETS.values())
        + [root_schedule(k) for k in ROOT_PUBLISHED]
        + [optorth.ns.polar_express_schedule(7), optorth.ns.cans_schedule(6)]
    )


@pytest.mark.parametrize("sched", _all_schedules(), ids=lambda s: s.name)
def test_json_round_trip_is_exact(sched):
    back = Schedule.from_json(sched.to_json())
    assert back == sched
    assert hash(back) == hash(sched)
    assert np.asarray(back.table).tobytes() == np.asarray(sched.table).tobytes()
    assert Schedule.from_dict(sched.to_dict()) == sched


def test_round_trip_keeps_sequence_provenance_hashable():
    sched = Schedule(table=(JORDAN_ROW,), provenance=(("shape", (64, 128)), ("seed", 0)))
    back = Schedule.from_json(sched.to_json())
    assert back == sched and hash(back) == hash(sched)
    assert dict(back.provenance)["shape"] == (64, 128)


def test_from_dict_rejects_unknown_fields():
    data = PRESETS["jordan"].to_dict() | {"stepz": 5}
    with pytest.raises(ValueError, match="Unknown schedule fields"):
        Schedule.from_dict(data)


def test_schedules_are_hashable_values():
    a = Schedule(table=[[1.0, 2.0, 3.0]], name="x", provenance=(("b", 1), ("a", "z")))
    b = Schedule(table=((1, 2, 3),), name="x", provenance=(("a", "z"), ("b", 1)))
    assert a == b and hash(a) == hash(b)
    assert len({a, b, PRESETS["jordan"]}) == 2
    assert {a: 1}[b] == 1
    assert isinstance(a.table[0][0], float)


def test_schedules_are_frozen():
    sched = PRESETS["jordan"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sched.safety = 2.0
    with pytest.raises(TypeError):
        sched.table[0] = (1.0, 0.0, 0.0)


def test_with_table_copies():
    sched = PRESETS["you"]
    new = sched.with_table(np.asarray(sched.table) * 0.5, name="half")
    assert new.name == "half" and new.extend == sched.extend
    assert new.table[0][0] == YOU_ROWS[0][0] * 0.5
    assert PRESETS["you"].table == YOU_ROWS
