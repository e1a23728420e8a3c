"""Which fallback for ``factored_muon``? Its non-matrix leaves under several optimizers.

    python -m benchmarks run fallback_sweep                   # the default grid, 2 seeds
    python -m benchmarks run fallback_sweep --set fallbacks=adafactor_abs@0.003,adamw@0.003
    python -m benchmarks report fallback_sweep

Trains the main job with ``optorth.factored_muon`` at its defaults (its default lr as the
peak of the main job's lr shape) except the fallback, the optimizer of embeddings, head and
norm gains, each ``kind@lr`` at a constant ``lr``: ``adafactor_abs`` is
``optorth.adafactor(lr, multiply_by_parameter_scale=False)`` (absolute steps),
``adafactor_rel`` ``optorth.adafactor(lr)`` (steps relative to each leaf's RMS), ``adamw``
``optorth.optimizers.default_fallback()``'s AdamW at ``lr``. About 50 s per run.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import optax

from benchmarks.experiments import sweep
from benchmarks.runner.experiment import make_task, markdown, run_spec
from benchmarks.runner.registry import build

GRID = ("adafactor_abs@0.0003", "adafactor_abs@0.001", "adafactor_abs@0.003",
        "adafactor_abs@0.01", "adafactor_rel@0.01", "adafactor_rel@0.03", "adamw@0.003")


@dataclasses.dataclass(frozen=True)
class Grid:
    fallbacks: tuple[str, ...] = GRID
    seeds: int = 2
    quick: bool = False

    @classmethod
    def smoke(cls) -> Grid:
        return cls(fallbacks=("adamw@0.003",), seeds=1, quick=True)


def make_fallback(kind: str, lr: float):
    import optorth

    if kind == "adafactor_abs":
        return optorth.adafactor(lr, multiply_by_parameter_scale=False)
    if kind == "adafactor_rel":
        return optorth.adafactor(lr)
    if kind == "adamw":  # default_fallback() at another lr
        return optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-10, weight_decay=0.0)
    raise ValueError(f"unknown fallback kind {kind!r}; choose adafactor_abs, adafactor_rel, adamw")


def parse(specs) -> list[tuple[str, float]]:
    """``["kind@lr", ...]`` → ``[(kind, lr), ...]``, each kind checked."""
    out = []
    for item in filter(None, (s.strip() for s in specs)):
        kind, _, lr = item.partition("@")
        make_fallback(kind, float(lr))
        out.append((kind, float(lr)))
    return out


def spec(grid: Grid, kind: str, lr: float, seed: int):
    base = sweep.Grid(quick=grid.quick).base("lm")
    return base.replace(experiment="fallback_sweep", optimizer="factored_muon", seed=seed,
                        options={"fallback": kind, "fallback_lr": lr})


def plan(grid: Grid, store) -> list:
    return [spec(grid, k, lr, s) for k, lr in parse(grid.fallbacks) for s in range(grid.seeds)]


def execute(spec) -> dict:
    task = make_task(spec)
    fallback = make_fallback(spec.option("fallback"), spec.option("fallback_lr"))
    return run_spec(spec, build("factored_muon", task.cfg, defaults=True, fallback=fallback),
                    task)


def table(grid_points, runs: dict) -> str:
    rows = []
    for kind, lr in grid_points:
        losses = [r["final_val_loss"] for (k, f, _), r in sorted(runs.items())
                  if (k, f) == (kind, lr)]
        if losses:
            rows.append([kind, f"{lr:g}", f"{np.mean(losses):.4f}",
                         ", ".join(f"{x:.4f}" for x in losses)])
    return markdown(["fallback", "lr", "final loss (mean)", "per seed"], rows)


def report(grid: Grid, store) -> str:
    points = parse(grid.fallbacks)
    runs = {(k, lr, s): store.get(spec(grid, k, lr, s)) for k, lr in points
            for s in range(grid.seeds)}
    return table(points, {k: r for k, r in runs.items() if r})
