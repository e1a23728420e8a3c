"""Steps to reach the correctly routed ``optax.contrib.muon``'s final loss on the main job.

    python -m benchmarks run steps_to_target            # the sweep's top 3, 2 seeds
    python -m benchmarks run steps_to_target --set configs=adamuon@0.0096,muon@0.02
    python -m benchmarks run steps_to_target --set horizon=0.8
    python -m benchmarks report steps_to_target

The target of seed s is the final validation loss of ``optax_muon_routed`` (optorth's routing:
hidden matrices on Muon, AdamW 3e-3 for the rest) at its best swept lr, trained on seed s.
Each candidate, by default the ``top`` optorth optimizers of lowest mean final loss in the
sweep's ``lm`` records, each at its best peak lr, trains on the same seeds, evaluated every
``eval_every`` steps; its steps to the target are the first evaluation at or below it,
linear between evaluations, as a fraction of the run (``—``: never reached). Each optimizer
of ``defaults`` (by default the candidates) also runs with all its defaults. With
``horizon`` 0.8 the candidates train for 80% of the baseline's steps, their lr shape ending
there: reaching the target then shows the same loss in 20% fewer steps.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from benchmarks.experiments import defaults as defaults_exp
from benchmarks.experiments import sweep
from benchmarks.runner import registry
from benchmarks.runner.experiment import config_items, markdown, steps_to, task_config
from benchmarks.runner.store import Store

BASELINE = "optax_muon_routed"
DEFAULTS = "defaults"  # in place of a learning rate: the optimizer with all its defaults


@dataclasses.dataclass(frozen=True)
class Grid:
    configs: tuple[str, ...] = ()  # name@lr instead of the sweep's best
    top: int = 3
    defaults: tuple[str, ...] | None = None  # None: the candidates'
    seeds: int = 2
    eval_every: int = 10
    horizon: float = 1.0
    sweep_store: str = "benchmarks/results/sweep.jsonl"
    quick: bool = False

    @classmethod
    def smoke(cls) -> Grid:
        return cls(configs=("muon@0.02",), defaults=(), seeds=1, eval_every=6, quick=True,
                   sweep_store="")

    def __post_init__(self):
        if not 0.0 < self.horizon <= 1.0:
            raise ValueError(f"horizon must be in (0, 1], got {self.horizon}")

    def base(self, candidate: bool):
        cfg = task_config("lm", quick=self.quick, eval_every=self.eval_every)
        if candidate:
            cfg = cfg.replace(steps=round(self.horizon * cfg.steps))
        return sweep.Grid(quick=self.quick).base("lm").replace(
            experiment="steps_to_target", config=config_items(cfg))


def sweep_ranking(grid: Grid) -> list[tuple[str, float, float]]:
    """``(optimizer, lr, mean final loss)`` of every swept ``lm`` point, best first."""
    if not grid.sweep_store:
        return []
    sweep_grid = sweep.Grid(tasks=("lm",), quick=grid.quick)
    summaries = sweep.summarize(sweep.task_runs(sweep_grid, Store(grid.sweep_store), "lm"))
    points = [(n, p.lr, p.mean) for n, s in summaries.items() for p in s.points
              if math.isfinite(p.mean)]
    return sorted(points, key=lambda p: p[2])


def choose_configs(grid: Grid) -> list[tuple[str, float | str]]:
    """The baseline at its best swept lr, the candidates, then ``(name, DEFAULTS)``."""
    ranking = sweep_ranking(grid)
    if grid.configs:
        chosen = [(c.split("@")[0], float(c.split("@")[1])) for c in grid.configs]
    else:
        best = {}  # each optimizer at its best swept lr, in ranking order
        for n, lr, _ in ranking:
            if n not in registry.BASELINES:
                best.setdefault(n, lr)
        chosen = list(best.items())[:grid.top]
    base = [(n, lr) for n, lr, _ in ranking if n == BASELINE][:1] or [(BASELINE, 0.02)]
    names = list(dict.fromkeys(n for n, _ in chosen)) if grid.defaults is None else list(
        grid.defaults)
    unknown = sorted(set(names) - set(registry.ready()))
    if unknown:
        raise SystemExit(f"defaults: unknown optimizers {unknown}; choose from "
                         f"{', '.join(registry.ready())}")
    return base + chosen + [(n, DEFAULTS) for n in names]


def spec(grid: Grid, name: str, lr, seed: int, candidate: bool = True):
    base = grid.base(candidate)
    if lr == DEFAULTS:
        return defaults_exp.spec(None, name, seed, "steps_to_target", base)
    return base.replace(optimizer=name, lr=lr, seed=seed)


def plan(grid: Grid, store) -> list:
    configs = choose_configs(grid)
    return [spec(grid, n, lr, s, i > 0) for i, (n, lr) in enumerate(configs)
            for s in range(grid.seeds)]


def label(name: str, lr) -> str:
    if lr == DEFAULTS:
        return f"{name} (all defaults, lr {registry.default_learning_rate(name):g})"
    return f"{name} @ {lr:g}"


def table(configs, runs: dict, seeds: int, steps: int) -> tuple[str, list[dict]]:
    """``runs`` maps ``(name, lr, seed)`` to a result; the first config is the baseline."""
    targets = [runs[(*configs[0], s)]["final_val_loss"] for s in range(seeds)]
    lines = [f"Target: {configs[0][0]} at lr {configs[0][1]:g}, final validation loss per "
             f"seed {', '.join(f'{t:.4f}' for t in targets)} (mean {np.mean(targets):.4f}).",
             ""]
    rows, cells = [], []
    for name, lr in configs:
        recs = [runs[(name, lr, s)] for s in range(seeds)]
        reached = [steps_to(t, r["eval_steps"], r["val_losses"])
                   for t, r in zip(targets, recs, strict=True)]
        fractions = [None if s is None else s / steps for s in reached]
        mean = None if None in fractions else float(np.mean(fractions))
        rows.append({"optimizer": name, "lr": lr, "steps": reached, "fraction": mean,
                     "final": float(np.mean([r["final_val_loss"] for r in recs]))})
        cells.append([label(name, lr), f"{rows[-1]['final']:.4f}",
                      ", ".join("—" if s is None else f"{s:.0f}" for s in reached),
                      "—" if mean is None else f"{mean:.3f}"])
    header = ["optimizer @ peak lr", "final loss (mean)", "steps to target per seed",
              "fraction of the run (mean)"]
    return "\n".join(lines) + "\n" + markdown(header, cells), rows


def table_name(grid: Grid) -> str:
    return "steps_to_target" + ("" if grid.horizon == 1.0 else f"_h{grid.horizon:g}")


def report(grid: Grid, store) -> str:
    configs = choose_configs(grid)
    runs = {(n, lr, s): store.get(spec(grid, n, lr, s, i > 0))
            for i, (n, lr) in enumerate(configs) for s in range(grid.seeds)}
    if None in runs.values():
        return "Not every run of the grid has finished; `run` it first.\n"
    steps = dict(grid.base(False).config)["steps"]
    text = table(configs, runs, grid.seeds, steps)[0]
    if grid.horizon < 1.0:
        short = dict(grid.base(True).config)["steps"]
        text = (f"Candidates train for {short} of the baseline's {steps} steps (their lr "
                f"shape ends there).\n\n{text}")
    return text
