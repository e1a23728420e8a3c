"""Do the ready optimizers' defaults train well? Each against its own best swept run.

    python benchmarks/defaults.py                        # every ready optimizer, 2 seeds
    python benchmarks/defaults.py --optimizers muon,root --seeds 1
    python benchmarks/defaults.py --report               # table only; train nothing
    python benchmarks/defaults.py --quick                # smoke run: tiny model, 1 seed

Trains the main job (``benchmarks/lm`` at its default ``Config``: the ``lm`` task of
``benchmarks/sweep.py``) with every optimizer of ``optorth.optimizers.READY`` called with all
its defaults (its own fallback: ``optorth.optimizers.default_fallback()``'s AdamW, or
``factored_muon``'s Adafactor; weight decay, betas, Newton–Schulz), except that the default
learning rate is the peak of the main job's learning-rate shape (warmup, cosine decay to
10%), as in every swept run. ``adafactor`` runs at its recommended learning rate
(``ADAFACTOR_LEARNING_RATE`` in ``benchmarks/lm/registry.py``; its no-argument default, the
relative step size, is a row of the sweep's table).

The table sets the mean final validation loss over seeds beside the optimizer's best run of
the sweep (``--sweep``, the same task settings): gap = defaults − best swept, ``ok`` when
the gap is at most ``--tolerance`` (0.05 nats). Resumable: one line per finished run in
``--out``/defaults.jsonl; a run is redone when the optimizer's default learning rate
changes (after a change of another default, delete the optimizer's lines). Cost: one run
per optimizer and seed, about 40 s each on an idle 2-core CPU (24 runs, about 16 min).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

if __package__ in (None, ""):  # run as `python benchmarks/defaults.py`
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import sweep  # noqa: E402
from benchmarks import sweep_report as report  # noqa: E402
from benchmarks.lm.registry import build_default_optimizer, default_learning_rate  # noqa: E402

TOLERANCE = 0.05


def ready_optimizers() -> tuple[str, ...]:
    from optorth.optimizers import READY

    return tuple(READY)


def run_one(task, name: str, seed: int) -> dict:
    """Train ``name`` with its defaults on ``task`` and return the record."""
    start = time.perf_counter()
    outcome = task.run(build_default_optimizer(name, task.cfg), seed)
    jax.clear_caches()
    return {"optimizer": name, "lr": default_learning_rate(name), "seed": seed,
            "config_hash": sweep.config_hash(task, sweep.FALLBACK_LR), **outcome,
            "seconds": time.perf_counter() - start}


def current(records: list[dict], task) -> dict:
    """``{(optimizer, seed): record}`` of the runs at today's defaults and task settings."""
    chash = sweep.config_hash(task, sweep.FALLBACK_LR)
    return {(r["optimizer"], r["seed"]): r for r in records
            if r["config_hash"] == chash and r["lr"] == default_learning_rate(r["optimizer"])}


def best_swept(sweep_path: pathlib.Path, task) -> dict[str, report.Point]:
    """Each optimizer's best point in the sweep's records of ``task`` (all seeds)."""
    chash = sweep.config_hash(task, sweep.FALLBACK_LR)
    records = [r for r in sweep.load_records(sweep_path)
               if r["task"] == task.name and r["config_hash"] == chash]
    return {name: s.best for name, s in report.summarize(records).items() if s.best}


def table(names, runs: dict, best: dict, tolerance: float) -> tuple[str, dict]:
    """The markdown table and ``{optimizer: row}`` for the JSON summary."""
    lines = ["| optimizer | default lr | loss with defaults | seeds | best swept lr | "
             "best swept loss | gap | ok |", "|---|---|---|---|---|---|---|---|"]
    rows = {}
    for name in names:
        losses = [r["final_val_loss"] for (n, _), r in sorted(runs.items()) if n == name]
        if not losses:
            continue
        mean = float(np.mean(losses))
        point = best.get(name)
        gap = mean - point.mean if point else math.nan
        ok = bool(point) and gap <= tolerance
        lr = default_learning_rate(name)
        rows[name] = {"lr": lr, "loss": mean, "losses": losses,
                      "best_lr": point.lr if point else None,
                      "best_loss": point.mean if point else None, "gap": gap, "ok": ok}
        spread = f" ± {np.std(losses):.4f}" if len(losses) > 1 else ""
        lines.append(
            f"| {name} | {lr:g} | {mean:.4f}{spread} | {len(losses)} | "
            + (f"{point.lr:g} | {point.mean:.4f} ({len(point.losses)} seeds) | {gap:+.4f} | "
               f"{'yes' if ok else 'NO'} |" if point else "— | — | — | — |"))
    return "\n".join(lines), rows


def _parser() -> argparse.ArgumentParser:
    parser = sweep.doc_parser(__doc__)
    add = parser.add_argument
    add("--optimizers", default=None, help="comma-separated subset of READY (all)")
    add("--seeds", type=int, default=None, help="seeds 0..N-1 (2; quick 1)")
    add("--tolerance", type=float, default=TOLERANCE, help="allowed gap in nats (0.05)")
    add("--sweep", default="out/sweep/sweep.jsonl", help="the sweep's records")
    add("--quick", action="store_true", help="the main job's tiny test model, 1 seed")
    add("--report", action="store_true", help="table only; train nothing")
    add("--out", default=None, help="output directory (out/defaults; quick out/defaults_quick)")
    return parser


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    names = args.optimizers.split(",") if args.optimizers else list(ready_optimizers())
    unknown = sorted(set(names) - set(ready_optimizers()))
    if unknown:
        raise SystemExit(f"unknown optimizers {unknown}; choose from "
                         f"{', '.join(ready_optimizers())}")
    seeds = args.seeds or (1 if args.quick else 2)
    task = sweep.make_tasks(["lm"], quick=args.quick, steps=None)["lm"]
    out = pathlib.Path(args.out or ("out/defaults_quick" if args.quick else "out/defaults"))
    out.mkdir(parents=True, exist_ok=True)
    results = out / "defaults.jsonl"
    runs = current(sweep.load_records(results), task)
    todo = [(n, s) for n in names for s in range(seeds) if (n, s) not in runs]
    for i, (name, seed) in enumerate([] if args.report else todo, 1):
        record = run_one(task, name, seed)
        sweep.append_record(results, record)
        runs[(name, seed)] = record
        print(f"[{i}/{len(todo)}] {name} lr={record['lr']:g} seed={seed}: final "
              f"{record['final_val_loss']:.4f}, {record['seconds']:.0f} s", flush=True)
    runs = {k: r for k, r in runs.items() if k[1] < seeds}
    text, rows = table(names, runs, best_swept(pathlib.Path(args.sweep), task), args.tolerance)
    (out / "defaults.md").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    print(text)
    return rows


if __name__ == "__main__":
    main()
