"""Tests of the pieces of benchmarks/defaults.py, steps_to_target.py, fallback_sweep.py and
sweep.py's --focus that decide what is reported (no training here: the sweep's own tests
cover the runs)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import defaults, fallback_sweep, steps_to_target, sweep
from benchmarks import sweep_report as report


def test_steps_to_interpolates_linearly_between_evaluations():
    steps, losses = [0, 10, 20, 30], [4.0, 3.0, 2.0, 1.5]
    assert steps_to_target.steps_to(2.5, steps, losses) == pytest.approx(15.0)
    assert steps_to_target.steps_to(2.0, steps, losses) == pytest.approx(20.0)
    assert steps_to_target.steps_to(4.5, steps, losses) == 0.0
    assert steps_to_target.steps_to(1.0, steps, losses) is None


def test_steps_to_takes_the_first_crossing_of_a_noisy_curve():
    steps, losses = [0, 10, 20, 30, 40], [4.0, 2.0, 3.0, 1.0, 0.5]
    # brute force on a fine grid of the piecewise-linear curve
    fine = [s / 100 for s in range(0, 4001)]
    curve = [float(np.interp(s, steps, losses)) for s in fine]
    first = next(s for s, v in zip(fine, curve, strict=True) if v <= 2.5)
    assert steps_to_target.steps_to(2.5, steps, losses) == pytest.approx(first, abs=0.01)


@pytest.mark.parametrize(("best", "expected"), [(1, [1, 2, 3]), (4, [3, 4, 5]),
                                                (7, [5, 6, 7]), (5, [4, 5, 6])])
def test_focus_window_is_centred_and_clipped_to_the_recorded_lrs(best, expected):
    assert sweep.focus_window([1, 2, 3, 4, 5, 6, 7], best, 3) == expected
    assert sweep.focus_window([1, 2], 2, 5) == [1, 2]


def test_defaults_table_compares_with_the_best_swept_point():
    runs = {("muon", 0): {"final_val_loss": 1.86}, ("muon", 1): {"final_val_loss": 1.88},
            ("root", 0): {"final_val_loss": 2.00}}
    best = {"muon": report.Point(0.04, [1.84, 1.85], []),
            "root": report.Point(0.016, [1.90], [])}
    text, rows = defaults.table(["muon", "root", "signum"], runs, best, 0.05)
    assert rows["muon"]["gap"] == pytest.approx(1.87 - 1.845) and rows["muon"]["ok"]
    assert rows["root"]["gap"] == pytest.approx(0.10) and not rows["root"]["ok"]
    assert "signum" not in rows  # no runs: no row
    lines = text.splitlines()
    assert lines[0].startswith("| optimizer | default lr |") and len(lines) == 4
    assert lines[3].endswith("| NO |") and math.isclose(rows["muon"]["lr"], 0.02)


def test_steps_to_target_picks_each_optimizers_best_rate_behind_the_baseline(tmp_path):
    task = sweep.make_tasks(["lm"], quick=True, steps=None)["lm"]
    chash = sweep.config_hash(task, sweep.FALLBACK_LR)
    runs = [("adamuon", 0.02, 1.81), ("adamuon", 0.01, 1.812), ("normuon", 0.04, 1.82),
            ("muon", 0.04, 1.84), ("adamw", 0.002, 1.80), ("optax_muon_routed", 0.04, 1.821),
            ("optax_muon_routed", 0.02, 1.827), ("root", 0.016, float("inf"))]
    path = tmp_path / "sweep.jsonl"
    path.write_text("".join(
        json.dumps({"task": "lm", "optimizer": n, "lr": lr, "seed": 0, "centre_lr": lr,
                    "config_hash": chash, "final_val_loss": loss}) + "\n"
        for n, lr, loss in runs))
    parse = steps_to_target._parser().parse_args
    args = parse(["--sweep", str(path), "--top", "2"])
    # AdamW is a baseline, not a candidate; AdaMuon appears once, at its best rate; each
    # candidate also runs with all its defaults
    assert steps_to_target.choose_configs(args, task) == [
        ("optax_muon_routed", 0.04), ("adamuon", 0.02), ("normuon", 0.04),
        ("adamuon", "defaults"), ("normuon", "defaults")]
    args = parse(["--sweep", str(path), "--configs", "muon@0.02", "--defaults", ""])
    assert steps_to_target.choose_configs(args, task) == [
        ("optax_muon_routed", 0.04), ("muon", 0.02)]
    with pytest.raises(SystemExit, match="unknown optimizers \\['adamw'\\]"):
        steps_to_target.choose_configs(parse(["--sweep", str(path), "--defaults", "adamw"]), task)


def test_steps_to_target_keys_default_runs_apart_from_swept_runs():
    swept = {"optimizer": "muon", "lr": 0.02, "seed": 1}
    assert steps_to_target.record_key(swept) == ("muon", 0.02, 1)
    assert steps_to_target.record_key({**swept, "build": "defaults"}) == ("muon", "defaults", 1)
    assert steps_to_target.label("muon", "defaults") == "muon (all defaults, lr 0.02)"


def test_fallback_sweep_parses_its_grid_and_tabulates_means_per_fallback():
    assert fallback_sweep.parse(" adafactor_abs@0.003, adamw@1e-3 ,") == [
        ("adafactor_abs", 0.003), ("adamw", 0.001)]
    assert len(fallback_sweep.parse(fallback_sweep.GRID)) == 7
    with pytest.raises(ValueError, match="unknown fallback kind 'sgd'"):
        fallback_sweep.parse("sgd@0.1")
    runs = {("adamw", 0.003, 0): {"final_val_loss": 1.8},
            ("adamw", 0.003, 1): {"final_val_loss": 1.9},
            ("adafactor_abs", 0.003, 0): {"final_val_loss": 1.7}}
    lines = fallback_sweep.table([("adamw", 0.003), ("adafactor_rel", 0.03)], runs).splitlines()
    assert lines[2] == "| adamw | 0.003 | 1.8500 | 1.8000, 1.9000 |" and len(lines) == 3
