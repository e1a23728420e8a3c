"""Steps to reach the correctly routed ``optax.contrib.muon``'s final loss on the main job.

    python benchmarks/steps_to_target.py                      # top 3 optorth optimizers, 2 seeds
    python benchmarks/steps_to_target.py --configs adamuon@0.0096,muon@0.02
    python benchmarks/steps_to_target.py --report             # table and plot only
    python benchmarks/steps_to_target.py --quick              # smoke run: tiny model

The target of seed s is the final validation loss of ``optax_muon_routed`` (``optax.contrib
.muon`` with optorth's routing: hidden matrices on Muon, AdamW 3e-3 for the rest) at its
best learning rate of the sweep, trained on seed s (same initial weights and batches as
every other run of seed s). Each candidate, by default the ``--top`` optorth optimizers of
lowest mean final loss in the sweep's ``lm`` records (``--sweep``), each at its best peak lr,
is trained on the same seeds, evaluated every ``--eval-every`` steps; its steps to the target
are the first evaluation at or below it, interpolated linearly in the step between that
evaluation and the previous one, reported as a fraction of the run (``—``: never reached).
A fraction of 0.8 means 20% fewer steps to the same loss. Every run follows the same
warmup-cosine shape over its own length, which pulls each curve down in its last steps; with
``--horizon 0.8`` the candidates train for 80% of the baseline's steps with the shape ending
there, and reaching the target then shows the same loss in 20% fewer steps.

Candidates run with the sweep's construction (``build_sweep_optimizer``: main job's lr
shape, AdamW fallback 3e-3, no weight decay); each optimizer of ``--defaults`` (by default
the candidates) also runs with all its defaults, as ``benchmarks/defaults.py`` builds it
(own fallback and weight decay, default lr as the peak of the same shape). Writes
``--out``/runs.jsonl (resumable), ``steps_to_target.md`` and ``steps_to_target.png``
(validation loss against step; ``steps_to_target_h0.8.*`` with ``--horizon 0.8``).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys

if __package__ in (None, ""):  # run as `python benchmarks/steps_to_target.py`
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import defaults, sweep  # noqa: E402
from benchmarks import sweep_report as report  # noqa: E402
from benchmarks.lm.registry import SWEEP_BASELINES, default_learning_rate  # noqa: E402

BASELINE = "optax_muon_routed"
DEFAULTS = "defaults"  # in place of a learning rate: the optimizer with all its defaults


def steps_to(target: float, steps: list[int], losses: list[float]) -> float | None:
    """First step at which the curve reaches ``target``, linear between evaluations."""
    for i, (step, loss) in enumerate(zip(steps, losses, strict=True)):
        if loss <= target:
            if i == 0:
                return float(step)
            s0, l0 = steps[i - 1], losses[i - 1]
            return s0 + (step - s0) * (l0 - target) / (l0 - loss)
    return None


def sweep_ranking(path: pathlib.Path, task) -> list[tuple[str, float, float]]:
    """``(optimizer, lr, mean final loss)`` of every swept point of ``task``, best first."""
    chash = sweep.config_hash(task, sweep.FALLBACK_LR)
    records = [r for r in sweep.load_records(path)
               if r["task"] == "lm" and r["config_hash"] == chash]
    points = [(name, p.lr, p.mean) for name, s in report.summarize(records).items()
              for p in s.points if math.isfinite(p.mean)]
    return sorted(points, key=lambda p: p[2])


def choose_configs(args, task) -> list[tuple[str, float | str]]:
    """The baseline at its best swept lr, the candidates, then ``(name, DEFAULTS)`` for each
    optimizer of ``--defaults`` (by default the candidates') with all its defaults."""
    ranking = sweep_ranking(pathlib.Path(args.sweep), task)
    if args.configs:
        chosen = [(c.split("@")[0], float(c.split("@")[1])) for c in args.configs.split(",")]
    else:
        best = {}  # each optimizer at its best swept lr, in ranking order
        for n, lr, _ in ranking:
            if n not in SWEEP_BASELINES:
                best.setdefault(n, lr)
        chosen = list(best.items())[:args.top]
    base = [(n, lr) for n, lr, _ in ranking if n == BASELINE][:1] or [(BASELINE, 0.02)]
    names = dict.fromkeys(n for n, _ in chosen) if args.defaults is None else [
        n.strip() for n in args.defaults.split(",") if n.strip()]
    unknown = sorted(set(names) - set(defaults.ready_optimizers()))
    if unknown:
        raise SystemExit(f"--defaults: unknown optimizers {unknown}; choose from "
                         f"{', '.join(defaults.ready_optimizers())}")
    return base + chosen + [(n, DEFAULTS) for n in names]


def record_key(record: dict) -> tuple:
    lr = DEFAULTS if record.get("build") == DEFAULTS else record["lr"]
    return record["optimizer"], lr, record["seed"]


def train(task, name: str, lr: float | str, seed: int) -> dict:
    """One run: the sweep's construction at ``lr``, or ``name`` with all its defaults."""
    if lr == DEFAULTS:
        return {**defaults.run_one(task, name, seed), "build": DEFAULTS}
    return sweep.run_one(task, name, lr, seed, sweep.FALLBACK_LR)


def label(name: str, lr: float | str) -> str:
    if lr == DEFAULTS:
        return f"{name} (all defaults, lr {default_learning_rate(name):g})"
    return f"{name} @ {lr:g}"


def run_all(task, configs, seeds: int, path: pathlib.Path) -> dict:
    """``{(optimizer, lr, seed): record}``, training what ``path`` does not hold yet."""
    chash = sweep.config_hash(task, sweep.FALLBACK_LR)
    done = {record_key(r): r for r in sweep.load_records(path) if r["config_hash"] == chash
            and (r.get("build") != DEFAULTS or r["lr"] == default_learning_rate(r["optimizer"]))}
    for name, lr in configs:
        for seed in range(seeds):
            if (name, lr, seed) not in done:
                record = train(task, name, lr, seed)
                sweep.append_record(path, record)
                done[(name, lr, seed)] = record
                print(f"{label(name, lr)} seed={seed}: final {record['final_val_loss']:.4f}, "
                      f"{record['seconds']:.0f} s", flush=True)
    return done


def table(configs, runs: dict, seeds: int, steps: int) -> tuple[str, list[dict]]:
    base_name, base_lr = configs[0]
    targets = [runs[(base_name, base_lr, s)]["final_val_loss"] for s in range(seeds)]
    lines = [f"Target: {base_name} at lr {base_lr:g}, final validation loss per seed "
             f"{', '.join(f'{t:.4f}' for t in targets)} (mean {np.mean(targets):.4f}).", "",
             "| optimizer @ peak lr | final loss (mean) | steps to target per seed | "
             "fraction of the run (mean) |", "|---|---|---|---|"]
    rows = []
    for name, lr in configs:
        recs = [runs[(name, lr, s)] for s in range(seeds)]
        reached = [steps_to(t, r["eval_steps"], r["val_losses"])
                   for t, r in zip(targets, recs, strict=True)]
        fractions = [None if s is None else s / steps for s in reached]
        mean = None if None in fractions else float(np.mean(fractions))
        rows.append({"optimizer": name, "lr": lr, "steps": reached, "fraction": mean,
                     "final": float(np.mean([r["final_val_loss"] for r in recs]))})
        lines.append(f"| {label(name, lr)} | {rows[-1]['final']:.4f} | "
                     f"{', '.join('—' if s is None else f'{s:.0f}' for s in reached)} | "
                     f"{'—' if mean is None else f'{mean:.3f}'} |")
    return "\n".join(lines), rows


def plot(configs, runs: dict, seeds: int, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    for name, lr in configs:
        recs = [runs[(name, lr, s)] for s in range(seeds)]
        ax.plot(recs[0]["eval_steps"], np.mean([r["val_losses"] for r in recs], axis=0),
                label=label(name, lr))
    target = np.mean([runs[(*configs[0], s)]["final_val_loss"] for s in range(seeds)])
    ax.axhline(target, color="k", ls=":", label="target")
    ax.set(xlabel="step", ylabel="validation loss (nats/char, mean over seeds)",
           ylim=(target - 0.3, target + 1.0))
    ax.legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    parser = sweep.doc_parser(__doc__)
    add = parser.add_argument
    add("--configs", default=None, help="name@lr,... instead of the sweep's best")
    add("--top", type=int, default=3, help="how many of the sweep's best optimizers (3)")
    add("--defaults", default=None,
        help="optimizers to run with all their defaults too (the candidates'; '' for none)")
    add("--seeds", type=int, default=2, help="seeds 0..N-1 (2)")
    add("--eval-every", type=int, default=10, help="evaluation interval in steps (10)")
    add("--horizon", type=float, default=1.0,
        help="candidates train for this fraction of the baseline's steps (1.0)")
    add("--sweep", default="out/sweep/sweep.jsonl", help="the sweep's records")
    add("--quick", action="store_true", help="the main job's tiny test model")
    add("--report", action="store_true", help="table and plot only; train nothing")
    add("--out", default=None, help="output directory (out/steps_to_target)")
    return parser


def main(argv=None) -> list[dict]:
    args = _parser().parse_args(argv)
    if not 0.0 < args.horizon <= 1.0:
        raise SystemExit(f"--horizon must be in (0, 1], got {args.horizon}")
    task = sweep.make_tasks(["lm"], quick=args.quick, steps=None)["lm"]
    configs = choose_configs(args, task)  # from the sweep, at the sweep's eval interval
    task.cfg = task.cfg.replace(eval_every=args.eval_every)
    short = sweep.make_tasks(["lm"], quick=args.quick,
                             steps=round(args.horizon * task.cfg.steps))["lm"]
    short.cfg = short.cfg.replace(eval_every=args.eval_every)
    out = pathlib.Path(args.out or ("out/steps_to_target_quick" if args.quick
                                    else "out/steps_to_target"))
    out.mkdir(parents=True, exist_ok=True)
    todo = [] if args.report else configs
    base = run_all(task, todo[:1], args.seeds, out / "runs.jsonl")
    runs = {**{k: r for k, r in base.items() if k[:2] == configs[0]},
            **run_all(short, todo[1:], args.seeds, out / "runs.jsonl")}
    text, rows = table(configs, runs, args.seeds, task.cfg.steps)
    if args.horizon < 1.0:
        text = (f"Candidates train for {short.cfg.steps} of the baseline's {task.cfg.steps} "
                f"steps (their lr shape ends there).\n\n{text}")
    suffix = "" if args.horizon == 1.0 else f"_h{args.horizon:g}"
    (out / f"steps_to_target{suffix}.md").write_text(text + "\n")
    plot(configs, runs, args.seeds, out / f"steps_to_target{suffix}.png")
    print(text)
    return rows


if __name__ == "__main__":
    main()
