"""The options_to_target experiment: its targets (from the steps_to_target records in the main
job's setting, from its own baseline runs in a longer one) and its table."""

import dataclasses

from benchmarks.experiments import options_to_target as ott
from benchmarks.runner import Store


def _run(losses):
    return {"final_val_loss": losses[-1], "eval_steps": [0, 500, 1000][: len(losses)],
            "val_losses": losses}


def test_longer_setting_targets_are_its_own_baseline_final_losses(tmp_path):
    grid = ott.Grid(steps=1000, eval_every=20, seeds=2)
    store = Store(tmp_path / "o.jsonl")
    store.add(ott.spec(grid, ott.BASELINE, 0), _run([4.0, 2.0, 1.8]))
    assert ott.targets(grid, store) is None  # seed 1 missing
    assert "No optax_muon_routed record" in ott.report(grid, store)
    store.add(ott.spec(grid, ott.BASELINE, 1), _run([4.0, 2.1, 1.9]))
    assert ott.targets(grid, store) == [1.8, 1.9]
    plan = ott.plan(dataclasses.replace(grid, configs=("adamuon_0.0192_cwd",)), store)
    assert [(s.optimizer, s.seed) for s in plan] == [
        (ott.BASELINE, 0), (ott.BASELINE, 1), ("adamuon_0.0192_cwd", 0),
        ("adamuon_0.0192_cwd", 1)]
    assert ott.table_name(grid) == "options_to_target_1000"
    one = ott.plan(dataclasses.replace(grid, configs=("adamuon_0.0192_cwd",), only_seed=1), store)
    assert [(s.optimizer, s.seed) for s in one] == [(ott.BASELINE, 1), ("adamuon_0.0192_cwd", 1)]


def test_main_setting_targets_come_from_the_steps_to_target_records():
    grid = ott.Grid()
    assert not grid.longer and ott.table_name(grid) == "options_to_target"
    assert ott.targets(grid, None) == [1.8227769136428833, 1.8195292949676514]


def test_table_reports_the_fraction_of_the_run_to_the_target():
    runs = {(ott.BASELINE, s): _run([4.0, 2.0, 1.8]) for s in (0, 1)}
    # Seed 0 reaches 1.8 halfway between 500 (2.0) and 1000 (1.6): step 750; seed 1 at 500.
    runs[("adamuon_0.0192_cwd", 0)] = _run([4.0, 2.0, 1.6])
    runs[("adamuon_0.0192_cwd", 1)] = _run([4.0, 1.8, 1.7])
    text = ott.table([ott.BASELINE, "adamuon_0.0192_cwd"], runs, [1.8, 1.8], 1000)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()}
    assert "| 1000, 1000 | 1.000 |" in rows[ott.BASELINE]
    assert "| 750, 500 | 0.625 |" in rows["adamuon_0.0192_cwd"]


def test_the_baseline_is_a_configuration_built_as_the_sweep_builds_it():
    assert ott.BASELINE in ott.CONFIGS and ott.CONFIGS[ott.BASELINE][1] is False
    assert ott.spec(ott.Grid(), "adamuon_0.0192_qk", 0).option("tau") == 10.0
    assert ott.spec(ott.Grid(), "adamuon_0.0192_wd", 0).option("tau") is None
