"""The learning-rate sweep's results: per-optimizer summaries, edge flags, table, plot, JSON.

Works on the records of ``benchmarks/sweep.py`` (dicts, one per finished run, with ``task``,
``optimizer``, ``lr`` (``None`` for adafactor's relative-step default), ``seed``,
``centre_lr``, ``final_val_loss`` (``inf`` when the run diverged) and, for the CNN task,
``final_val_accuracy``), so that it can be tested on synthetic records.

The best learning rate of an optimizer minimises the mean final validation loss over seeds;
"loss at best" is that mean ± the standard deviation over seeds (population; for two seeds,
half their difference). A best learning rate at the lowest or highest point of the grid is
flagged as an edge: the optimum may lie beyond it (``sweep.py --extend`` adds points there).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Sequence

import numpy as np


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
class OptimizerSummary:
    """One optimizer's sweep on one task."""

    optimizer: str
    centre_lr: float
    points: list[Point]  # swept learning rates, ascending
    reference: Point | None = None  # adafactor's relative-step default

    @property
    def best(self) -> Point | None:
        """The point of lowest mean final loss (``None`` if every point diverged)."""
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


def summarize(records: Sequence[dict]) -> dict[str, OptimizerSummary]:
    """Group one task's records by optimizer and learning rate (last record of a key wins)."""
    latest = {}
    for r in records:
        latest[(r["optimizer"], lr_key(r["lr"]), r["seed"])] = r
    grouped: dict[str, dict[str, Point]] = {}
    centres = {}
    for r in latest.values():
        points = grouped.setdefault(r["optimizer"], {})
        centres[r["optimizer"]] = r["centre_lr"]
        point = points.setdefault(lr_key(r["lr"]), Point(r["lr"], [], []))
        point.losses.append(float(r["final_val_loss"]))
        if r.get("final_val_accuracy") is not None:
            point.accuracies.append(float(r["final_val_accuracy"]))
    out = {}
    for name, points in grouped.items():
        swept = sorted((p for p in points.values() if p.lr is not None), key=lambda p: p.lr)
        out[name] = OptimizerSummary(name, centres[name], swept, points.get("default"))
    return out


def extension_lrs(summary: OptimizerSummary, spacing: float) -> list[float]:
    """Learning rates one grid step beyond the edge(s) the best lr sits on."""
    edge = summary.edge
    new = []
    if edge in ("low", "both"):
        new.append(canonical_lr(summary.points[0].lr / spacing))
    if edge in ("high", "both"):
        new.append(canonical_lr(summary.points[-1].lr * spacing))
    return new


def canonical_lr(lr: float) -> float:
    """``lr`` rounded to 4 significant digits, so grids from different runs line up."""
    return float(f"{lr:.4g}")


def _ratio_label(ratio: float) -> str:
    return f"×{ratio:.3g}"


def _number(value: float) -> str:
    return "inf" if not math.isfinite(value) else f"{value:.4f}" if abs(value) < 1e3 \
        else f"{value:.3g}"


def _loss_text(point: Point, seeds: int) -> str:
    return _number(point.mean) + ("*" if len(point.losses) < seeds else "")


def _best_text(point: Point | None, seeds: int) -> str:
    if point is None:
        return "diverged"
    spread = "" if math.isnan(point.spread) else f" ± {_number(point.spread)}"
    return _number(point.mean) + spread + ("*" if len(point.losses) < seeds else "")


