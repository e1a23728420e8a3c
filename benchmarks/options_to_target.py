"""Steps to optax's routed Muon loss with the new options: cautious weight decay, QK-clip.

    python benchmarks/options_to_target.py                    # every configuration, 2 seeds
    python benchmarks/options_to_target.py --configs adamuon_defaults_cwd
    python benchmarks/options_to_target.py --report           # table only
    python benchmarks/options_to_target.py --steps 1000 --eval-every 20 \
        --configs optax_muon_routed,adamuon_0.0192_wd,adamuon_0.0192_cwd  # longer setting

The target of seed s is the final validation loss of ``optax_muon_routed`` (``optax.contrib
.muon`` with optorth's routing) at lr 0.04, read from ``benchmarks/results/steps_to_target
.jsonl`` (``benchmarks/steps_to_target.py`` wrote it; the configuration hash must match).
Each configuration trains on the same seeds, data and initial weights, is evaluated every 10
steps, and its steps to the target are the first evaluation at or below it, linear in the
step between evaluations, reported as a fraction of the run (``—``: never reached).

The longer setting (``--steps`` other than the main job's 300, e.g. 1000) has no sweep
record to read the target from: the baseline is then one of the configurations
(``optax_muon_routed``, built as the sweep builds it at lr 0.04) and its final validation
loss of seed s, in the same runs file, is the target of seed s.

Configurations (each a change of one ready optimizer's construction):

- ``adamuon_defaults`` / ``adamuon_defaults_cwd``: AdaMuon with all its defaults (lr 0.01,
  decoupled weight decay 0.1), and the same with that decay cautious;
- ``adamuon_0.0192_wd`` / ``adamuon_0.0192_cwd``: AdaMuon at its best swept peak lr with the
  sweep's AdamW fallback, plain or cautious weight decay 0.1 on the matrices;
- ``adamuon_0.0192_qk``: the sweep's AdaMuon (no weight decay) with QK-clip;
- ``adamuon_0.0192_wd_qk``: plain weight decay 0.1 and QK-clip;
- ``*_qk``: the same with QK-clip (threshold ``--tau``) chained after the optimizer, the
  attention recording its per-head maximum logits (``benchmarks/lm/qk.py``).
- ``optax_muon_routed``: the baseline itself (run only when named, or in the longer setting).

Writes ``--out``/runs.jsonl (resumable) and ``options_to_target.md``.
"""

from __future__ import annotations

import pathlib
import sys
import time

if __package__ in (None, ""):  # run as `python benchmarks/options_to_target.py`
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import sweep  # noqa: E402
from benchmarks.lm.config import lr_schedule  # noqa: E402
from benchmarks.lm.registry import (  # noqa: E402
    build_default_optimizer,
    build_sweep_optimizer,
    fallback_adamw,
)
from benchmarks.steps_to_target import BASELINE, steps_to  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
BASELINE_LR = 0.04
RATE = 0.1


def _adamuon_defaults(cfg, cautious):
    import optorth

    return build_default_optimizer(
        "adamuon", cfg, weight_decay=optorth.WeightDecay(RATE, cautious=cautious))


def _adamuon_swept(cfg, cautious):
    """AdaMuon as the sweep builds it; ``cautious=None``: no weight decay (the sweep's)."""
    import optorth

    decay = 0.0 if cautious is None else optorth.WeightDecay(RATE, cautious=cautious)
    return optorth.adamuon(learning_rate=lr_schedule(0.0192, cfg), weight_decay=decay,
                           fallback=fallback_adamw(cfg, lr_schedule(sweep.FALLBACK_LR, cfg)))


#: name → (builder(cfg) -> optax transformation, whether QK-clip is on).
CONFIGS = {
    BASELINE: (lambda cfg: build_sweep_optimizer(BASELINE, cfg, BASELINE_LR), False),
    "adamuon_defaults": (lambda cfg: _adamuon_defaults(cfg, False), False),
    "adamuon_defaults_cwd": (lambda cfg: _adamuon_defaults(cfg, True), False),
    "adamuon_0.0192_wd": (lambda cfg: _adamuon_swept(cfg, False), False),
    "adamuon_0.0192_cwd": (lambda cfg: _adamuon_swept(cfg, True), False),
    "adamuon_0.0192_qk": (lambda cfg: _adamuon_swept(cfg, None), True),
    "adamuon_0.0192_wd_qk": (lambda cfg: _adamuon_swept(cfg, False), True),
    "adamuon_0.0192_cwd_qk": (lambda cfg: _adamuon_swept(cfg, True), True),
    "adamuon_defaults_qk": (lambda cfg: _adamuon_defaults(cfg, False), True),
    "adamuon_defaults_cwd_qk": (lambda cfg: _adamuon_defaults(cfg, True), True),
}


