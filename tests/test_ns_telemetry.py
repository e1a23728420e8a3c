"""Newton–Schulz telemetry against the float64 NumPy SVD of the orthogonalized updates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optorth
from optorth.blocks import ns_telemetry

pytestmark = pytest.mark.usefixtures("float32_matmuls")


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"wide": jnp.asarray(rng.normal(size=(3, 16, 32)), jnp.float32),  # stacked
            "tall": jnp.asarray(rng.normal(size=(48, 16)), jnp.float32),
            "b": jnp.zeros(16)}


def _rules():
    return [(r"^wide$", optorth.MatrixSpec.stacked())]


def _exact(o):
    """RMS over the leaf's matrices of RMS_i(σ_i² − 1), from the float64 SVD."""
    o = np.asarray(o, np.float64).reshape((-1,) + o.shape[-2:])
    sigma = np.linalg.svd(o, compute_uv=False)
    return float(np.sqrt(np.mean((sigma**2 - 1) ** 2)))


@pytest.mark.parametrize("schedule", ["jordan", "polar_express5"])
def test_estimate_matches_the_svd(schedule):
    ns = optorth.NewtonSchulz(schedule, telemetry=4096)
    tx = optorth.orthogonalize(ns, specs=optorth.matrices.route_specs(_rules()))
    params = _params()
    out, state = jax.jit(tx.update)(params, tx.init(params))
    report = ns_telemetry(state)
    assert report["dtype"] == "float32"
    assert sorted(report["errors"]) == ["tall", "wide"]
    for name in ("tall", "wide"):
        exact = _exact(out[name])
        assert exact > 1e-3  # the tables stop short of exact orthogonality: a real signal
        assert report["errors"][name] == pytest.approx(exact, rel=0.1), name


def test_bfloat16_iteration_reports_its_dtype_and_a_larger_error():
    params = _params(1)
    errors = {}
    for dtype in (None, "bfloat16"):
        tx = optorth.muon(ns=optorth.NewtonSchulz("polar_express5", dtype=dtype, telemetry=64),
                          rules=_rules(), fallback=optax.set_to_zero())
        _, state = tx.update(params, tx.init(params), params)
        report = ns_telemetry(state)
        assert report["dtype"] == (dtype or "float32")
        errors[dtype] = report["errors"]
    assert errors["bfloat16"]["tall"] > errors[None]["tall"]


def test_telemetry_is_off_by_default_and_the_accessor_says_how_to_turn_it_on():
    params = _params()
    tx = optorth.muon(rules=_rules())
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"telemetry=8"):
        ns_telemetry(state)


def test_telemetry_before_the_first_update_is_nan():
    tx = optorth.muon(ns=optorth.NewtonSchulz(telemetry=8), rules=_rules())
    report = ns_telemetry(tx.init(_params()))
    assert all(np.isnan(v) for v in report["errors"].values())


@pytest.mark.parametrize("bad", [-1, True, 2.5, "8"])
def test_bad_telemetry_values_are_refused(bad):
    with pytest.raises(ValueError, match="telemetry must be an int >= 0"):
        optorth.NewtonSchulz(telemetry=bad)


def test_adaptive_scaling_and_telemetry_are_refused_together():
    with pytest.raises(ValueError, match="adaptive"):
        optorth.orthogonalize(optorth.NewtonSchulz(telemetry=8), adaptive=True)
