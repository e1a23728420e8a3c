"""Tests of the width-transfer experiment: the smoke grid, resume, --fresh, extension, the
shift estimates on synthetic results with a known answer, and the Muon variants."""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest
from flax import nnx

from benchmarks.experiments import width_transfer as wt
from benchmarks.lm import Config, make_model
from benchmarks.runner import Store, cli, registry
from optorth.norms import SCALE_CONVENTIONS


def _bowl(optimum_log2):
    """A fake ``execute``: loss (log2 lr − optimum(width))² + 1, no training."""

    def execute(spec):
        loss = (math.log2(spec.lr) - optimum_log2(dict(spec.config)["d_model"])) ** 2 + 1.0
        return {"val": loss, "final_val_loss": loss, "seconds": 0.0}

    return execute


def _records(optimum_log2, widths, ks):
    return [{"optimizer": "opt", "width": w, "seed": 0, "lr": 2.0**k,
             "val": (k - optimum_log2(w)) ** 2 + 1.0} for w in widths for k in ks]


@pytest.mark.extensive  # trains
def test_smoke_grid_trains_reports_and_resumes(tmp_path, monkeypatch):
    argv = ["run", "width_transfer", "--smoke", "--out", str(tmp_path)]
    result = cli.main(argv)
    runs = Store(tmp_path / "width_transfer.jsonl").select(experiment="width_transfer")
    assert result["ran"] == len(runs) == 2  # 2 widths x 1 lr (the centre, 0.02)
    assert {(dict(s.config)["d_model"], dict(s.config)["heads"]) for s, _ in runs} == {
        (8, 1), (16, 2)}  # head_dim 8
    assert sorted({s.lr for s, _ in runs}) == pytest.approx([0.02])
    assert all(math.isfinite(r["val"]) and r["eval_steps"][-1] == 4 for _, r in runs)
    text = next(tmp_path.glob("width_transfer_*.md")).read_text()
    assert "## muon_spectral" in text and "log2 shift of the optimal lr" in text

    def refuse(spec):
        raise AssertionError(f"finished run trained again: {spec}")

    monkeypatch.setattr(wt, "execute", refuse)
    assert cli.main(argv)["ran"] == 0  # every run is done: nothing trains

    monkeypatch.setattr(wt, "execute", _bowl(lambda w: 0.0))
    assert cli.main(argv + ["--fresh"])["ran"] == 2  # every run is redone, the new ones win
    runs = Store(tmp_path / "width_transfer.jsonl").select(experiment="width_transfer")
    assert [r["val"] for _, r in runs] == [math.log2(s.lr) ** 2 + 1.0 for s, _ in runs]


def test_shift_on_grid_optima_is_exact():
    # The optimum halves per doubling and sits on the grid: lr* = 2^-9 at width 64.
    records = _records(lambda w: -9 - math.log2(w / 64), (64, 128, 256), range(-14, -5))
    s = wt.summarize(records)["opt"]
    assert [s["best"][w]["lr"] for w in ("64", "128", "256")] == [2.0**-9, 2.0**-10, 2.0**-11]
    assert s["shift_grid"]["slope"] == pytest.approx(-1.0)
    assert s["shift_smooth"]["slope"] == pytest.approx(-1.0)
    assert s["shift_grid"]["successive"] == pytest.approx([-1.0, -1.0])
    assert s["edge_widths"] == []


def test_smooth_shift_is_not_quantised_to_the_grid():
    # Optimum −0.5 octave per doubling, off the grid: 2^-6.8, 2^-7.3, 2^-7.8.
    records = _records(lambda w: -6.8 - 0.5 * math.log2(w / 64), (64, 128, 256),
                       range(-11, -3))
    s = wt.summarize(records)["opt"]
    smooth = [s["best"][w]["smooth_lr"] for w in ("64", "128", "256")]
    assert np.log2(smooth) == pytest.approx([-6.8, -7.3, -7.8])
    assert s["shift_smooth"]["successive"] == pytest.approx([-0.5, -0.5])
    assert s["shift_grid"]["successive"] == pytest.approx([0.0, -1.0])  # grid: -7, -7, -8


def test_transfer_gives_zero_shift_and_divergence_counts_as_worst():
    records = _records(lambda w: -5.25, (64, 128), range(-8, -2))
    records.append({"optimizer": "opt", "width": 128, "seed": 0, "lr": 2.0**-2,
                    "val": math.inf})
    s = wt.summarize(records)["opt"]
    assert s["shift_smooth"]["slope"] == pytest.approx(0.0)
    assert s["best"]["128"]["lr"] == 2.0**-5 and s["losses"]["128"]["0.25"] == math.inf
    assert "div" in wt.markdown(wt.summarize(records), "")


