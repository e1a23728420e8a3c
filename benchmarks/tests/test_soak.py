"""The soak experiment's seeds and Newton–Schulz method override: its plan, the optimizers it
builds, its report, and one tiny run through ``python -m benchmarks run soak``."""

from __future__ import annotations

import math

import pytest

from benchmarks.experiments import soak
from benchmarks.runner import Store, cli


def test_plan_runs_each_seed_with_each_method_side_by_side():
    grid = soak.Grid(optimizers=("muon", "adafactor"), seeds=(0, 1), method=("auto", "standard"))
    assert grid.runs() == [("muon", 0, "auto"), ("muon", 0, "standard"), ("muon", 1, "auto"),
                           ("muon", 1, "standard"), ("adafactor", 0, ""), ("adafactor", 1, "")]
    specs = soak.plan(grid, None)
    assert [(s.optimizer, s.seed, s.option("method")) for s in specs] == [
        ("muon", 0, "auto"), ("muon", 0, "standard"), ("muon", 1, "auto"),
        ("muon", 1, "standard"), ("adafactor", 0, None), ("adafactor", 1, None)]
    assert len({s.key for s in specs}) == len(specs)


def test_default_grid_keeps_its_runs_keys():
    """Without seeds or a method a run is keyed as before the two fields existed."""
    default = soak.spec(soak.Grid(batch_size=8), "muon")
    assert default.seed == 0 and "method" not in dict(default.options)
    assert soak.plan(soak.Grid(batch_size=8, optimizers=("muon",)), None) == [default]


@pytest.mark.parametrize("name, schedule, learns", [("muon", "jordan", False),
                                                    ("turbo_muon", "turbo", False),
                                                    ("muon_online", "jordan", True)])
def test_build_sets_the_method_on_the_optimizers_own_newton_schulz(name, schedule, learns):
    spec = soak.spec(soak.Grid(quick=True, steps=4), name, 0, "standard")
    ns = soak._ns(spec)
    assert (ns.method, ns.schedule, ns.learn is not None) == ("standard", schedule, learns)
    assert soak._ns(soak.spec(soak.Grid(quick=True, steps=4), "muon")) is None


def test_grid_refuses_an_unknown_method_and_negative_seeds():
    with pytest.raises(ValueError, match="method 'fast' is not one of auto, standard, gram"):
        soak.Grid(method=("fast",))
    with pytest.raises(ValueError, match="seeds must be non-negative"):
        soak.Grid(seeds=(-1,))
    grid = cli.make_grid(soak, False, ["seeds=0,1,2", "method=standard"])
    assert (grid.seeds, grid.method) == ((0, 1, 2), ("standard",))


def _record(train: float, val: float) -> dict:
    return {"steps_run": 4, "nonfinite": None, "final_train": train, "val_losses": [4.0, val],
            "ms_per_step": 10.0}


def test_report_has_a_row_per_seed_and_the_mean_and_sample_sd(tmp_path):
    grid = soak.Grid(optimizers=("muon",), seeds=(0, 1), method=("auto", "standard"))
    store = Store(tmp_path / "soak.jsonl")
    vals = {("auto", 0): 1.19, ("auto", 1): 1.21, ("standard", 0): 1.20, ("standard", 1): 1.20}
    for (method, seed), val in vals.items():
        store.add(soak.spec(grid, "muon", seed, method), _record(val - 0.05, val))
    text = soak.report(grid, store)
    rows = [line.split() for line in text.splitlines() if line.startswith("muon")]
    assert [r[:3] for r in rows[:4]] == [["muon", "auto", "0"], ["muon", "standard", "0"],
                                        ["muon", "auto", "1"], ["muon", "standard", "1"]]
    # auto: mean 1.2, sample sd sqrt(2 * 0.01**2 / 1) = 0.0141
    assert rows[4] == ["muon", "auto", "2", "1.1500", "±", "0.0141", "1.2000", "±", "0.0141"]
    assert rows[5] == ["muon", "standard", "2", "1.1500", "±", "0.0000", "1.2000", "±", "0.0000"]
    # paired, auto − standard: seed 0 −0.01, seed 1 +0.01 (mean 0, sample sd 0.0141)
    assert rows[6:] == [["muon", "0", "-0.0100", "-0.0100"], ["muon", "1", "+0.0100", "+0.0100"],
                        ["muon", "mean", "0.0000", "±", "0.0141", "0.0000", "±", "0.0141"]]


@pytest.mark.extensive  # trains two tiny runs (two compiles)
def test_seeds_and_method_through_the_runner(tmp_path):
    argv = ["run", "soak", "--smoke", "--out", str(tmp_path), "--set", "optimizers=muon",
            "--set", "seeds=0,1", "--set", "method=standard"]
    assert cli.main(argv)["ran"] == 2
    records = Store(tmp_path / "soak.jsonl").select(experiment="soak")
    assert sorted((s.seed, s.option("method")) for s, _ in records) == [
        (0, "standard"), (1, "standard")]
    assert all(r["finite"] and math.isfinite(r["final_val_loss"]) for _, r in records)
    losses = [r["final_train"] for _, r in records]
    assert losses[0] != losses[1]  # another seed: other weights and batches
    assert cli.main(argv)["ran"] == 0
