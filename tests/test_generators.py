"""Generated schedules: Polar Express reproduces the published tables; CANS is minimax optimal."""

import dataclasses

import numpy as np
import pytest

import optorth
from optorth.ns._generators import PAPER_CUSHION, minimax_cubic, minimax_quintic
from optorth.ns._presets import PRESETS, resolve_schedule

# Published tables (KellerJordan/Muon, Jiacheng You, arXiv 2505.16932, arXiv 2511.20626),
# transcribed independently of optorth/ns/_presets.py.
POLAR_EXPRESS_RAW = np.array([
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
])
POLAR_EXPRESS_SHIPPED = np.array([
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
])


def test_reproduces_published_raw_table():
    """The paper's settings: ℓ = 1e-3, cushion 0.02407327424182761, no safety, 8 steps."""
    sched = optorth.ns.polar_express_schedule(8, sigma_min=1e-3, safety=1.0, cushion=PAPER_CUSHION)
    np.testing.assert_allclose(np.asarray(sched.table), POLAR_EXPRESS_RAW, rtol=0, atol=1e-9)
    assert sched.safety == 1.0


def test_reproduces_shipped_speedrun_table():
    """The 5-row table of the GPT speedrun codebases: cushion 0.02, safety 1.02 fed back
    into ℓ (the Polar Express repository's ``safety_factor_eps``), last row unscaled."""
    sched = optorth.ns.polar_express_schedule(5, safety=1.02, cushion=0.02)
    np.testing.assert_allclose(np.asarray(sched.table), POLAR_EXPRESS_SHIPPED, rtol=0, atol=1e-12)
    assert sched.safety == 1.02 == PRESETS["polar_express5"].safety


def test_paper_preset_is_the_raw_table_divided_afterwards():
    raw = np.asarray(optorth.ns.polar_express_schedule(8, safety=1.0).table)
    s = np.array([1.01, 1.01**3, 1.01**5])
    expected = np.concatenate([raw[:-1] / s, raw[-1:]])
    np.testing.assert_allclose(np.asarray(PRESETS["polar_express"].table), expected, atol=1e-9)
    # Feeding the safety back into ℓ (the generator's rule) gives a different table.
    fed_back = np.asarray(optorth.ns.polar_express_schedule(8, safety=1.01).table)
    assert np.abs(fed_back - expected).max() > 1e-3


def test_shorter_schedules_are_prefixes():
    long = optorth.ns.polar_express_schedule(8, safety=1.0)
    assert optorth.ns.polar_express_schedule(5, safety=1.0).table == long.table[:5]
    with_safety = optorth.ns.polar_express_schedule(8)
    # with safety only the last row differs (it is left unscaled)
    assert optorth.ns.polar_express_schedule(5).table[:4] == with_safety.table[:4]
    np.testing.assert_array_equal(with_safety.rows(5), np.asarray(with_safety.table[:5]))
    with pytest.raises(ValueError, match="at most 8 steps"):
        with_safety.rows(9)


# --- optimality, checked against brute force ----------------------------------------------


def _lp_minimax(lo, hi, powers, n=6001):
    """Brute force: min_t s.t. |1 − Σ_k c_k x^k| ≤ t on a grid (a linear program)."""
    from scipy.optimize import linprog

    x = np.unique(np.concatenate([np.geomspace(lo, hi, n), np.linspace(lo, hi, n)]))
    basis = np.stack([x**k for k in powers], axis=1)
    ones = np.ones((x.size, 1))
    a_ub = np.concatenate([np.hstack([basis, -ones]), np.hstack([-basis, -ones])])
    b_ub = np.concatenate([np.ones(x.size), -np.ones(x.size)])
    cost = np.zeros(len(powers) + 1)
    cost[-1] = 1.0
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=[(None, None)] * len(powers) + [(0, None)],
                  method="highs")
    assert res.status == 0, res.message
    return res.x[:-1], res.x[-1]