def test_edge_optimum_is_flagged_and_extension_goes_past_it():
    records = _records(lambda w: 0.0, (64,), range(-6, -1))  # optimum 2^0, grid ends at 2^-2
    s = wt.summarize(records)["opt"]
    assert s["edge_widths"] == [64] and "--extend" in wt.markdown({"opt": s}, "")
    assert wt.extension_points(records, ["opt"], [64], [0, 1]) == [
        ("opt", 64, 0, 0.5), ("opt", 64, 1, 0.5)]
    low = _records(lambda w: -9.0, (64,), range(-6, -1))  # below the bottom edge
    assert wt.extension_points(low, ["opt"], [64], [0]) == [("opt", 64, 0, 2.0**-7)]


def test_extend_runs_until_every_optimum_is_interior(tmp_path, monkeypatch):
    # adamw's grid (3 points) is 1e-3, 2e-3, 4e-3; put the optimum 2 and 3 octaves up.
    # Interior needs one point past it: 3 extensions at width 16, 4 at width 32.
    optimum = {16: math.log2(16e-3), 32: math.log2(32e-3)}
    monkeypatch.setattr(wt, "execute", _bowl(optimum.get))
    argv = ["run", "width_transfer", "--smoke", "--out", str(tmp_path), "--set",
            "optimizers=adamw", "--set", "widths=16,32", "--set", "points=3"]
    cli.main(argv + ["--set", "extend=2"])
    grid = dataclasses.replace(wt.Grid.smoke(), optimizers=("adamw",), widths=(16, 32),
                               points=3)
    store = Store(tmp_path / "width_transfer.jsonl")
    assert wt.summarize(wt.records(grid, store))["adamw"]["edge_widths"] == [16, 32]  # too few
    cli.main(argv + ["--set", "extend=4"])
    store = Store(tmp_path / "width_transfer.jsonl")
    s = wt.summarize(wt.records(grid, store))["adamw"]
    assert s["edge_widths"] == []
    assert [s["best"][w]["lr"] for w in ("16", "32")] == pytest.approx([16e-3, 32e-3])
    assert s["shift_grid"]["slope"] == pytest.approx(1.0)
    assert len(store.records) == 6 + 3 + 4  # the rerun resumed from 6 + 4


def test_bad_widths_and_optimizers_are_refused(tmp_path):
    with pytest.raises(ValueError, match="width 24 is not a multiple of head_dim=16"):
        cli.main(["run", "width_transfer", "--smoke", "--set", "widths=24", "--set",
                  "head_dim=16", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="expected field=value with a field of"):
        cli.main(["run", "width_transfer", "--smoke", "--set", "nope=1", "--out",
                  str(tmp_path)])
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        registry.build("sgd", Config.quick(), 1e-3)


def test_muon_variants_cover_every_convention_with_its_factor():
    labels = {n.removeprefix("muon_") for n in wt.Grid().optimizers if n != "adamw"}
    assert labels == set(SCALE_CONVENTIONS)
    cfg = Config.quick(d_model=16, heads=2, steps=10, warmup_frac=0.0)  # lr = peak at step 0
    full = nnx.state(make_model(cfg, 50), nnx.Param).to_pure_dict()
    params = {"blocks": {0: {"mlp": full["blocks"][0]["mlp"]}}}  # routed by the model's paths
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(1), p.shape), params)

    def mlp_update(name):
        tx = registry.build(name, cfg, 0.01)
        updates, _ = tx.update(grads, tx.init(params), params)
        mlp = updates["blocks"][0]["mlp"]
        return np.asarray(mlp["fc"]["kernel"]), np.asarray(mlp["proj"]["kernel"])

    fc0, proj0 = mlp_update("muon_unscaled")  # fc is 16 x 64, proj 64 x 16
    expected = {"muon_keller": (2.0, 1.0), "muon_spectral": (2.0, 0.5),
                "muon_consistent_rms": (0.2 * 8, 0.2 * 8)}
    for name, (fc_factor, proj_factor) in expected.items():
        fc, proj = mlp_update(name)
        np.testing.assert_allclose(fc, fc_factor * fc0, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(proj, proj_factor * proj0, rtol=1e-5, atol=1e-8)
