"""Learning-rate sweep of every ready optimizer on two tasks, resumable run by run.

    python benchmarks/sweep.py                           # the full sweep (hours, see below)
    python benchmarks/sweep.py --tasks cnn               # one task
    python benchmarks/sweep.py --optimizers muon,adamw --seeds 1
    python benchmarks/sweep.py --extend                  # + one point beyond each edge
    python benchmarks/sweep.py --seeds 2 --focus 5       # 2nd seed at the 5 lrs around
                                                         # each optimizer's best so far
    python benchmarks/sweep.py --report                  # table, plots, summary; no training
    python benchmarks/sweep.py --quick                   # smoke run: tiny models, 3 lrs, 1 seed,
                                                         # muon, adamw, adafactor

Tasks: ``lm`` is the main job (``benchmarks/lm``: the character-level transformer at its
default `Config`, 300 steps); ``cnn`` is a four-layer CNN on generated
16x16 images of 10 classes (``benchmarks/cnn_task``, 300 steps of 64 images) whose conv
kernels take optorth's matrix path. Optimizers: ``optorth.optimizers.READY`` plus the
baselines ``adamw`` and ``optax_muon_routed``, built by
`benchmarks.lm.registry.build_sweep_optimizer` with the main job's learning-rate shape
(warmup, cosine decay to 10%) and AdamW fallback (3e-3). Each is run at ``--grid-points``
peak learning rates spaced by ``--spacing`` (2 or sqrt10) around its default (the registry
lr for the baselines; 1e-2 for adafactor, whose relative-step default is also run as a
reference), for seeds 0 .. ``--seeds``−1 (the seed sets the initial weights and data order).

Resumable: every finished (task, optimizer, lr, seed) run appends one line to
``--out``/sweep.jsonl (final and best validation loss, accuracy for cnn, finite flag, wall
time, config hash); a rerun with the same settings skips finished runs, so a sweep can be
split across sessions (``--tasks``, ``--optimizers``) and interrupted at any time. A diverged
run is recorded with loss ``inf``. A best lr at an edge of the grid is flagged in the table;
``--extend [N]`` then runs N more rounds, each adding the next point beyond every edge.

Writes ``--out``/sweep.md (a markdown table per task), ``sweep_<task>.png`` (final loss vs
lr, log x) and ``summary.json`` (best lr per task and optimizer;
``benchmarks.sweep_report.load_best_lrs`` reads it).

Cost on this project's 2-core CPU (most of a cnn run, and of every --quick run, is
compilation): one ``lm`` run takes about 36 s idle (measured 64 s at load average 3 and 96 s
at load 6, with other jobs running), one ``cnn`` run about 5 s idle (8 s and 12 s at those
loads). The full sweep (14 optimizers x 5 lrs x 2 seeds + 2 adafactor references = 142 runs
per task) takes about 1.6 h idle (lm 85 min, cnn 12 min), about 3 h at load 3; ``--quick``
(20 runs) about 2 min (2.5 min at load 3).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import pathlib
import sys
import time

if __package__ in (None, ""):  # run as `python benchmarks/sweep.py`
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from benchmarks import cnn_task  # noqa: E402
from benchmarks import sweep_report as report  # noqa: E402
from benchmarks.lm import Config, load_corpus  # noqa: E402
from benchmarks.lm import loop as lm_loop  # noqa: E402
from benchmarks.lm.registry import (  # noqa: E402
    build_sweep_optimizer,
    sweep_centre_lr,
    sweep_optimizers,
)

#: Wall seconds of one run on an idle 2-core CPU (see the module docstring), for estimates.
SECONDS_PER_RUN = {"lm": 36.0, "cnn": 5.0}
QUICK_SECONDS_PER_RUN = {"lm": 5.0, "cnn": 7.0}
FALLBACK_LR = 3e-3
SPACINGS = {"2": 2.0, "sqrt10": math.sqrt(10.0)}
#: The optimizers of ``--quick`` (each run is mostly compilation; ``--optimizers all``).
QUICK_OPTIMIZERS = ("muon", "adamw", "adafactor")


# --------------------------------------------------------------------------- tasks


class LMTask:
    """The main job's character LM; loss in nats per character."""

    name, accuracy = "lm", False

    def __init__(self, cfg: Config):
        self.cfg, self._corpus = cfg, None

    def config_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self.cfg).items() if k != "seed"}

    def run(self, tx, seed: int) -> dict:
        if self._corpus is None:
            self._corpus = load_corpus(self.cfg.corpus_chars)
        history = lm_loop.train(tx, self.cfg.replace(seed=seed), corpus=self._corpus,
                                progress=False)
        return _outcome(history, history.mean_step_seconds())


