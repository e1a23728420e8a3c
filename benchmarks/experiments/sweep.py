"""Learning-rate sweep of every ready optimizer and the baselines, on the LM and the CNN.

    python -m benchmarks run sweep                      # the full sweep (hours)
    python -m benchmarks run sweep --set tasks=cnn --set optimizers=muon,adamw --set seeds=1
    python -m benchmarks run sweep --set extend=2       # rounds past each edge optimum
    python -m benchmarks run sweep --set seeds=2 --set focus=3
    python -m benchmarks report sweep

Tasks: ``lm`` is the main job (the character transformer of ``benchmarks/lm``, 300 steps);
``cnn`` a four-layer CNN on generated 16x16 images of 10 classes (``benchmarks/cnn_task``,
300 steps of 64 images) whose conv kernels take optorth's matrix path. Optimizers:
``optorth.optimizers.READY`` and the baselines ``adamw`` and ``optax_muon_routed``, built by
`benchmarks.runner.registry.build` (the main job's lr shape, AdamW fallback 3e-3), each at
``grid_points`` peak lrs ``spacing`` apart around its registry centre (adafactor's relative
step runs as a reference too), for seeds 0..``seeds``−1. ``focus`` keeps only the N rates
around each optimum so far (e.g. for more seeds); ``extend`` adds rounds of one point past
each edge optimum.

The best lr minimises the mean final validation loss over seeds; "loss at best" is that mean
± the standard deviation over seeds. A best lr on the grid's edge is flagged. Cost on the
2-core CPU: one lm run about 36 s idle, one cnn run about 5 s; the whole sweep (142 runs per
task) about 1.6 h idle.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from benchmarks.runner import registry
from benchmarks.runner.experiment import (
    canonical_lr,
    config_items,
    lr_grid,
    markdown,
    task_config,
)
from benchmarks.runner.spec import RunSpec

SPACINGS = {"2": 2.0, "sqrt10": math.sqrt(10.0)}


@dataclasses.dataclass(frozen=True)
class Grid:
    tasks: tuple[str, ...] = ("lm", "cnn")
    optimizers: tuple[str, ...] = ()  # () = READY and the baselines
    grid_points: int = 5
    spacing: str = "2"
    seeds: int = 2
    steps: int = 0  # 0 = the task's default
    focus: int = 0
    extend: int = 0
    quick: bool = False

    @classmethod
    def smoke(cls) -> Grid:
        return cls(tasks=("cnn",), optimizers=("muon", "adamw"), grid_points=2, seeds=1,
                   steps=12, quick=True)

    def names(self) -> tuple[str, ...]:
        return self.optimizers or registry.ready() + registry.BASELINES

    def base(self, task: str) -> RunSpec:
        changes = {"steps": self.steps} if self.steps else {}
        cfg = task_config(task, quick=self.quick, **changes)
        return RunSpec("sweep", task, config_items(cfg))


# --------------------------------------------------------------------------- summaries


def lr_key(lr: float | None) -> str:
    """The canonical text of a learning rate (``"default"`` for adafactor's relative step)."""
    return "default" if lr is None else f"{lr:.6g}"


@dataclasses.dataclass
class Point:
    """Every seed's result at one learning rate."""

    lr: float | None
    losses: list[float]
    accuracies: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.losses)) if self.losses else math.inf

    @property
    def spread(self) -> float:
        """Standard deviation over seeds (NaN for one seed or a diverged seed)."""
        finite = all(math.isfinite(v) for v in self.losses)
        return float(np.std(self.losses)) if finite and len(self.losses) > 1 else math.nan

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.accuracies)) if self.accuracies else math.nan


@dataclasses.dataclass
class Summary:
    """One optimizer's sweep on one task."""

    optimizer: str
    centre_lr: float
    points: list[Point]  # swept learning rates, ascending
    reference: Point | None = None  # adafactor's relative-step default

    @property
    def best(self) -> Point | None:
        finite = [p for p in self.points if math.isfinite(p.mean)]
        return min(finite, key=lambda p: p.mean) if finite else None

    @property
    def edge(self) -> str | None:
        """``"low"``/``"high"`` when the best lr is the lowest/highest swept one, ``"both"``
        for a single point, ``"low"`` when every point diverged (try smaller), else None."""
        if not self.points:
            return None
        best = self.best
        if best is None:
            return "low"
        low, high = best is self.points[0], best is self.points[-1]
        return "both" if low and high else "low" if low else "high" if high else None

    def extension(self, spacing: float) -> list[float]:
        """Learning rates one grid step beyond the edge(s) the best lr sits on."""
        new = []
        if self.edge in ("low", "both"):
            new.append(canonical_lr(self.points[0].lr / spacing))
        if self.edge in ("high", "both"):
            new.append(canonical_lr(self.points[-1].lr * spacing))
        return new


def summarize(runs: list[tuple[RunSpec, dict]]) -> dict[str, Summary]:
    """Group one task's runs by optimizer and learning rate."""
    grouped: dict[str, dict[str, Point]] = {}
    for spec, result in runs:
        points = grouped.setdefault(spec.optimizer, {})
        point = points.setdefault(lr_key(spec.lr), Point(spec.lr, [], []))
        point.losses.append(float(result["final_val_loss"]))
        if result.get("final_val_accuracy") is not None:
            point.accuracies.append(float(result["final_val_accuracy"]))
    return {name: Summary(name, registry.REGISTRY[name].centre,
                          sorted((p for p in pts.values() if p.lr is not None),
                                 key=lambda p: p.lr), pts.get("default"))
            for name, pts in grouped.items()}