def _sup_error(coeffs, powers, lo, hi):
    x = np.linspace(lo, hi, 2_000_001)
    return np.abs(1 - sum(c * x**k for c, k in zip(coeffs, powers, strict=True))).max()


@pytest.mark.parametrize("interval", [(1e-3, 1.0), (0.05, 1.0), (0.3, 1.7), (0.9, 1.1)])
def test_quintic_remez_is_minimax(interval):
    lo, hi = interval
    coeffs = np.asarray(minimax_quintic(lo, hi))
    lp_coeffs, lp_err = _lp_minimax(lo, hi, (1, 3, 5))
    err = _sup_error(coeffs, (1, 3, 5), lo, hi)
    assert lp_err <= err + 1e-9  # the grid LP is a relaxation
    assert err == pytest.approx(lp_err, rel=1e-5, abs=1e-9)
    np.testing.assert_allclose(coeffs, lp_coeffs, rtol=1e-3, atol=1e-6 * np.abs(coeffs).max())
    # equioscillation at lo, the two critical points and hi
    a, b, c = coeffs
    y = np.roots([5 * c, 3 * b, a])
    q, r = np.sqrt(np.sort(y.real))
    p = lambda x: a * x + b * x**3 + c * x**5  # noqa: E731
    e = 1 - p(lo)
    np.testing.assert_allclose([p(lo), p(q), p(r), p(hi)], [1 - e, 1 + e, 1 - e, 1 + e],
                               atol=1e-10)


@pytest.mark.parametrize("interval", [(1e-3, 1.0), (0.05, 1.0), (0.3, 1.7), (0.999, 1.001)])
def test_cans_cubic_is_minimax(interval):
    lo, hi = interval
    alpha, beta, eps = minimax_cubic(lo, hi)
    # Polar Express's independent form: β·p_NS(αx) with p_NS(x) = 3x/2 − x³/2
    al = np.sqrt(3 / (hi**2 + lo * hi + lo**2))
    be = 4 / (2 + lo * hi * (lo + hi) * al**3)
    np.testing.assert_allclose([alpha, beta, eps], [be * 1.5 * al, -be * 0.5 * al**3, be - 1],
                               rtol=1e-12, atol=1e-15)
    lp_coeffs, lp_err = _lp_minimax(lo, hi, (1, 3))
    assert _sup_error((alpha, beta), (1, 3), lo, hi) == pytest.approx(eps, rel=1e-9, abs=1e-15)
    assert lp_err <= eps + 1e-9 and eps == pytest.approx(lp_err, rel=1e-5, abs=1e-9)
    np.testing.assert_allclose([alpha, beta], lp_coeffs, rtol=1e-3)


@pytest.mark.parametrize("steps", [1, 3, 5, 8])
@pytest.mark.parametrize("cushion", [0.0, PAPER_CUSHION])
def test_greedy_composition_equioscillates(steps, cushion):
    """Without safety the composed map's image of [ℓ, 1] is [ℓ_T, 2 − ℓ_T] (Polar Express §4)."""
    sched = optorth.ns.polar_express_schedule(steps, safety=1.0, cushion=cushion)
    report = optorth.validate_schedule(sched)
    lo, hi = report.band
    assert lo + hi == pytest.approx(2.0, abs=1e-9)
    assert report.ok


@pytest.mark.parametrize("steps", [1, 3, 6, 10])
def test_cans_composition_equioscillates(steps):
    report = optorth.validate_schedule(optorth.ns.cans_schedule(steps))
    assert sum(report.band) == pytest.approx(2.0, abs=1e-12) and report.ok


def test_polar_express_beats_every_five_step_preset():
    best = optorth.validate_schedule(optorth.ns.polar_express_schedule(5, safety=1.0, cushion=0.0))
    for name in ("jordan", "you", "polar_express5"):
        other = optorth.validate_schedule(name, steps=5)
        assert best.max_error < other.max_error, name


