"""Width transfer: does the best learning rate stay put as the model widens?

    python -m benchmarks run width_transfer --set steps=150 --set points=5 --set extend=1
    python -m benchmarks report width_transfer --set steps=150 --set points=5

The claim: with the right shape scale, the optimal learning rate of a spectral (Muon) step
transfers across width (Bernstein & Newhouse, "Old Optimizer, New Norm: An Anthology",
arXiv 2409.20325; "Modular Duality in Deep Learning", arXiv 2410.21265), and Moonlight's
``consistent_rms`` scale matches AdamW's update RMS so that AdamW's learning rate carries
over (Liu et al., "Muon is Scalable for LLM Training", arXiv 2502.16982).

Trains the main job's transformer at each ``d_model`` of ``widths`` (64, 128, 256; 2 blocks,
``heads = d_model / head_dim``) with AdamW and ``optorth.muon`` under each shape-scale
convention (registry ``muon_keller``, ``muon_consistent_rms`` (rms 0.2), ``muon_spectral``),
sweeping the peak lr over ``points`` values a factor 2 apart around the registry centre; the
Muon fallback keeps 3e-3. ``extend`` adds rounds of one lr past a grid edge holding the
optimum. The best lr per width is the grid argmin of the final validation loss (mean over
seeds) and a parabola vertex through it and its neighbours in log2 lr; the shift per
doubling is the least-squares slope of log2(best lr) against log2(width) (0: transfers).
One 300-step run at d_model 64/128/256 takes roughly 20/40/150 s on a quiet 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from benchmarks.runner import registry
from benchmarks.runner.experiment import config_items, make_task, run_spec, task_config
from benchmarks.runner.spec import RunSpec


@dataclasses.dataclass(frozen=True)
class Grid:
    widths: tuple[int, ...] = (64, 128, 256)
    optimizers: tuple[str, ...] = ("adamw", "muon_keller", "muon_consistent_rms",
                                   "muon_spectral")
    steps: int = 300
    seeds: int = 1
    points: int = 7
    extend: int = 0
    head_dim: int = 32
    quick: bool = False

    @classmethod
    def smoke(cls) -> Grid:
        return cls(widths=(8, 16), optimizers=("muon_spectral",), steps=4, points=1,
                   head_dim=8, quick=True)

    def spec(self, name: str, width: int, seed: int, lr: float) -> RunSpec:
        if width < self.head_dim or width % self.head_dim:
            raise ValueError(f"width {width} is not a multiple of head_dim={self.head_dim}; "
                             "choose widths that are, or another head_dim")
        cfg = task_config("lm", quick=self.quick, steps=self.steps, eval_every=self.steps,
                          eval_batches=2 if self.quick else 8, d_model=width,
                          heads=width // self.head_dim)
        return RunSpec("width_transfer", "lm", config_items(cfg), name, lr, seed)


def lr_grid(name: str, points: int) -> list[float]:
    """``points`` learning rates a factor 2 apart, centred on the registry's centre."""
    centre = registry.REGISTRY[name].centre
    return [centre * 2.0**k for k in range(-(points // 2), points - points // 2)]


def execute(spec: RunSpec) -> dict:
    result = run_spec(spec)
    return {**result, "val": result["final_val_loss"]}


def records(grid: Grid, store) -> list[dict]:
    """``{"optimizer", "width", "seed", "lr", "val"}`` of the grid's finished runs."""
    out = []
    for spec, result in store.select(experiment="width_transfer"):
        config = dict(spec.config)
        if spec.optimizer in grid.optimizers and config.get("d_model") in grid.widths \
                and spec.seed < grid.seeds and grid.spec(spec.optimizer, config["d_model"],
                                                         spec.seed, spec.lr).key == spec.key:
            out.append({"optimizer": spec.optimizer, "width": config["d_model"],
                        "seed": spec.seed, "lr": spec.lr, "val": result["val"]})
    return out


def plan(grid: Grid, store) -> list[RunSpec]:
    todo = [(n, w, s, lr) for w in grid.widths for n in grid.optimizers
            for lr in lr_grid(n, grid.points) for s in range(grid.seeds)]
    if grid.extend:
        todo += extension_points(records(grid, store), grid.optimizers, grid.widths,
                                 range(grid.seeds))
    return [grid.spec(*t) for t in todo]


def rounds(grid: Grid) -> int:
    return 1 + grid.extend


# ----------------------------------------------------------------------------- analysis


def curves(records: list[dict]) -> dict:
    """``{optimizer: {width: {lr: mean val loss over seeds}}}``, everything sorted."""
    acc: dict = {}
    for r in records:
        acc.setdefault(r["optimizer"], {}).setdefault(r["width"], {}).setdefault(
            r["lr"], []).append(float(r["val"]))
    return {name: {w: {lr: float(np.mean(v)) for lr, v in sorted(by_lr.items())}
                   for w, by_lr in sorted(by_width.items())}
            for name, by_width in acc.items()}


def best_lr(curve: dict[float, float]) -> dict:
    """Grid argmin of one loss-vs-lr curve and the parabola-vertex estimate around it."""
    lrs = sorted(curve)
    x = np.log2(lrs)
    y = np.array([curve[lr] for lr in lrs], dtype=float)
    i = int(np.argmin(np.where(np.isfinite(y), y, np.inf)))
    edge = i in (0, len(lrs) - 1)
    smooth = x[i]
    if not edge and np.all(np.isfinite(y[i - 1:i + 2])):
        a, b, _ = np.polyfit(x[i - 1:i + 2], y[i - 1:i + 2], 2)
        if a > 0:
            smooth = float(np.clip(-b / (2 * a), x[i - 1], x[i + 1]))
    return {"lr": float(lrs[i]), "loss": float(y[i]), "smooth_lr": float(2.0**smooth),
            "edge": bool(edge), "finite": bool(np.isfinite(y[i]))}


def shift_per_doubling(widths, lrs) -> dict:
    """log2 shift of ``lrs`` per doubling of ``widths``: LS slope and successive shifts."""
    lw, ll = np.log2(np.asarray(widths, float)), np.log2(np.asarray(lrs, float))
    slope = float(np.polyfit(lw, ll, 1)[0]) if len(lw) >= 2 else math.nan
    return {"slope": slope, "successive": (np.diff(ll) / np.diff(lw)).tolist()}


def summarize(records: list[dict]) -> dict:
    """Per optimizer: the best lr per width and the shift per doubling (grid and smooth)."""
    out = {}
    for name, by_width in curves(records).items():
        widths = list(by_width)
        best = {w: best_lr(by_width[w]) for w in widths}
        out[name] = {
            "widths": widths, "best": {str(w): best[w] for w in widths},
            "losses": {str(w): {f"{lr:.6g}": v for lr, v in by_width[w].items()}
                       for w in widths},
            "shift_grid": shift_per_doubling(widths, [best[w]["lr"] for w in widths]),
            "shift_smooth": shift_per_doubling(widths, [best[w]["smooth_lr"] for w in widths]),
            "edge_widths": [w for w in widths if best[w]["edge"]],
        }
    return out


def extension_points(records: list[dict], names, widths, seeds) -> list[tuple]:
    """One more lr past each grid edge whose loss is the best (for every seed)."""
    todo, table = [], curves(records)
    for name in names:
        for width in widths:
            curve = table.get(name, {}).get(width)
            if not curve or len(curve) < 2:
                continue
            lrs, best = sorted(curve), best_lr(curve)
            if best["edge"] and best["finite"]:
                lr = lrs[0] / 2 if best["lr"] == lrs[0] else lrs[-1] * 2
                todo += [(name, width, seed, lr) for seed in seeds]
    return todo


# ----------------------------------------------------------------------------- report


def _loss_cell(value: float | None, best: bool) -> str:
    if value is None:
        return ""
    text = "div" if not math.isfinite(value) else f"{value:.4f}"
    return f"**{text}**" if best else text


def _shift_line(name: str, s: dict) -> str:
    grid, smooth = s["shift_grid"], s["shift_smooth"]
    fmt = lambda v: ", ".join(f"{x:+.2f}" for x in v)  # noqa: E731
    line = (f"{name}: log2 shift of the optimal lr per doubling of width: "
            f"{grid['slope']:+.2f} on the grid (successive {fmt(grid['successive'])}), "
            f"{smooth['slope']:+.2f} smoothed (successive {fmt(smooth['successive'])})")
    if s["edge_widths"]:
        line += (f"; optimum on a grid edge at width {', '.join(map(str, s['edge_widths']))}"
                 " (rerun with --extend)")
    return line


def markdown(summary: dict, header: str) -> str:
    """A table per optimizer (width | best lr | loss at best | loss at each lr) + shift line."""
    parts = [f"# Width transfer of the optimal learning rate\n\n{header}\n"]
    for name, s in summary.items():
        lrs = sorted({float(lr) for w in s["losses"].values() for lr in w})
        head = ["width", "best lr", "smooth best lr", "loss at best"] + [f"{lr:.3g}"
                                                                        for lr in lrs]
        rows = []
        for w in map(str, s["widths"]):
            b, losses = s["best"][w], s["losses"][w]
            cells = [_loss_cell(losses.get(f"{lr:.6g}"), f"{lr:.6g}" == f"{b['lr']:.6g}")
                     for lr in lrs]
            rows.append([w, f"{b['lr']:.3g}", f"{b['smooth_lr']:.3g}",
                         _loss_cell(b["loss"], False)] + cells)
        table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        table += ["| " + " | ".join(r) + " |" for r in rows]
        parts.append(f"## {name}\n\n" + "\n".join(table) + f"\n\n{_shift_line(name, s)}\n")
    return "\n".join(parts)


def report(grid: Grid, store) -> str:
    base = make_task(grid.spec(grid.optimizers[0], grid.widths[0], 0, 1.0)).cfg
    header = (f"{base.steps} steps, batch {base.batch_size}x{base.seq_len} chars, "
              f"{base.layers} layers, head_dim {grid.head_dim}, Muon fallback AdamW lr "
              f"{registry.FALLBACK_LR}, loss = final validation loss (nats/char), "
              f"mean over {grid.seeds} seed(s); bold = best.")
    summary = summarize(records(grid, store))
    return markdown({n: summary[n] for n in grid.optimizers if n in summary}, header)
