"""Tests of the pieces of the defaults, steps_to_target and fallback_sweep experiments that
decide what is reported (no training here: the sweep's own tests cover the runs)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.experiments import defaults, fallback_sweep, steps_to_target, sweep
from benchmarks.runner import Store, registry
from benchmarks.runner.experiment import steps_to


def test_steps_to_interpolates_linearly_between_evaluations():
    steps, losses = [0, 10, 20, 30], [4.0, 3.0, 2.0, 1.5]
    assert steps_to(2.5, steps, losses) == pytest.approx(15.0)
    assert steps_to(2.0, steps, losses) == pytest.approx(20.0)
    assert steps_to(4.5, steps, losses) == 0.0
    assert steps_to(1.0, steps, losses) is None


def test_steps_to_takes_the_first_crossing_of_a_noisy_curve():
    steps, losses = [0, 10, 20, 30, 40], [4.0, 2.0, 3.0, 1.0, 0.5]
    # brute force on a fine grid of the piecewise-linear curve
    fine = [s / 100 for s in range(0, 4001)]
    curve = [float(np.interp(s, steps, losses)) for s in fine]
    first = next(s for s, v in zip(fine, curve, strict=True) if v <= 2.5)
    assert steps_to(2.5, steps, losses) == pytest.approx(first, abs=0.01)


def test_defaults_table_compares_with_the_best_swept_point():
    runs = {("muon", 0): {"final_val_loss": 1.86}, ("muon", 1): {"final_val_loss": 1.88},
            ("root", 0): {"final_val_loss": 2.00}}
    best = {"muon": sweep.Point(0.04, [1.84, 1.85], []),
            "root": sweep.Point(0.016, [1.90], [])}
    text, rows = defaults.table(["muon", "root", "signum"], runs, best, 0.05)
    assert rows["muon"]["gap"] == pytest.approx(1.87 - 1.845) and rows["muon"]["ok"]
    assert rows["root"]["gap"] == pytest.approx(0.10) and not rows["root"]["ok"]
    assert "signum" not in rows  # no runs: no row
    lines = text.splitlines()
    assert lines[0].startswith("| optimizer | default lr |") and len(lines) == 4
    assert lines[3].endswith("| NO |")
    assert math.isclose(rows["muon"]["lr"], registry.default_learning_rate("muon"))


def test_defaults_runs_record_the_default_lr_in_their_spec():
    spec = defaults.spec(defaults.Grid(), "muon", 1)
    assert spec.lr == registry.default_learning_rate("muon") and spec.seed == 1
    assert spec.option("build") == "defaults" and spec.task == "lm"
    assert spec.config == sweep.Grid().base("lm").config  # the sweep's lm settings
    with pytest.raises(SystemExit, match="unknown optimizers \\['adamw'\\]"):
        defaults.plan(defaults.Grid(optimizers=("adamw",)), None)


def _sweep_store(path, runs):
    store, base = Store(path), sweep.Grid(quick=True).base("lm")
    for n, lr, loss in runs:
        store.add(base.replace(optimizer=n, lr=lr), {"final_val_loss": loss})
    return store


def test_steps_to_target_picks_each_optimizers_best_rate_behind_the_baseline(tmp_path):
    runs = [("adamuon", 0.02, 1.81), ("adamuon", 0.01, 1.812), ("normuon", 0.04, 1.82),
            ("muon", 0.04, 1.84), ("adamw", 0.002, 1.80), ("optax_muon_routed", 0.04, 1.821),
            ("optax_muon_routed", 0.02, 1.827), ("root", 0.016, float("inf"))]
    path = tmp_path / "sweep.jsonl"
    _sweep_store(path, runs)
    grid = steps_to_target.Grid(quick=True, sweep_store=str(path), top=2)
    # AdamW is a baseline, not a candidate; AdaMuon appears once, at its best rate; each
    # candidate also runs with all its defaults
    assert steps_to_target.choose_configs(grid) == [
        ("optax_muon_routed", 0.04), ("adamuon", 0.02), ("normuon", 0.04),
        ("adamuon", "defaults"), ("normuon", "defaults")]
    grid = steps_to_target.Grid(quick=True, sweep_store=str(path), configs=("muon@0.02",),
                                defaults=())
    assert steps_to_target.choose_configs(grid) == [("optax_muon_routed", 0.04), ("muon", 0.02)]
    with pytest.raises(SystemExit, match="unknown optimizers \\['adamw'\\]"):
        steps_to_target.choose_configs(steps_to_target.Grid(
            quick=True, sweep_store=str(path), defaults=("adamw",)))


def test_steps_to_target_keys_default_runs_apart_from_swept_runs():
    grid = steps_to_target.Grid()
    swept = steps_to_target.spec(grid, "muon", 0.02, 1)
    default = steps_to_target.spec(grid, "muon", "defaults", 1)
    assert (swept.optimizer, swept.lr, swept.seed) == ("muon", 0.02, 1)
    assert default.option("build") == "defaults" and default.key != swept.key
    assert dict(swept.config)["eval_every"] == 10
    short = steps_to_target.spec(steps_to_target.Grid(horizon=0.8), "muon", 0.02, 1)
    base = steps_to_target.spec(steps_to_target.Grid(horizon=0.8), "muon", 0.02, 1, False)
    assert dict(short.config)["steps"] == 240 and dict(base.config)["steps"] == 300
    assert steps_to_target.label("muon", "defaults") == (
        f"muon (all defaults, lr {registry.default_learning_rate('muon'):g})")
    with pytest.raises(ValueError, match="horizon must be in"):
        steps_to_target.Grid(horizon=1.5)


def test_fallback_sweep_parses_its_grid_and_tabulates_means_per_fallback():
    assert fallback_sweep.parse([" adafactor_abs@0.003", "adamw@1e-3 ", ""]) == [
        ("adafactor_abs", 0.003), ("adamw", 0.001)]
    assert len(fallback_sweep.parse(fallback_sweep.GRID)) == 7
    with pytest.raises(ValueError, match="unknown fallback kind 'sgd'"):
        fallback_sweep.parse(["sgd@0.1"])
    runs = {("adamw", 0.003, 0): {"final_val_loss": 1.8},
            ("adamw", 0.003, 1): {"final_val_loss": 1.9},
            ("adafactor_abs", 0.003, 0): {"final_val_loss": 1.7}}
    lines = fallback_sweep.table([("adamw", 0.003), ("adafactor_rel", 0.03)], runs).splitlines()
    assert lines[2] == "| adamw | 0.003 | 1.8500 | 1.8000, 1.9000 |" and len(lines) == 3


@pytest.mark.parametrize(("name", "table", "sets"), [
    ("sweep", "sweep_cpu.md", []),
    ("defaults", "defaults_cpu.md", []),
    ("fallback_sweep", "fallback_sweep_cpu.md", []),
    ("steps_to_target", "steps_to_target_cpu.md", []),
    ("steps_to_target", "steps_to_target_h0.8_cpu.md",
     ["horizon=0.8", "top=2"]),
    ("width_transfer", "width_transfer_cpu.md", ["steps=150", "points=5"]),
    ("options_to_target", "options_to_target_cpu.md", []),
    ("options_to_target", "options_to_target_1000_cpu.md",
     ["steps=1000", "eval_every=20",
      "configs=optax_muon_routed,adamuon_0.0192_wd_qk,adamuon_0.0192_cwd_qk"]),
])
def test_report_regenerates_the_committed_table(name, table, sets, tmp_path, monkeypatch):
    """``report`` rebuilds each committed table from the committed records (a committed file
    may add prose around it)."""
    from benchmarks.runner import cli

    results = cli.RESULTS
    monkeypatch.chdir(cli.ROOT)
    (tmp_path / f"{name}.jsonl").write_bytes((results / f"{name}.jsonl").read_bytes())
    argv = ["report", name, "--out", str(tmp_path)] + [a for s in sets for a in ("--set", s)]
    text = cli.main(argv)["report"]
    assert text.strip() in (results / table).read_text()