class CNNTask:
    """The CNN on generated images; loss in nats per image, top-1 accuracy."""

    name, accuracy = "cnn", True

    def __init__(self, cfg: cnn_task.CNNConfig):
        self.cfg, self._data = cfg, None

    def config_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self.cfg).items() if k != "seed"}

    def run(self, tx, seed: int) -> dict:
        if self._data is None:
            self._data = cnn_task.make_data(self.cfg)
        history = cnn_task.train(tx, self.cfg.replace(seed=seed), data=self._data)
        out = _outcome(history, history.mean_step_seconds())
        out["final_val_accuracy"] = history.val_accuracy[-1] if out["finite"] else None
        return out


def _outcome(history, step_seconds) -> dict:
    """Final and best validation loss of a run (``inf`` for a run that diverged) and its
    validation curve (``eval_steps``, ``val_losses``; for steps-to-a-target-loss comparisons)."""
    val_losses, nonfinite_step = history.val_loss, history.nonfinite_step
    measured = [v for v in val_losses if math.isfinite(v)]
    finite = nonfinite_step is None and bool(val_losses) and math.isfinite(val_losses[-1])
    return {
        "final_val_loss": val_losses[-1] if finite else math.inf,
        "best_val_loss": min(measured) if measured else math.inf,
        "finite": finite,
        "nonfinite_step": nonfinite_step,
        "ms_per_step": 1e3 * step_seconds,
        "eval_steps": list(history.eval_steps),
        "val_losses": [float(v) for v in val_losses],
    }


def make_tasks(names, *, quick: bool, steps: int | None) -> dict:
    tasks = {}
    for name in names:
        if name == "lm":
            cfg = Config.quick() if quick else Config()
            tasks[name] = LMTask(cfg if steps is None else cfg.replace(steps=steps))
        elif name == "cnn":
            cfg = cnn_task.CNNConfig.quick() if quick else cnn_task.CNNConfig()
            tasks[name] = CNNTask(cfg if steps is None else cfg.replace(steps=steps))
        else:
            raise ValueError(f"unknown task {name!r}; choose from lm, cnn")
    return tasks


