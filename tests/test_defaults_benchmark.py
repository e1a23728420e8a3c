"""Tests of the pieces of benchmarks/defaults.py, steps_to_target.py and sweep.py's --focus
that decide what is reported (no training here: the sweep's own tests cover the runs)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import defaults, steps_to_target, sweep
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