def baseline_targets(task, seeds: int, path: pathlib.Path) -> list[float]:
    chash = sweep.config_hash(task, sweep.FALLBACK_LR)
    found = {r["seed"]: r["final_val_loss"] for r in sweep.load_records(path)
             if r["optimizer"] == BASELINE and r["lr"] == BASELINE_LR
             and r["config_hash"] == chash}
    missing = [s for s in range(seeds) if s not in found]
    if missing:
        raise SystemExit(f"{path}: no {BASELINE} @ {BASELINE_LR} record of seeds {missing} for "
                         f"configuration {chash}; run benchmarks/steps_to_target.py first.")
    return [found[s] for s in range(seeds)]


def own_targets(runs: dict, seeds: int, path: pathlib.Path) -> list[float]:
    """The longer setting's targets: the baseline's final losses in this run's own records."""
    missing = [s for s in range(seeds) if (BASELINE, s) not in runs]
    if missing:
        raise SystemExit(f"{path}: no {BASELINE} run of seeds {missing} in this setting; "
                         f"run it with --configs {BASELINE}.")
    return [runs[(BASELINE, s)]["final_val_loss"] for s in range(seeds)]


def run_one(task, name: str, seed: int, tau: float) -> dict:
    build, qk = CONFIGS[name]
    start = time.perf_counter()
    tx = build(task.cfg)
    if qk:
        from benchmarks.lm import qk as lm_qk

        outcome = lm_qk.run(task, tx, seed, tau)
    else:
        outcome = task.run(tx, seed)
    jax.clear_caches()
    return {"optimizer": name, "seed": seed, "tau": tau if qk else None,
            "config_hash": sweep.config_hash(task, sweep.FALLBACK_LR), **outcome,
            "seconds": time.perf_counter() - start}


def table(names, runs, targets, steps) -> str:
    lines = [f"Target: {BASELINE} at lr {BASELINE_LR:g}, final validation loss per seed "
             f"{', '.join(f'{t:.4f}' for t in targets)}.", "",
             "| configuration | final loss (mean) | steps to target per seed | "
             "fraction of the run (mean) | largest logit (QK-clip runs) |",
             "|---|---|---|---|---|"]
    for name in names:
        recs = [runs.get((name, s)) for s in range(len(targets))]
        if None in recs:
            continue
        reached = [steps_to(t, r["eval_steps"], r["val_losses"])
                   for t, r in zip(targets, recs, strict=True)]
        fraction = None if None in reached else float(np.mean(reached)) / steps
        logit = [max(r["max_logit"]) for r in recs if r.get("max_logit")]
        lines.append(f"| {name} | {np.mean([r['final_val_loss'] for r in recs]):.4f} | "
                     f"{', '.join('—' if s is None else f'{s:.0f}' for s in reached)} | "
                     f"{'—' if fraction is None else f'{fraction:.3f}'} | "
                     f"{', '.join(f'{v:.1f}' for v in logit) or '—'} |")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = sweep.doc_parser(__doc__)
    parser.add_argument("--configs", default=None, help="comma-separated names (all)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=None,
                        help="run only this seed (e.g. beside a process running another)")
    parser.add_argument("--tau", type=float, default=10.0, help="QK-clip threshold (10)")
    parser.add_argument("--steps", type=int, default=None,
                        help="run length (the main job's 300); another length is the longer "
                             "setting, whose baseline runs here")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--out", default=None,
                        help="output folder (out/options_to_target, or ..._<steps> when longer)")
    args = parser.parse_args(argv)
    names = args.configs.split(",") if args.configs else list(CONFIGS)[1:]  # not the baseline
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}; choose from {', '.join(CONFIGS)}")
    task = sweep.make_tasks(["lm"], quick=False, steps=args.steps)["lm"]
    longer = task.cfg.steps != sweep.Config().steps
    task.cfg = task.cfg.replace(eval_every=args.eval_every)
    out = pathlib.Path(args.out or "out/options_to_target"
                       + (f"_{task.cfg.steps}" if longer else ""))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.jsonl"
    chash = sweep.config_hash(task, sweep.FALLBACK_LR)
    runs = {(r["optimizer"], r["seed"]): r for r in sweep.load_records(path)
            if r["config_hash"] == chash}
    for name in [] if args.report else names:
        for seed in range(args.seeds) if args.seed is None else [args.seed]:
            if (name, seed) not in runs:
                record = run_one(task, name, seed, args.tau)
                sweep.append_record(path, record)
                runs[(name, seed)] = record
                print(f"{name} seed={seed}: final {record['final_val_loss']:.4f}, "
                      f"{record['seconds']:.0f} s", flush=True)
    runs = {(r["optimizer"], r["seed"]): r for r in sweep.load_records(path)
            if r["config_hash"] == chash}  # with the records of processes run beside this one
    targets = (own_targets(runs, args.seeds, path) if longer else
               baseline_targets(task, args.seeds, RESULTS / "steps_to_target.jsonl"))
    shown = [BASELINE] * (longer and BASELINE not in names) + names
    text = table(shown, runs, targets, task.cfg.steps)
    (out / "options_to_target.md").write_text(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
