"""Which fallback for ``factored_muon``? Its non-matrix leaves under several optimizers.

    python benchmarks/fallback_sweep.py                  # the default grid, 2 seeds
    python benchmarks/fallback_sweep.py --fallbacks adafactor_abs@0.003,adamw@0.003 --seeds 1
    python benchmarks/fallback_sweep.py --report         # table only; train nothing

Trains the main job (the ``lm`` task of ``benchmarks/sweep.py``) with ``optorth.factored_muon``
at its default learning rate (the peak of the main job's lr shape) and every other argument
default except the fallback, the optimizer of embeddings, head and norm gains. A fallback is
``kind@lr`` with a constant ``lr`` (what a user passes): ``adafactor_abs`` is
``optorth.adafactor(lr, multiply_by_parameter_scale=False)`` (absolute steps),
``adafactor_rel`` is ``optorth.adafactor(lr)`` (steps relative to each leaf's RMS), ``adamw``
is ``optorth.optimizers.default_fallback()``'s AdamW at ``lr``. The two Adafactor kinds keep
no full-size state; AdamW keeps two values per entry.

Prints mean final validation loss per fallback. Resumable: one line per finished run in
``--out``/runs.jsonl. About 50 s per run on an idle 2-core CPU.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

if __package__ in (None, ""):  # run as `python benchmarks/fallback_sweep.py`
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks import sweep  # noqa: E402
from benchmarks.lm.registry import build_default_optimizer  # noqa: E402

GRID = ("adafactor_abs@0.0003,adafactor_abs@0.001,adafactor_abs@0.003,adafactor_abs@0.01,"
        "adafactor_rel@0.01,adafactor_rel@0.03,adamw@0.003")


def make_fallback(kind: str, lr: float):
    import optorth

    if kind == "adafactor_abs":
        return optorth.adafactor(lr, multiply_by_parameter_scale=False)
    if kind == "adafactor_rel":
        return optorth.adafactor(lr)
    if kind == "adamw":  # default_fallback() at another lr
        return optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-10, weight_decay=0.0)
    raise ValueError(f"unknown fallback kind {kind!r}; choose adafactor_abs, adafactor_rel, adamw")


def parse(specs: str) -> list[tuple[str, float]]:
    """``"kind@lr,..."`` → ``[(kind, lr), ...]``, each kind checked."""
    out = []
    for spec in filter(None, (s.strip() for s in specs.split(","))):
        kind, _, lr = spec.partition("@")
        make_fallback(kind, float(lr))
        out.append((kind, float(lr)))
    return out


def run_one(task, kind: str, lr: float, seed: int) -> dict:
    start = time.perf_counter()
    tx = build_default_optimizer("factored_muon", task.cfg, fallback=make_fallback(kind, lr))
    outcome = task.run(tx, seed)
    jax.clear_caches()
    return {"fallback": kind, "fallback_lr": lr, "seed": seed,
            "config_hash": sweep.config_hash(task, lr), **outcome,
            "seconds": time.perf_counter() - start}


def table(grid, runs: dict) -> str:
    lines = ["| fallback | lr | final loss (mean) | per seed |", "|---|---|---|---|"]
    for kind, lr in grid:
        losses = [r["final_val_loss"] for (k, f, _), r in sorted(runs.items())
                  if (k, f) == (kind, lr)]
        if losses:
            lines.append(f"| {kind} | {lr:g} | {np.mean(losses):.4f} | "
                         f"{', '.join(f'{x:.4f}' for x in losses)} |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = sweep.doc_parser(__doc__)
    add = parser.add_argument
    add("--fallbacks", default=GRID, help="comma-separated kind@lr (the default grid)")
    add("--seeds", type=int, default=2, help="seeds 0..N-1 (2)")
    add("--report", action="store_true", help="table only; train nothing")
    add("--out", default="out/fallback_sweep", help="output directory")
    return parser


def main(argv=None) -> str:
    args = _parser().parse_args(argv)
    grid = parse(args.fallbacks)
    task = sweep.make_tasks(["lm"], quick=False, steps=None)["lm"]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "runs.jsonl"
    runs = {(r["fallback"], r["fallback_lr"], r["seed"]): r for r in sweep.load_records(results)
            if r["config_hash"] == sweep.config_hash(task, r["fallback_lr"])}
    todo = [(k, lr, s) for k, lr in grid for s in range(args.seeds) if (k, lr, s) not in runs]
    for kind, lr, seed in [] if args.report else todo:
        record = run_one(task, kind, lr, seed)
        sweep.append_record(results, record)
        runs[(kind, lr, seed)] = record
        print(f"{kind}@{lr:g} seed={seed}: final {record['final_val_loss']:.4f}, "
              f"{record['seconds']:.0f} s", flush=True)
    text = table(grid, {k: r for k, r in runs.items() if k[2] < args.seeds})
    (out / "fallback_sweep.md").write_text(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
