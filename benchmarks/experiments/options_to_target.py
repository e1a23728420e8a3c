"""Steps to optax's routed Muon loss with the new options: cautious weight decay, QK-clip.

    python -m benchmarks run options_to_target          # every configuration, 2 seeds
    python -m benchmarks run options_to_target --set configs=adamuon_defaults_cwd
    python -m benchmarks run options_to_target --set steps=1000 --set eval_every=20 \\
        --set configs=optax_muon_routed,adamuon_0.0192_wd,adamuon_0.0192_cwd
    python -m benchmarks run options_to_target --set only_seed=1   # beside a seed-0 process
    python -m benchmarks report options_to_target

The target of seed s is the final validation loss of ``optax_muon_routed`` (optorth's routing)
at lr 0.04 on seed s: in the main job's 300 steps read from the ``steps_to_target`` records;
in a longer setting (``steps``), where no such record exists, the baseline is one of this
experiment's configurations. Each configuration trains on the same seeds, evaluated every
``eval_every`` steps; its steps to the target are the first evaluation at or below it,
linear between evaluations, as a fraction of the run (``—``: never reached).

Configurations (each a change of one ready optimizer's construction):

- ``adamuon_defaults`` / ``adamuon_defaults_cwd``: AdaMuon with all its defaults (decoupled
  weight decay 0.1), and the same with that decay cautious;
- ``adamuon_0.0192_wd`` / ``adamuon_0.0192_cwd``: AdaMuon at its best swept peak lr with the
  sweep's AdamW fallback, plain or cautious weight decay 0.1 on the matrices;
- ``adamuon_0.0192_qk``: the sweep's AdaMuon (no weight decay) with QK-clip;
- ``*_qk``: the same with QK-clip (threshold ``tau``) chained after the optimizer, the
  attention recording its per-head maximum logits.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
import optax

from benchmarks.experiments import steps_to_target
from benchmarks.runner import registry, train
from benchmarks.runner.experiment import config_items, markdown, steps_to, task_config
from benchmarks.runner.loop import outcome
from benchmarks.runner.spec import RunSpec
from benchmarks.runner.store import Store

BASELINE, BASELINE_LR, RATE = steps_to_target.BASELINE, 0.04, 0.1
MAIN_STEPS = 300


def _adamuon_defaults(cfg, cautious):
    import optorth

    return registry.build("adamuon", cfg, defaults=True,
                          weight_decay=optorth.WeightDecay(RATE, cautious=cautious))


def _adamuon_swept(cfg, cautious):
    """AdaMuon as the sweep builds it; ``cautious=None``: no weight decay (the sweep's)."""
    import optorth

    decay = 0.0 if cautious is None else optorth.WeightDecay(RATE, cautious=cautious)
    return registry.build("adamuon", cfg, 0.0192, weight_decay=decay)


#: name → (builder(cfg) -> optax transformation, whether QK-clip is on).
CONFIGS = {
    BASELINE: (lambda cfg: registry.build(BASELINE, cfg, BASELINE_LR), False),
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


@dataclasses.dataclass(frozen=True)
class Grid:
    configs: tuple[str, ...] = ()  # () = every configuration but the baseline
    seeds: int = 2
    only_seed: int = -1  # ≥ 0: run this seed alone (two processes can share the seeds)
    tau: float = 10.0
    steps: int = MAIN_STEPS
    eval_every: int = 10
    steps_store: str = "benchmarks/results/steps_to_target.jsonl"
    quick: bool = False

    @classmethod
    def smoke(cls) -> Grid:
        return cls(configs=(BASELINE, "adamuon_0.0192_qk"), seeds=1, steps=6, eval_every=3,
                   quick=True)

    def names(self) -> tuple[str, ...]:
        names = self.configs or tuple(CONFIGS)[1:]
        unknown = sorted(set(names) - set(CONFIGS))
        if unknown:
            raise SystemExit(f"unknown configurations {unknown}; choose from "
                             f"{', '.join(CONFIGS)}")
        return names

    @property
    def longer(self) -> bool:
        """Whether the baseline runs here (any setting but the main job's)."""
        return self.quick or self.steps != MAIN_STEPS


def spec(grid: Grid, name: str, seed: int) -> RunSpec:
    cfg = task_config("lm", quick=grid.quick, steps=grid.steps, eval_every=grid.eval_every)
    qk = CONFIGS[name][1]
    return RunSpec("options_to_target", "lm", config_items(cfg), name, None, seed,
                   {"tau": grid.tau if qk else None})


def plan(grid: Grid, store) -> list[RunSpec]:
    names = ((BASELINE,) if grid.longer and BASELINE not in grid.names() else ()) + grid.names()
    seeds = range(grid.seeds) if grid.only_seed < 0 else [grid.only_seed]
    return [spec(grid, n, s) for n in names for s in seeds]


def execute(spec: RunSpec) -> dict:
    from benchmarks.runner.experiment import make_task

    build, qk = CONFIGS[spec.optimizer]
    start = time.perf_counter()
    task = make_task(spec, record_logits=qk, clip=qk)
    tx = build(task.cfg)
    if qk:
        import optorth
        from benchmarks.lm.task import clip_config

        tx = optax.chain(tx, optorth.qk_clip(clip_config(spec.option("tau"))))
    history = train(task, tx, spec)
    jax.clear_caches()
    result = outcome(history)
    if qk:
        result["max_logit"] = [float(max(np.max(v) for v in step.values()))
                               for step in history.aux]
    return {**result, "seconds": time.perf_counter() - start}


def targets(grid: Grid, store) -> list[float] | None:
    """The baseline's final loss per seed (``None`` while one is missing)."""
    if grid.longer:
        found = [store.get(spec(grid, BASELINE, s)) for s in range(grid.seeds)]
    else:
        base = steps_to_target.Grid(eval_every=grid.eval_every)
        source = Store(grid.steps_store)
        found = [source.get(steps_to_target.spec(base, BASELINE, BASELINE_LR, s, False))
                 for s in range(grid.seeds)]
    return None if None in found else [r["final_val_loss"] for r in found]


def table(names, runs: dict, goal: list[float], steps: int) -> str:
    rows = []
    for name in names:
        recs = [runs.get((name, s)) for s in range(len(goal))]
        if None in recs:
            continue
        reached = [steps_to(t, r["eval_steps"], r["val_losses"])
                   for t, r in zip(goal, recs, strict=True)]
        fraction = None if None in reached else float(np.mean(reached)) / steps
        logit = [max(r["max_logit"]) for r in recs if r.get("max_logit")]
        rows.append([name, f"{np.mean([r['final_val_loss'] for r in recs]):.4f}",
                     ", ".join("—" if s is None else f"{s:.0f}" for s in reached),
                     "—" if fraction is None else f"{fraction:.3f}",
                     ", ".join(f"{v:.1f}" for v in logit) or "—"])
    header = ["configuration", "final loss (mean)", "steps to target per seed",
              "fraction of the run (mean)", "largest logit (QK-clip runs)"]
    return (f"Target: {BASELINE} at lr {BASELINE_LR:g}, final validation loss per seed "
            f"{', '.join(f'{t:.4f}' for t in goal)}.\n\n" + markdown(header, rows))


def table_name(grid: Grid) -> str:
    return "options_to_target" + ("" if grid.steps == MAIN_STEPS else f"_{grid.steps}")


def report(grid: Grid, store) -> str:
    goal = targets(grid, store)
    if goal is None:
        return f"No {BASELINE} record of every seed for the target yet; `run` it first.\n"
    shown = ((BASELINE,) if grid.longer and BASELINE not in grid.names() else ()) + grid.names()
    runs = {(n, s): store.get(spec(grid, n, s)) for n in shown for s in range(grid.seeds)}
    return table(shown, {k: r for k, r in runs.items() if r}, goal, grid.steps)
