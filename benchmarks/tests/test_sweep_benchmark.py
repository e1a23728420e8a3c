"""Tests of the learning-rate sweep (benchmarks/sweep.py, benchmarks/sweep_report.py) and its
CNN task (benchmarks/cnn_task): the quick path end to end, resuming, edge detection."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from flax import nnx

from benchmarks import cnn_task, sweep
from benchmarks import sweep_report as report

ARGV = ["--quick", "--tasks", "cnn", "--optimizers", "muon,adamw", "--grid-points", "2",
        "--steps", "12", "--no-plot"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return out, sweep.main(ARGV + ["--out", str(out)])


@pytest.mark.extensive  # 4 runs, mostly compilation: ~35 s at load 3 on 2 cores, ~55 s at load 6
def test_quick_sweep_writes_one_line_per_run_and_a_table(first_run):
    out, result = first_run
    assert result["ran"] == 4  # 2 optimizers x 2 lrs x 1 seed
    records = [json.loads(line) for line in (out / "sweep.jsonl").read_text().splitlines()]
    assert len(records) == 4
    assert {(r["optimizer"], r["lr"]) for r in records} == {
        ("muon", 0.02), ("muon", 0.04), ("adamw", 0.002), ("adamw", 0.004)}
    for r in records:
        assert r["task"] == "cnn" and r["seed"] == 0 and r["finite"] and r["steps"] == 12
        assert math.isfinite(r["final_val_loss"]) and r["best_val_loss"] <= r["final_val_loss"]
        assert 0.0 <= r["final_val_accuracy"] <= 1.0 and r["seconds"] > 0
    lines = result["tables"]["cnn"].splitlines()
    assert lines[0] == ("| optimizer | centre lr | best lr | loss at best | acc at best "
                        "| ×1 | ×2 | edge |")
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| muon", "| adamw"]
    for line in lines[2:]:
        assert line.count("|") == 9 and line.count("**") == 2  # the best point in bold
        assert line.endswith(("| edge (low) |", "| edge (high) |"))  # 2 points: always
    summary = json.loads((out / "summary.json").read_text())
    best = summary["tasks"]["cnn"]["optimizers"]["muon"]
    losses = {float(k): v[0] for k, v in best["points"].items()}
    assert best["best_lr"] == min(losses, key=losses.get)
    assert report.load_best_lrs(out / "summary.json")["cnn"]["adamw"] in (0.002, 0.004)


@pytest.mark.extensive  # shares the 4 runs above
def test_rerun_resumes_and_runs_nothing_new(first_run):
    out, first = first_run
    again = sweep.main(ARGV + ["--out", str(out)])
    assert again["ran"] == 0
    assert again["tables"] == first["tables"]
    assert len((out / "sweep.jsonl").read_text().splitlines()) == 4
    # Other settings (here: steps) are another config hash: nothing is reused.
    args = sweep.parse_args(ARGV + ["--steps", "13", "--out", str(out)])
    task = sweep.make_tasks(["cnn"], quick=True, steps=13)["cnn"]
    records = sweep.load_records(out / "sweep.jsonl")
    done = {sweep.record_key(r["task"], r["optimizer"], r["lr"], r["seed"],
                             r["config_hash"]): r for r in records}
    assert len(sweep.plan(task, args.optimizers, args, done, records)) == 4


def _record(optimizer, lr, seed, loss, centre=0.02):
    return {"task": "cnn", "optimizer": optimizer, "lr": lr, "seed": seed, "centre_lr": centre,
            "final_val_loss": loss, "config_hash": "h"}


def test_edges_are_flagged_and_extended_on_synthetic_results():
    records = []
    for seed in (0, 1):
        for lr, loss in ((0.01, 2.0), (0.02, 1.5), (0.04, 1.2)):  # best at the high edge
            records.append(_record("up", lr, seed, loss + 0.1 * seed))
        for lr, loss in ((0.01, 1.0), (0.02, 1.5), (0.04, math.inf)):  # best at the low edge
            records.append(_record("down", lr, seed, loss))
        for lr, loss in ((0.01, 2.0), (0.02, 1.0), (0.04, 3.0)):  # interior optimum
            records.append(_record("mid", lr, seed, loss))
        records.append(_record("dead", 0.02, seed, math.inf))
    summaries = report.summarize(records)
    assert summaries["up"].edge == "high" and summaries["up"].best.lr == 0.04
    assert summaries["up"].best.mean == pytest.approx(1.25)
    assert summaries["up"].best.spread == pytest.approx(0.05)
    assert summaries["down"].edge == "low" and summaries["mid"].edge is None
    assert summaries["dead"].best is None and summaries["dead"].edge == "low"
    assert report.extension_lrs(summaries["up"], 2.0) == [0.08]
    assert report.extension_lrs(summaries["down"], 2.0) == [0.005]
    assert report.extension_lrs(summaries["mid"], 2.0) == []
    table = report.markdown_table(summaries, 2).splitlines()
    rows = {line.split(" | ")[0][2:]: line for line in table[2:]}
    assert rows["up"].endswith("| edge (high) |") and rows["mid"].endswith("|  |")
    assert "| **1.2500** |" in rows["up"] and "| inf |" in rows["down"]
    assert "diverged" in rows["dead"]
    # A later line for the same run replaces the earlier one (--fresh reruns).
    again = report.summarize(records + [_record("mid", 0.04, 0, 0.5),
                                        _record("mid", 0.04, 1, 0.5)])
    assert again["mid"].edge == "high"


def test_extension_plans_the_next_point_for_every_seed(tmp_path):
    args = sweep.parse_args(["--quick", "--seeds", "2", "--optimizers", "muon",
                             "--out", str(tmp_path)])
    task = sweep.make_tasks(["cnn"], quick=True, steps=None)["cnn"]
    chash = sweep.config_hash(task, args.fallback_lr)
    records = [dict(_record("muon", lr, seed, loss), config_hash=chash)
               for seed in (0, 1) for lr, loss in ((0.01, 3.0), (0.02, 2.0), (0.04, 1.0))]
    assert sweep.extension(task, ["muon"], args, records) == [("muon", 0.08, 0),
                                                               ("muon", 0.08, 1)]
    # An extended point recorded for one seed only is completed by a plain rerun.
    records.append(dict(_record("muon", 0.08, 0, 0.9), config_hash=chash))
    done = {sweep.record_key("cnn", r["optimizer"], r["lr"], r["seed"], chash): r
            for r in records}
    assert sweep.plan(task, ["muon"], args, done, records) == [("muon", 0.08, 1)]


def _history(val_loss, nonfinite_step=None):
    return SimpleNamespace(val_loss=val_loss, nonfinite_step=nonfinite_step,
                           eval_steps=[25 * i for i in range(len(val_loss))])


def test_diverged_runs_are_recorded_as_inf():
    out = sweep._outcome(_history([2.3, 1.9, math.nan]), 0.01)
    assert out["final_val_loss"] == math.inf and not out["finite"]
    assert out["best_val_loss"] == 1.9
    out = sweep._outcome(_history([2.3, 1.9], 7), 0.01)  # stopped at a non-finite loss
    assert out["final_val_loss"] == math.inf and out["nonfinite_step"] == 7
    out = sweep._outcome(_history([2.3, 1.9]), 0.01)
    assert out["final_val_loss"] == 1.9 and out["finite"]
    assert out["eval_steps"] == [0, 25] and out["val_losses"] == [2.3, 1.9]


def test_grid_is_log_spaced_around_the_centre():
    assert sweep.grid(0.02, 5, 2.0) == [0.005, 0.01, 0.02, 0.04, 0.08]
    assert sweep.grid(0.02, 4, 2.0) == [0.01, 0.02, 0.04, 0.08]
    assert sweep.grid(1e-3, 3, math.sqrt(10)) == [0.0003162, 0.001, 0.003162]
    assert sweep.grid(0.24, 1, 2.0) == [0.24]


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
