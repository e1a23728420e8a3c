"""Tests of the learning-rate sweep (``python -m benchmarks run sweep``) and its CNN task:
the smoke grid end to end through the runner's command line, resuming, edge detection."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from flax import nnx

from benchmarks import cnn_task
from benchmarks.experiments import sweep
from benchmarks.runner import History, RunSpec, Store, cli, outcome
from benchmarks.runner.experiment import lr_grid


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return out, cli.main(["run", "sweep", "--smoke", "--out", str(out)])


@pytest.mark.extensive  # 4 runs, mostly compilation: ~35 s at load 3 on 2 cores
def test_smoke_sweep_stores_one_record_per_run_and_a_table(first_run):
    out, result = first_run
    assert result["ran"] == 4  # 2 optimizers x 2 lrs x 1 seed
    store = Store(out / "sweep.jsonl")
    assert len((out / "sweep.jsonl").read_text().splitlines()) == len(store.records) == 4
    runs = store.select(experiment="sweep")
    assert {(s.optimizer, s.lr) for s, _ in runs} == {
        ("muon", 0.02), ("muon", 0.04), ("adamw", 0.002), ("adamw", 0.004)}
    for spec, r in runs:
        assert spec.task == "cnn" and spec.seed == 0 and r["finite"]
        assert dict(spec.config)["steps"] == 12 and r["eval_steps"][-1] == 12
        assert math.isfinite(r["final_val_loss"]) and r["best_val_loss"] <= r["final_val_loss"]
        assert 0.0 <= r["final_val_accuracy"] <= 1.0 and r["seconds"] > 0
    lines = [ln for ln in result["report"].splitlines() if ln.startswith("|")]
    assert lines[0] == ("| optimizer | centre lr | best lr | loss at best | acc at best "
                        "| ×1 | ×2 | edge |")
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| muon", "| adamw"]
    for line in lines[2:]:
        assert line.count("|") == 9 and line.count("**") == 2  # the best point in bold
        assert line.endswith(("| edge (low) |", "| edge (high) |"))  # 2 points: always
    assert next(out.glob("sweep_*.md")).read_text().strip() == result["report"].strip()
    summaries = sweep.summarize(runs)
    losses = {p.lr: p.mean for p in summaries["muon"].points}
    assert summaries["muon"].best.lr == min(losses, key=losses.get)


@pytest.mark.extensive  # shares the 4 runs above
def test_rerun_resumes_and_runs_nothing_new(first_run):
    out, first = first_run
    again = cli.main(["run", "sweep", "--smoke", "--out", str(out)])
    assert again["ran"] == 0 and again["report"] == first["report"]
    assert len((out / "sweep.jsonl").read_text().splitlines()) == 4
    # Other settings (here: steps) are other specs: nothing is reused.
    grid = dataclasses.replace(sweep.Grid.smoke(), steps=13)
    store = Store(out / "sweep.jsonl")
    assert len([s for s in sweep.plan(grid, store) if store.get(s) is None]) == 4


def _runs(records):
    """``(spec, result)`` pairs from ``(optimizer, lr, seed, loss)``."""
    base = sweep.Grid.smoke().base("cnn")
    return [(base.replace(optimizer=n, lr=lr, seed=seed), {"final_val_loss": loss})
            for n, lr, seed, loss in records]


def test_edges_are_flagged_and_extended_on_synthetic_results(monkeypatch, tmp_path):
    from benchmarks.runner import registry

    for name in ("up", "down", "mid", "dead"):
        monkeypatch.setitem(registry.REGISTRY, name, registry.REGISTRY["muon"])
    records = []
    for seed in (0, 1):
        for lr, loss in ((0.01, 2.0), (0.02, 1.5), (0.04, 1.2)):  # best at the high edge
            records.append(("up", lr, seed, loss + 0.1 * seed))
        for lr, loss in ((0.01, 1.0), (0.02, 1.5), (0.04, math.inf)):  # best at the low edge
            records.append(("down", lr, seed, loss))
        for lr, loss in ((0.01, 2.0), (0.02, 1.0), (0.04, 3.0)):  # interior optimum
            records.append(("mid", lr, seed, loss))
        records.append(("dead", 0.02, seed, math.inf))
    summaries = sweep.summarize(_runs(records))
    assert summaries["up"].edge == "high" and summaries["up"].best.lr == 0.04
    assert summaries["up"].best.mean == pytest.approx(1.25)
    assert summaries["up"].best.spread == pytest.approx(0.05)
    assert summaries["down"].edge == "low" and summaries["mid"].edge is None
    assert summaries["dead"].best is None and summaries["dead"].edge == "low"
    assert summaries["up"].extension(2.0) == [0.08]
    assert summaries["down"].extension(2.0) == [0.005]
    assert summaries["mid"].extension(2.0) == []
    table = sweep.table(summaries, 2).splitlines()
    rows = {line.split(" | ")[0][2:]: line for line in table[2:]}
    assert rows["up"].endswith("| edge (high) |") and rows["mid"].endswith("|  |")
    assert "| **1.2500** |" in rows["up"] and "| inf |" in rows["down"]
    assert "diverged" in rows["dead"]
    # A later record of the same run replaces the earlier one (--fresh reruns).
    store = Store(tmp_path / "s.jsonl")
    for spec, result in _runs(records) + _runs([("mid", 0.04, 0, 0.5), ("mid", 0.04, 1, 0.5)]):
        store.add(spec, result)
    assert sweep.summarize(list(store.select(experiment="sweep")))["mid"].edge == "high"


def test_extension_plans_the_next_point_for_every_seed(tmp_path):
    grid = dataclasses.replace(sweep.Grid.smoke(), optimizers=("muon",), seeds=2,
                               grid_points=3, extend=1)
    store = Store(tmp_path / "sweep.jsonl")
    base = grid.base("cnn")
    for seed in (0, 1):
        for lr, loss in ((0.01, 3.0), (0.02, 2.0), (0.04, 1.0)):
            store.add(base.replace(optimizer="muon", lr=lr, seed=seed), {"final_val_loss": loss})
    todo = [(s.optimizer, s.lr, s.seed) for s in sweep.plan(grid, store) if store.get(s) is None]
    assert todo == [("muon", 0.08, 0), ("muon", 0.08, 1)]
    # An extended point recorded for one seed only is completed by a plain rerun.
    store.add(base.replace(optimizer="muon", lr=0.08, seed=0), {"final_val_loss": 0.9})
    plain = dataclasses.replace(grid, extend=0)
    todo = [(s.optimizer, s.lr, s.seed) for s in sweep.plan(plain, store) if store.get(s) is None]
    assert todo == [("muon", 0.08, 1)]


def test_focus_window_is_centred_and_clipped_to_the_recorded_lrs():
    for best, expected in ((1, [1, 2, 3]), (4, [3, 4, 5]), (7, [5, 6, 7]), (5, [4, 5, 6])):
        assert sweep.focus_window([1, 2, 3, 4, 5, 6, 7], best, 3) == expected
    assert sweep.focus_window([1, 2], 2, 5) == [1, 2]


def _history(val_loss, nonfinite_step=None):
    return History("h", val_loss=val_loss, nonfinite_step=nonfinite_step,
                   eval_steps=[25 * i for i in range(len(val_loss))])


def test_diverged_runs_are_recorded_as_inf():
    out = outcome(_history([2.3, 1.9, math.nan]))
    assert out["final_val_loss"] == math.inf and not out["finite"]
    assert out["best_val_loss"] == 1.9
    out = outcome(_history([2.3, 1.9], 7))  # stopped at a non-finite loss
    assert out["final_val_loss"] == math.inf and out["nonfinite_step"] == 7
    out = outcome(_history([2.3, 1.9]))
    assert out["final_val_loss"] == 1.9 and out["finite"]
    assert out["eval_steps"] == [0, 25] and out["val_losses"] == [2.3, 1.9]


def test_grid_is_log_spaced_around_the_centre():
    assert lr_grid(0.02, 5, 2.0) == [0.005, 0.01, 0.02, 0.04, 0.08]
    assert lr_grid(0.02, 4, 2.0) == [0.01, 0.02, 0.04, 0.08]
    assert lr_grid(1e-3, 3, math.sqrt(10)) == [0.0003162, 0.001, 0.003162]
    assert lr_grid(0.24, 1, 2.0) == [0.24]


def test_run_spec_keys_and_store_round_trip(tmp_path):
    spec = RunSpec("sweep", "cnn", {"widths": [8, 16], "steps": 3}, "muon", 0.02, 1)
    assert spec.config == (("steps", 3), ("widths", (8, 16)))
    assert RunSpec.from_dict(spec.to_dict()) == spec and spec.key != spec.replace(lr=0.04).key
    store = Store(tmp_path / "r.jsonl")
    store.add(spec, {"final_val_loss": 1.0})
    store.add(spec, {"final_val_loss": 0.5})  # the later record wins
    assert Store(tmp_path / "r.jsonl").get(spec) == {"final_val_loss": 0.5}
    assert Store(tmp_path / "r.jsonl").select(optimizer="adamw") == []
    with pytest.raises(ValueError, match="lr must be positive"):
        RunSpec("sweep", "cnn", {}, "muon", 0.0)


def test_cnn_data_is_deterministic_balanced_and_conv_kernels_take_the_matrix_path():
    import optorth

    cfg = cnn_task.CNNConfig.quick(train_size=200, val_size=50)
    a, b = cnn_task.make_data(cfg), cnn_task.make_data(cfg)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    np.testing.assert_array_equal(a.val_y, b.val_y)
    assert a.train_x.shape == (200, 16, 16, 3) and a.train_x.dtype == np.float32
    assert np.bincount(a.train_y, minlength=10).tolist() == [20] * 10
    other = cnn_task.make_data(cfg.replace(data_seed=1))
    assert not np.array_equal(a.train_x, other.train_x)
    idx = cnn_task.batch_indices(cfg.replace(steps=10, batch_size=40))
    assert sorted(idx.reshape(-1)[:200].tolist()) == list(range(200))  # one epoch each
    model = nnx.eval_shape(lambda: cnn_task.make_model(cfg, 10))
    routing = optorth.describe_routing(nnx.state(model, nnx.Param))
    for layer in ("conv1", "conv2", "conv3", "conv4"):
        assert f"{layer}/kernel" in routing
    assert routing.count("in(0,1,2) out(3)") == 4 and "4 matrix leaves" in routing
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        cnn_task.CNNConfig(channels=2)
