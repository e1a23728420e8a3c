"""The longer setting of benchmarks/options_to_target.py: targets from its own baseline runs."""

import pathlib

import pytest

from benchmarks import options_to_target as ott


def _run(name, seed, losses):
    return {"optimizer": name, "seed": seed, "final_val_loss": losses[-1],
            "eval_steps": [0, 500, 1000][: len(losses)], "val_losses": losses}


def test_own_targets_are_the_baseline_final_losses_per_seed():
    runs = {(ott.BASELINE, 0): _run(ott.BASELINE, 0, [4.0, 2.0, 1.8]),
            (ott.BASELINE, 1): _run(ott.BASELINE, 1, [4.0, 2.1, 1.9])}
    assert ott.own_targets(runs, 2, pathlib.Path("runs.jsonl")) == [1.8, 1.9]
    with pytest.raises(SystemExit, match=r"no optax_muon_routed run of seeds \[1\]"):
        ott.own_targets({(ott.BASELINE, 0): runs[(ott.BASELINE, 0)]}, 2,
                        pathlib.Path("runs.jsonl"))


def test_table_reports_the_fraction_of_the_run_to_the_target():
    runs = {(ott.BASELINE, s): _run(ott.BASELINE, s, [4.0, 2.0, 1.8]) for s in (0, 1)}
    # Seed 0 reaches 1.8 halfway between 500 (2.0) and 1000 (1.6): step 750; seed 1 at 500.
    runs[("adamuon_0.0192_cwd", 0)] = _run("adamuon_0.0192_cwd", 0, [4.0, 2.0, 1.6])
    runs[("adamuon_0.0192_cwd", 1)] = _run("adamuon_0.0192_cwd", 1, [4.0, 1.8, 1.7])
    text = ott.table([ott.BASELINE, "adamuon_0.0192_cwd"], runs, [1.8, 1.8], 1000)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()}
    assert "| 1000, 1000 | 1.000 |" in rows[ott.BASELINE]
    assert "| 750, 500 | 0.625 |" in rows["adamuon_0.0192_cwd"]


def test_the_baseline_is_a_configuration_built_as_the_sweep_builds_it():
    assert ott.BASELINE in ott.CONFIGS and ott.CONFIGS[ott.BASELINE][1] is False