def config_hash(task, fallback_lr: float) -> str:
    """Hash of everything but the optimizer, lr and seed that defines a task's runs."""
    text = json.dumps({"task": task.name, "config": task.config_dict(),
                       "fallback_lr": fallback_lr}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- records


def load_records(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_record(path: pathlib.Path, record: dict) -> None:
    """Append one finished run to a resumable JSON-lines file (read by `load_records`)."""
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def record_key(task: str, optimizer: str, lr, seed: int, chash: str) -> tuple:
    return task, optimizer, report.lr_key(lr), seed, chash


def task_records(records, task: str, chash: str, seeds: int) -> list[dict]:
    """The records of ``task`` under ``chash`` for seeds below ``seeds``."""
    return [r for r in records
            if r["task"] == task and r["config_hash"] == chash and r["seed"] < seeds]


# --------------------------------------------------------------------------- plan


def grid(centre: float, points: int, spacing: float) -> list[float]:
    """``points`` learning rates ``centre · spacing^k`` around ``centre`` (k from −⌊(p−1)/2⌋)."""
    first = -((points - 1) // 2)
    return [report.canonical_lr(centre * spacing ** k) for k in range(first, first + points)]


def plan(task, optimizers, args, done: dict, records: list[dict]) -> list[tuple]:
    """Runs ``(optimizer, lr, seed)`` of ``task`` not yet in ``done``: the grid, every lr
    already recorded for these settings (finishing partial points), adafactor's default."""
    chash = config_hash(task, args.fallback_lr)
    mine = task_records(records, task.name, chash, args.seeds)
    summaries = report.summarize(mine)
    todo = []
    for name in optimizers:
        lrs = set(grid(sweep_centre_lr(name), args.grid_points, args.spacing))
        lrs |= {r["lr"] for r in mine if r["optimizer"] == name and r["lr"] is not None}
        best = summaries[name].best if name in summaries else None
        if args.focus and best is not None:
            lrs = focus_window(sorted(lrs), best.lr, args.focus)
        runs = sorted(lrs) + ([None] if name == "adafactor" else [])
        todo += [(name, lr, seed) for lr in runs for seed in range(args.seeds)
                 if record_key(task.name, name, lr, seed, chash) not in done]
    return todo


def focus_window(lrs: list[float], best: float, points: int) -> list[float]:
    """The ``points`` consecutive learning rates of sorted ``lrs`` centred on ``best``."""
    i = lrs.index(best)
    start = min(max(0, i - points // 2), max(0, len(lrs) - points))
    return lrs[start:start + points]


def extension(task, optimizers, args, records) -> list[tuple]:
    """Runs one grid step beyond every edge of ``task``'s current results."""
    chash = config_hash(task, args.fallback_lr)
    summaries = report.summarize(task_records(records, task.name, chash, args.seeds))
    return [(name, lr, seed) for name in optimizers if name in summaries
            for lr in report.extension_lrs(summaries[name], args.spacing)
            for seed in range(args.seeds)]


# --------------------------------------------------------------------------- running


def run_one(task, name: str, lr, seed: int, fallback_lr: float) -> dict:
    """Train one run and return its record (a diverged run has loss ``inf``)."""
    start = time.perf_counter()
    tx = build_sweep_optimizer(name, task.cfg, lr, fallback_lr=fallback_lr)
    try:
        outcome = task.run(tx, seed)
    except FloatingPointError as err:  # jax_debug_nans or a checked non-finite value
        outcome = {"final_val_loss": math.inf, "best_val_loss": math.inf, "finite": False,
                   "nonfinite_step": None, "error": str(err)[:200]}
    jax.clear_caches()  # every run compiles its own step; keep the process small
    return {"task": task.name, "optimizer": name, "lr": lr, "seed": seed,
            "centre_lr": sweep_centre_lr(name), "config_hash": config_hash(task, fallback_lr),
            "steps": task.cfg.steps, **outcome, "seconds": time.perf_counter() - start}


def execute(task, runs, args, results: pathlib.Path, records: list[dict], done: dict) -> int:
    """Run ``runs`` of ``task``, appending each finished record to ``results``."""
    seconds = []
    for i, (name, lr, seed) in enumerate(runs, 1):
        record = run_one(task, name, lr, seed, args.fallback_lr)
        append_record(results, record)
        records.append(record)
        done[record_key(task.name, name, lr, seed, record["config_hash"])] = record
        seconds.append(record["seconds"])
        left = (len(runs) - i) * sum(seconds) / len(seconds)
        print(f"[{task.name} {i}/{len(runs)}] {name} lr={report.lr_key(lr)} seed={seed}: "
              f"final {record['final_val_loss']:.4f}, best {record['best_val_loss']:.4f}, "
              f"{record['seconds']:.0f} s; about {left / 60:.0f} min left", flush=True)
    return len(runs)


# --------------------------------------------------------------------------- report


def write_report(tasks, args, records, out_dir: pathlib.Path) -> dict:
    """Print and write the tables, plots and summary.json for ``tasks``."""
    tables, summary = {}, {}
    for task in tasks.values():
        chash = config_hash(task, args.fallback_lr)
        summaries = report.summarize(task_records(records, task.name, chash, args.seeds))
        order = [n for n in sweep_optimizers() if n in summaries]
        summaries = {n: summaries[n] for n in order + sorted(set(summaries) - set(order))}
        tables[task.name] = report.markdown_table(summaries, args.seeds,
                                                  accuracy=task.accuracy)
        summary[task.name] = {"config_hash": chash, "config": task.config_dict(),
                              "seeds": args.seeds, "fallback_lr": args.fallback_lr,
                              "optimizers": report.summary_json(summaries)}
        if summaries and not args.no_plot:
            report.plot_task(summaries, f"{task.name}: final validation loss vs peak lr "
                             f"({task.cfg.steps} steps, {args.seeds} seed(s))",
                             out_dir / f"sweep_{task.name}.png")
    text = "\n\n".join(f"## {name} (config {summary[name]['config_hash']})\n\n{table}"
                       for name, table in tables.items())
    text += ("\n\nLoss: final validation loss, mean ± std over seeds; ×c: lr / centre lr; "
             "**bold**: best lr; `*`: fewer seeds than asked for; inf: diverged.\n")
    (out_dir / "sweep.md").write_text(text)
    report.write_summary(out_dir / "summary.json", summary)
    print(text)
    return {"tables": tables, "summary": summary}


# --------------------------------------------------------------------------- CLI


def doc_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose description is the first paragraph of a script's ``doc`` and whose
    epilog is the rest, verbatim (the benchmark scripts' ``--help``)."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   epilog="\n\n".join(doc.split("\n\n")[1:]),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def _parser() -> argparse.ArgumentParser:
    parser = doc_parser(__doc__)
    add = parser.add_argument
    add("--tasks", default="lm,cnn", help="comma-separated subset of lm,cnn (both)")
    add("--optimizers", default=None,
        help=f"comma-separated subset of {','.join(sweep_optimizers())}, or all "
             f"(all; quick: {','.join(QUICK_OPTIMIZERS)})")
    add("--grid-points", type=int, default=None, help="learning rates per optimizer (5; quick 3)")
    add("--spacing", default="2", choices=sorted(SPACINGS), help="grid factor (2)")
    add("--seeds", type=int, default=None, help="seeds 0..N-1 per learning rate (2; quick 1)")
    add("--steps", type=int, default=None,
        help="training steps of both tasks (300; quick: lm 24, cnn 120)")
    add("--fallback-lr", type=float, default=FALLBACK_LR,
        help=f"peak lr of the AdamW fallback path ({FALLBACK_LR})")
    add("--focus", type=int, default=0,
        help="run only the N learning rates centred on each optimizer's best so far "
             "(e.g. more seeds where it matters); 0: every grid and recorded lr")
    add("--extend", type=int, nargs="?", const=1, default=0,
        help="rounds of one extra point beyond each edge best lr (1 if given alone)")
    add("--quick", action="store_true", help="tiny models, 3 lrs, 1 seed (smoke run)")
    add("--fresh", action="store_true", help="rerun runs already recorded (the new ones win)")
    add("--report", action="store_true", help="write the table, plots, summary; train nothing")
    add("--no-plot", action="store_true", help="skip the plots")
    add("--out", default=None, help="output directory (out/sweep; quick: out/sweep_quick)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    args = _parser().parse_args(argv)
    args.grid_points = args.grid_points or (3 if args.quick else 5)
    args.seeds = args.seeds or (1 if args.quick else 2)
    args.spacing = SPACINGS[args.spacing]
    args.out = pathlib.Path(args.out or ("out/sweep_quick" if args.quick else "out/sweep"))
    for field in ("grid_points", "seeds"):
        if getattr(args, field) < 1:
            raise SystemExit(f"--{field.replace('_', '-')} must be at least 1")
    if args.optimizers in (None, "all"):
        names = QUICK_OPTIMIZERS if args.quick and args.optimizers is None else sweep_optimizers()
    else:
        names = args.optimizers.split(",")
    args.optimizers = [n.strip() for n in names if n.strip()]
    unknown = sorted(set(args.optimizers) - set(sweep_optimizers()))
    if unknown:
        raise SystemExit(f"unknown optimizers {unknown}; choose from "
                         f"{', '.join(sweep_optimizers())}")
    return args


def main(argv=None) -> dict:
    """Run what is missing of the sweep, then report; returns ``{"ran", "tables", "summary"}``."""
    args = parse_args(argv)
    tasks = make_tasks([t.strip() for t in args.tasks.split(",") if t.strip()],
                       quick=args.quick, steps=args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "sweep.jsonl"
    records = load_records(results)
    done = {} if args.fresh else {
        record_key(r["task"], r["optimizer"], r["lr"], r["seed"], r["config_hash"]): r
        for r in records}
    ran = 0
    for task in ([] if args.report else tasks.values()):
        runs = plan(task, args.optimizers, args, done, records)
        per_run = (QUICK_SECONDS_PER_RUN if args.quick else SECONDS_PER_RUN)[task.name]
        estimate = len(runs) * per_run
        print(f"{task.name}: {len(runs)} runs to do (about {estimate / 60:.0f} min)", flush=True)
        ran += execute(task, runs, args, results, records, done)
        for _ in range(args.extend):
            runs = [r for r in extension(task, args.optimizers, args, records)
                    if record_key(task.name, *r, config_hash(task, args.fallback_lr))
                    not in done]
            if not runs:
                break
            print(f"{task.name}: {len(runs)} runs beyond the edges", flush=True)
            ran += execute(task, runs, args, results, records, done)
    out = write_report(tasks, args, records, args.out)
    print(f"\n{ran} new runs; results in {results}")
    return {"ran": ran, **out}


if __name__ == "__main__":
    main()
