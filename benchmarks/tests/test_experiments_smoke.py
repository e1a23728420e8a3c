"""Every experiment's ``--smoke`` grid through ``python -m benchmarks run``: it trains each run
of its plan once, records it, reports it, and a rerun trains nothing. Micro-benchmarks with
tiny arguments: they run to the end and print finite tables."""

from __future__ import annotations

import math

import pytest

from benchmarks.runner import Store, cli

#: experiment → (runs of the smoke grid, a line its report must contain)
SMOKE = {
    "defaults": (1, "| muon | "),
    "fallback_sweep": (1, "| adamw | 0.003 | "),
    "steps_to_target": (2, "| muon @ 0.02 | "),
    "soak": (2, "adafactor"),
    "options_to_target": (2, "| adamuon_0.0192_qk | "),
}


@pytest.mark.extensive  # trains the smoke grids (about 6 compiles)
@pytest.mark.parametrize("name", list(SMOKE))
def test_smoke_grid_runs_records_reports_and_resumes(name, tmp_path):
    runs, row = SMOKE[name]
    result = cli.main(["run", name, "--smoke", "--out", str(tmp_path)])
    assert result["ran"] == runs
    records = Store(tmp_path / f"{name}.jsonl").select(experiment=name)
    assert len(records) == runs
    for spec, r in records:
        assert r["finite"] and math.isfinite(r["final_val_loss"]), (spec, r)
        assert r["val_losses"][-1] < r["val_losses"][0], (spec, r["val_losses"])
    assert row in result["report"]
    assert next(tmp_path.glob(f"{name}_*.md")).read_text().strip() == result["report"].strip()
    assert cli.main(["run", name, "--smoke", "--out", str(tmp_path)])["ran"] == 0


def test_unknown_experiment_and_list(capsys):
    with pytest.raises(SystemExit, match="unknown experiment 'nope'"):
        cli.main(["run", "nope"])
    cli.main(["list"])
    printed = capsys.readouterr().out
    assert all(name in printed for name in SMOKE)


def test_report_fills_the_docs_page_between_its_markers(tmp_path):
    page = tmp_path / "results.md"
    page.write_text("intro\n<!-- results:x -->\nold table\n<!-- /results:x -->\nafter\n"
                    "<!-- results:y -->\nkept\n<!-- /results:y -->\n")
    cli.write_report("x", "| new | table |\n", tmp_path, page)
    assert page.read_text() == ("intro\n<!-- results:x -->\n| new | table |\n"
                                "<!-- /results:x -->\nafter\n<!-- results:y -->\nkept\n"
                                "<!-- /results:y -->\n")
    assert next(tmp_path.glob("x_*.md")).read_text() == "| new | table |\n"


def test_set_parses_the_grid_fields_by_their_types():
    from benchmarks.experiments import steps_to_target, sweep

    grid = cli.make_grid(sweep, False, ["tasks=cnn", "seeds=3", "optimizers=muon, adamw",
                                        "quick=true"])
    assert (grid.tasks, grid.seeds, grid.optimizers, grid.quick) == (
        ("cnn",), 3, ("muon", "adamw"), True)
    grid = cli.make_grid(steps_to_target, True, ["horizon=0.8", "defaults=adamuon"])
    assert grid.horizon == 0.8 and grid.defaults == ("adamuon",) and grid.quick


#: micro-benchmark arguments (a few seconds each) → the methods its table must list
MICRO = {
    "bloop": (["--steps", "200", "--seeds", "0"], ["sum", "bloop", "bloop_noema", "main only"]),
    "rogo": (["--steps", "1", "--tasks", "2", "--seeds", "0"], ["sgd", "gpm", "rogo"]),
}


@pytest.mark.extensive  # compiles a dozen small programs each
@pytest.mark.parametrize("name", list(MICRO))
def test_contrib_micro_benchmark_prints_a_finite_table(name, tmp_path, capsys):
    from benchmarks.micro import contrib

    args, methods = MICRO[name]
    contrib.main([name, *args, "--out", str(tmp_path)])
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    for method in methods:
        assert "nan" not in rows[method.split()[0]], rows[method.split()[0]]
    assert (tmp_path / f"contrib_{name}.png").stat().st_size > 0