def markdown_table(summaries: dict[str, OptimizerSummary], seeds: int, *,
                   accuracy: bool = False) -> str:
    """optimizer | centre lr | best lr | loss at best | [acc at best] | loss at each ×centre
    | edge; a ``*`` marks points with fewer seeds than ``seeds``."""
    ratios = sorted({canonical_lr(p.lr / s.centre_lr) for s in summaries.values()
                     for p in s.points})
    header = ["optimizer", "centre lr", "best lr", "loss at best"]
    header += ["acc at best"] if accuracy else []
    header += [_ratio_label(r) for r in ratios] + ["edge"]
    rows = []
    for s in summaries.values():
        best = s.best
        by_ratio = {canonical_lr(p.lr / s.centre_lr): p for p in s.points}
        cells = [s.optimizer, f"{s.centre_lr:.3g}", "—" if best is None else f"{best.lr:.4g}",
                 _best_text(best, seeds)]
        if accuracy:
            cells.append("—" if best is None else f"{best.accuracy:.3f}")
        for ratio in ratios:
            point = by_ratio.get(ratio)
            text = "" if point is None else _loss_text(point, seeds)
            cells.append(f"**{text}**" if point is not None and point is best else text)
        cells.append(f"edge ({s.edge})" if s.edge else "")
        rows.append(cells)
        if s.reference is not None:
            ref = [f"{s.optimizer} (relative step)", "—", "default",
                   _best_text(s.reference, seeds)]
            ref += [f"{s.reference.accuracy:.3f}"] if accuracy else []
            rows.append(ref + [""] * len(ratios) + [""])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def summary_json(summaries: dict[str, OptimizerSummary]) -> dict:
    """JSON-ready per-optimizer results: best lr, loss ± spread, edge, every point."""
    out = {}
    for name, s in summaries.items():
        best = s.best
        entry = {
            "best_lr": None if best is None else best.lr,
            "loss": None if best is None else best.mean,
            "spread": None if best is None or math.isnan(best.spread) else best.spread,
            "edge": s.edge,
            "centre_lr": s.centre_lr,
            "points": {lr_key(p.lr): p.losses for p in s.points},
        }
        if best is not None and best.accuracies:
            entry["accuracy"] = best.accuracy
        if s.reference is not None:
            entry["default_lr_loss"] = s.reference.mean
        out[name] = entry
    return out


def write_summary(path: pathlib.Path, tasks: dict[str, dict]) -> pathlib.Path:
    """Write ``{"tasks": {task: {"config_hash", "config", "optimizers": {...}}}}``."""
    path.write_text(json.dumps({"tasks": tasks}, indent=1))
    return path


def load_best_lrs(path: str | pathlib.Path = "out/sweep/summary.json") -> dict[str, dict]:
    """``{task: {optimizer: best lr}}`` from a sweep's ``summary.json`` (None: all diverged)."""
    tasks = json.loads(pathlib.Path(path).read_text())["tasks"]
    return {task: {name: entry["best_lr"] for name, entry in info["optimizers"].items()}
            for task, info in tasks.items()}


def plot_task(summaries: dict[str, OptimizerSummary], title: str,
              path: pathlib.Path) -> pathlib.Path:
    """Final validation loss vs peak learning rate (log x), one line per optimizer; diverged
    or off-scale points sit on the top edge as open triangles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = [p.mean for s in summaries.values() for p in s.points if math.isfinite(p.mean)]
    fig, ax = plt.subplots(figsize=(10, 6), constrained_layout=True)
    top = min(max(finite), min(finite) + 1.5) + 0.05 if finite else 1.0
    colours = plt.get_cmap("tab20").colors
    colours = colours[0::2] + colours[1::2]  # the 10 strong colours first, then their pales
    for i, s in enumerate(summaries.values()):
        colour, marker = colours[i % len(colours)], "osD^v<>p"[i % 8]
        xs = np.array([p.lr for p in s.points])
        ys = np.array([p.mean for p in s.points])
        errs = np.array([0.0 if math.isnan(p.spread) else p.spread for p in s.points])
        ok = np.isfinite(ys) & (ys <= top)
        ax.errorbar(xs[ok], ys[ok], yerr=errs[ok], color=colour, marker=marker, ms=4,
                    capsize=2, label=s.optimizer)
        ax.plot(xs[~ok], np.full((~ok).sum(), top), linestyle="none", marker="^",
                mfc="none", color=colour)
        if s.reference is not None and math.isfinite(s.reference.mean):
            ax.axhline(s.reference.mean, color=colour, linestyle=":", lw=1,
                       label=f"{s.optimizer} (relative step)")
    ax.set_xscale("log")
    if finite:
        ax.set_ylim(min(finite) - 0.05, top + 0.02)
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final validation loss (mean over seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