def task_runs(grid: Grid, store, task: str) -> list[tuple[RunSpec, dict]]:
    base = grid.base(task)
    return [(s, r) for s, r in store.select(experiment="sweep", task=task, config=base.config)
            if s.seed < grid.seeds and s.optimizer in grid.names()]


def focus_window(lrs: list[float], best: float, points: int) -> list[float]:
    """The ``points`` consecutive learning rates of sorted ``lrs`` centred on ``best``."""
    i = lrs.index(best)
    start = min(max(0, i - points // 2), max(0, len(lrs) - points))
    return lrs[start:start + points]


# --------------------------------------------------------------------------- plan


def plan(grid: Grid, store) -> list[RunSpec]:
    """The grid, every lr already recorded (finishing partial points), adafactor's relative
    step, and with ``extend`` one point past each edge optimum."""
    spacing, todo = SPACINGS[grid.spacing], []
    for task in grid.tasks:
        base, runs = grid.base(task), task_runs(grid, store, task)
        summaries = summarize(runs)
        for name in grid.names():
            lrs = set(lr_grid(registry.REGISTRY[name].centre, grid.grid_points, spacing))
            lrs |= {s.lr for s, _ in runs if s.optimizer == name and s.lr is not None}
            best = summaries[name].best if name in summaries else None
            if grid.focus and best is not None:
                lrs = focus_window(sorted(lrs), best.lr, grid.focus)
            if grid.extend and name in summaries:
                lrs |= set(summaries[name].extension(spacing))
            lrs = sorted(lrs) + ([None] if name == "adafactor" else [])
            todo += [base.replace(optimizer=name, lr=lr, seed=seed)
                     for lr in lrs for seed in range(grid.seeds)]
    return todo


def rounds(grid: Grid) -> int:
    return 1 + grid.extend


# --------------------------------------------------------------------------- report


def _number(value: float) -> str:
    return "inf" if not math.isfinite(value) else f"{value:.4f}" if abs(value) < 1e3 \
        else f"{value:.3g}"


def _best_text(point: Point | None, seeds: int) -> str:
    if point is None:
        return "diverged"
    spread = "" if math.isnan(point.spread) else f" ± {_number(point.spread)}"
    return _number(point.mean) + spread + ("*" if len(point.losses) < seeds else "")


def table(summaries: dict[str, Summary], seeds: int, *, accuracy: bool = False) -> str:
    """optimizer | centre lr | best lr | loss at best | [acc at best] | loss at each ×centre
    | edge; a ``*`` marks points with fewer seeds than ``seeds``, bold the best."""
    ratios = sorted({canonical_lr(p.lr / s.centre_lr) for s in summaries.values()
                     for p in s.points})
    header = ["optimizer", "centre lr", "best lr", "loss at best"]
    header += (["acc at best"] if accuracy else []) + [f"×{r:.3g}" for r in ratios] + ["edge"]
    rows = []
    for s in summaries.values():
        best = s.best
        by_ratio = {canonical_lr(p.lr / s.centre_lr): p for p in s.points}
        cells = [s.optimizer, f"{s.centre_lr:.3g}", "—" if best is None else f"{best.lr:.4g}",
                 _best_text(best, seeds)]
        cells += ["—" if best is None else f"{best.accuracy:.3f}"] if accuracy else []
        for ratio in ratios:
            point = by_ratio.get(ratio)
            text = "" if point is None else (_number(point.mean)
                                             + ("*" if len(point.losses) < seeds else ""))
            cells.append(f"**{text}**" if point is not None and point is best else text)
        rows.append(cells + [f"edge ({s.edge})" if s.edge else ""])
        if s.reference is not None:
            ref = [f"{s.optimizer} (relative step)", "—", "default",
                   _best_text(s.reference, seeds)]
            rows.append(ref + ([f"{s.reference.accuracy:.3f}"] if accuracy else [])
                        + [""] * len(ratios) + [""])
    return markdown(header, rows)


def best_points(grid: Grid, store, task: str = "lm") -> dict[str, Point]:
    """Each optimizer's best point on ``task`` (for the other experiments)."""
    return {n: s.best for n, s in summarize(task_runs(grid, store, task)).items() if s.best}


def report(grid: Grid, store) -> str:
    parts = []
    for task in grid.tasks:
        summaries = summarize(task_runs(grid, store, task))
        order = [n for n in grid.names() if n in summaries]
        summaries = {n: summaries[n] for n in order}
        parts.append(f"## {task} (config {grid.base(task).key[:12]})\n\n"
                     + table(summaries, grid.seeds, accuracy=task == "cnn"))
    return "\n\n".join(parts) + (
        "\n\nLoss: final validation loss, mean ± std over seeds; ×c: lr / centre lr; "
        "**bold**: best lr; `*`: fewer seeds than asked for; inf: diverged.\n")