@pytest.mark.parametrize("safety", [1.0, 1.01, 1.05])
@pytest.mark.parametrize("sigma_min", [1e-4, 1e-2])
def test_generated_schedules_validate(safety, sigma_min):
    for steps in (1, 4, 9):
        sched = optorth.ns.polar_express_schedule(steps, sigma_min=sigma_min, safety=safety)
        assert optorth.validate_schedule(sched, sigma_min=sigma_min).ok, (steps, sched)
        assert optorth.validate_schedule(optorth.ns.cans_schedule(steps, sigma_min=sigma_min),
                                         sigma_min=sigma_min).ok


def test_repeating_an_unconverged_row_is_why_generators_truncate():
    one = optorth.ns.polar_express_schedule(1)
    assert one.extend == "truncate"
    assert not optorth.validate_schedule(dataclasses.replace(one, extend="repeat_last")).ok


# --- interface ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "polar_express_schedule: steps must be a positive int; got 0"),
        (dict(steps=2.0), "positive int"),
        (dict(steps=True), "positive int"),
        (dict(steps=3, sigma_min=0.0), "sigma_min must be a finite number > 0; got 0.0"),
        (dict(steps=3, sigma_min=1.0), "0 < sigma_min < sigma_max"),
        (dict(steps=3, sigma_min=float("nan")), "sigma_min must be a finite number > 0"),
        (dict(steps=3, sigma_max=float("inf")), "sigma_max must be a finite number > 0"),
        (dict(steps=3, sigma_min="1e-3"), "sigma_min must be a real number"),
        (dict(steps=3, safety=0.9), "safety must be a finite number >= 1 .*; got 0.9"),
        (dict(steps=3, safety=float("nan")), "safety must be a finite number > 0"),
        (dict(steps=3, cushion=1.0), "cushion must lie in \\[0, 1\\)"),
        (dict(steps=3, cushion=-0.1), "cushion must be a finite number >= 0"),
    ],
)
def test_polar_express_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optorth.ns.polar_express_schedule(**kwargs)


def test_cans_rejects_bad_arguments():
    with pytest.raises(ValueError, match="positive int"):
        optorth.ns.cans_schedule(-1)
    with pytest.raises(ValueError, match="sigma_min"):
        optorth.ns.cans_schedule(3, sigma_min=2.0)


def test_cans_rows_are_cubic_and_tend_to_newton_schulz():
    table = np.asarray(optorth.ns.cans_schedule(12).table)
    assert np.all(table[:, 2] == 0.0)
    np.testing.assert_allclose(table[-1], [1.5, -0.5, 0.0], atol=1e-12)


def test_cans_is_a_generator_not_a_preset():
    assert "cans" not in optorth.ns.preset_names()
    with pytest.raises(ValueError, match=r"optorth.ns.cans_schedule\(steps\)"):
        resolve_schedule("cans")
    with pytest.raises(ValueError, match="cans_schedule"):
        optorth.newton_schulz(np.ones((4, 8), np.float32), "cans")


@pytest.mark.parametrize("make", [lambda: optorth.ns.cans_schedule(8),
                                  lambda: optorth.ns.polar_express_schedule(6)],
                         ids=["cans8", "polar_express6"])
def test_engine_applies_the_scalar_map(make):
    """Ground truth: output singular values are φ(σ_i / (‖X‖_F·safety)) (float64 NumPy)."""
    sched = make()
    rng = np.random.default_rng(0)
    m, n = 16, 32
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((n, m)))
    sigma = np.geomspace(1.0, 1e-2, m)
    x = (u * sigma) @ v.T
    out = np.asarray(optorth.newton_schulz(x.astype(np.float32), sched), dtype=np.float64)
    y = sigma / (np.linalg.norm(x) * sched.safety)
    for a, b, c in sched.rows():
        y = a * y + b * y**3 + c * y**5
    got = np.linalg.svd(out, compute_uv=False)
    np.testing.assert_allclose(np.sort(got), np.sort(y), atol=2e-5)
