"""The ready optimizers built as presets update exactly as the hand-written functions did.

Every routed ready optimizer is a preset of one parameter catalogue and one builder per
family. ``data/preset_updates.json`` was recorded from the hand-written functions (one
signature and one docstring each, before they became presets): the third update of a 4×6
hidden kernel and a bias (float32, default fallback) and the leaves of the state, the layout a
checkpoint holds. The presets must reproduce both.
"""

import inspect
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

import optorth
from optorth.matrices._paths import flatten_with_paths

CASES = {
    "muon": lambda: optorth.muon(),
    "muon_args": lambda: optorth.muon(
        0.05, 0.9, nesterov=False, bias_correction=True, weight_decay=0.1, scale="consistent_rms"),
    "root": lambda: optorth.root(),
    "root_args": lambda: optorth.root(0.05, 0.9, nesterov=False, quantile=0.5, ns="jordan"),
    "normuon": lambda: optorth.normuon(),
    "normuon_args": lambda: optorth.normuon(
        0.05, 0.9, 0.8, eps=1e-6, nesterov=False, weight_decay=0.1),
    "adamuon": lambda: optorth.adamuon(),
    "adamuon_args": lambda: optorth.adamuon(0.05, 0.9, 0.99, eps=1e-6, rms=0.3, nesterov=False),
    "factored_muon": lambda: optorth.factored_muon(),
    "factored_muon_args": lambda: optorth.factored_muon(
        0.05, 0.9, 0.8, eps=1e-20, scale="spectral"),
    "auon": lambda: optorth.auon(),
    "auon_args": lambda: optorth.auon(0.1, 0.9, nesterov=False, weight_decay=0.1),
    "hybrid_auon": lambda: optorth.hybrid_auon(),
    "normalized_sgdm": lambda: optorth.normalized_sgdm(),
    "normalized_sgdm_args": lambda: optorth.normalized_sgdm(0.2, 0.5, nesterov=True),
    "signum": lambda: optorth.signum(),
    "trust_region": lambda: optorth.trust_region(),
    "trust_region_args": lambda: optorth.trust_region(
        0.05, norm="frobenius", beta=0.8, warm_start=False, adaptive=True, weight_decay=0.1),
    "turbo_muon": lambda: optorth.turbo_muon(),
    "turbo_muon_args": lambda: optorth.turbo_muon(0.05, 0.9, nesterov=False, bias_correction=True),
}

RECORDED = json.loads((pathlib.Path(__file__).parent / "data" / "preset_updates.json")
                      .read_text(encoding="utf-8"))


def _params():
    kernel = np.cos(np.arange(24.0)).reshape(4, 6) / 4
    return {"hidden": {"kernel": jnp.asarray(kernel, jnp.float32)},
            "bias": jnp.asarray(np.linspace(-0.5, 0.5, 6), jnp.float32)}


def _grads(step):
    kernel = np.sin(np.arange(24.0) * (step + 1.3)).reshape(4, 6)
    return {"hidden": {"kernel": jnp.asarray(kernel, jnp.float32)},
            "bias": jnp.asarray(np.cos(np.arange(6.0) * (step + 0.7)), jnp.float32)}


def test_every_case_was_recorded():
    assert sorted(CASES) == sorted(RECORDED["cases"])


@pytest.mark.parametrize("case", [
    pytest.param(name, marks=pytest.mark.slow) if name.endswith("_args") else name
    for name in sorted(CASES)])
def test_preset_updates_match_the_hand_written_functions(case):
    tx, params = CASES[case](), _params()
    state = tx.init(params)
    for step in range(3):
        updates, state = tx.update(_grads(step), state, params)
    recorded = RECORDED["cases"][case]
    np.testing.assert_allclose(updates["hidden"]["kernel"],
                               np.reshape(recorded["kernel"], (4, 6)), rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(updates["bias"], recorded["bias"], rtol=2e-6, atol=1e-9)
    paths = [path for path, _ in flatten_with_paths(state)[0]]
    assert paths == [RECORDED["prefix"] + leaf for leaf in recorded["state"]]


def test_presets_show_their_own_signature_and_refuse_unknown_arguments():
    defaults = {name: inspect.signature(getattr(optorth, name)).parameters
                for name in ("trust_region", "signum", "auon", "muon", "turbo_muon")}
    assert defaults["trust_region"]["warm_start"].default is True
    assert defaults["auon"]["warm_start"].default is False
    assert defaults["signum"]["learning_rate"].default == 2.5e-4
    assert defaults["turbo_muon"]["ns"].default == optorth.NewtonSchulz("turbo")
    assert defaults["muon"]["ns"].default == optorth.NewtonSchulz()
    assert optorth.auon.__module__ == "optorth.optimizers._norm_based"
    assert "AuON" in optorth.auon.__doc__.splitlines()[0]
    with pytest.raises(TypeError, match=r"optorth.signum: got an unexpected keyword argument"):
        optorth.signum(momentum=0.9)
    with pytest.raises(TypeError, match=r"optorth.muon: too many positional arguments"):
        optorth.muon(0.02, 0.95, True)
