"""Do the ready optimizers' defaults train well? Each against its own best swept run.

    python -m benchmarks run defaults                   # every ready optimizer, 2 seeds
    python -m benchmarks run defaults --set optimizers=muon,root --set seeds=1
    python -m benchmarks report defaults

Trains the main job (the sweep's ``lm`` task) with every optimizer of
``optorth.optimizers.READY`` called with all its defaults (its own fallback, weight decay,
betas, Newton–Schulz), the default learning rate as the peak of the main job's lr shape;
``adafactor`` at its recommended rate (``registry.ADAFACTOR_LEARNING_RATE``). The table sets
the mean final validation loss beside the optimizer's best point of the sweep
(``benchmarks/results/sweep.jsonl``): gap = defaults − best swept, ``ok`` when at most
``tolerance`` (0.05 nats). A changed default learning rate is another run. About 40 s per
run on an idle 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from benchmarks.experiments import sweep
from benchmarks.runner import registry
from benchmarks.runner.experiment import markdown
from benchmarks.runner.store import Store


@dataclasses.dataclass(frozen=True)
class Grid:
    optimizers: tuple[str, ...] = ()  # () = READY
    seeds: int = 2
    tolerance: float = 0.05
    sweep_store: str = "benchmarks/results/sweep.jsonl"
    quick: bool = False

    @classmethod
    def smoke(cls) -> Grid:
        return cls(optimizers=("muon",), seeds=1, quick=True)

    def names(self) -> tuple[str, ...]:
        return self.optimizers or registry.ready()

    def sweep_grid(self) -> sweep.Grid:
        return sweep.Grid(tasks=("lm",), quick=self.quick)


def spec(grid: Grid, name: str, seed: int, experiment: str = "defaults", base=None):
    """``name`` with all its defaults (its default lr recorded in the spec)."""
    base = grid.sweep_grid().base("lm") if base is None else base
    return base.replace(experiment=experiment, optimizer=name, seed=seed,
                        lr=registry.default_learning_rate(name), options={"build": "defaults"})


def plan(grid: Grid, store) -> list:
    unknown = sorted(set(grid.names()) - set(registry.ready()))
    if unknown:
        raise SystemExit(f"unknown optimizers {unknown}; choose from "
                         f"{', '.join(registry.ready())}")
    return [spec(grid, n, s) for n in grid.names() for s in range(grid.seeds)]


def table(names, runs: dict, best: dict, tolerance: float) -> tuple[str, dict]:
    """The Markdown table and ``{optimizer: row}``; ``runs`` maps ``(name, seed)`` to a
    result, ``best`` a name to its best swept `sweep.Point`."""
    rows, cells = {}, []
    for name in names:
        losses = [r["final_val_loss"] for (n, _), r in sorted(runs.items()) if n == name]
        if not losses:
            continue
        mean, point = float(np.mean(losses)), best.get(name)
        gap = mean - point.mean if point else math.nan
        ok = bool(point) and gap <= tolerance
        lr = registry.default_learning_rate(name)
        rows[name] = {"lr": lr, "loss": mean, "losses": losses, "gap": gap, "ok": ok,
                      "best_lr": point.lr if point else None,
                      "best_loss": point.mean if point else None}
        spread = f" ± {np.std(losses):.4f}" if len(losses) > 1 else ""
        cells.append([name, f"{lr:g}", f"{mean:.4f}{spread}", str(len(losses))] + (
            [f"{point.lr:g}", f"{point.mean:.4f} ({len(point.losses)} seeds)", f"{gap:+.4f}",
             "yes" if ok else "NO"] if point else ["—"] * 4))
    header = ["optimizer", "default lr", "loss with defaults", "seeds", "best swept lr",
              "best swept loss", "gap", "ok"]
    return markdown(header, cells), rows


def report(grid: Grid, store) -> str:
    runs = {(n, s): store.get(spec(grid, n, s)) for n in grid.names()
            for s in range(grid.seeds)}
    best = sweep.best_points(grid.sweep_grid(), Store(grid.sweep_store))
    return table(grid.names(), {k: r for k, r in runs.items() if r}, best, grid.tolerance)[0]
