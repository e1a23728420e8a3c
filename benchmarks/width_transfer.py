"""Width transfer: does the best learning rate stay put as the model widens?

    python benchmarks/width_transfer.py                       # the full sweep (hours, see below)
    python benchmarks/width_transfer.py --quick               # tiny smoke run, 1-2 minutes
    python benchmarks/width_transfer.py --extend              # add lrs past any edge optimum
    python benchmarks/width_transfer.py --report              # tabulate finished runs only
    python benchmarks/width_transfer.py --seeds 2 --steps 150 --widths 64,128

The claim: with the right shape scale, the optimal learning rate of a spectral (Muon) step
transfers across width (Bernstein & Newhouse, "Old Optimizer, New Norm: An Anthology",
arXiv 2409.20325; "Modular Duality in Deep Learning", arXiv 2410.21265), and Moonlight's
``consistent_rms`` scale matches AdamW's update RMS so that AdamW's learning rate carries over
(Liu et al., "Muon is Scalable for LLM Training", arXiv 2502.16982).

The sweep trains the main job's character-level transformer (``benchmarks/lm``) at each
``d_model`` of ``--widths`` (64, 128, 256) with the same depth (2 blocks), the same steps,
batches, data and learning-rate shape, and ``heads = d_model / head_dim`` so that the head
dimension stays ``--head-dim`` (32) at every width. For each optimizer of
`lm.width_registry.WIDTH_OPTIMIZERS` (AdamW, and ``optorth.muon`` with each shape-scale
convention of ``optorth.norms.CONVENTIONS``: ``keller``, ``consistent_rms`` with rms 0.2,
``spectral``) it sweeps the peak learning rate over ``--points`` (7) values a factor 2 apart,
centred on the optimizer's guess of the optimum at width 128. The Muon variants' AdamW
fallback path (embeddings, head, norm gains) keeps a fixed peak lr of 3e-3, so only the
matrix path's lr varies. ``--extend`` then adds points past a grid edge wherever the best
loss lies on that edge, until every optimum is interior (at most ``--extend`` points a side).

The loss of a run is the final validation loss (nats/char; a non-finite run counts as
infinite). Per optimizer and width, the best lr is the grid argmin of the loss (mean over
seeds), and a smoother estimate is the vertex of the parabola through the argmin and its
two neighbours in log2 lr (it stays within half a grid step of the argmin and is exact for a
quadratic bowl). The log2 shift of the optimal lr per doubling of width is the
least-squares slope of log2(best lr) against log2(width) (for widths a factor 2 apart, the
mean of the successive shifts); 0 means the lr transfers, -1 means it halves per doubling.

Outputs under ``--out`` (``out/width_transfer``): ``runs.jsonl`` (one line per finished run;
a rerun with the same settings skips them, ``--fresh`` drops them), ``width_transfer.md``
(per optimizer: width | best lr | loss at best | loss at each lr, and the shift line),
``width_transfer.png`` (loss against lr, a panel per optimizer, a curve per width) and
``summary.json``.

Cost. One 300-step run of ``muon_keller`` (compilation and evaluation included), measured on
the shared 2-core CPU of the development machine while it was heavily loaded (load average
8-10): d_model 64: 78 s (179 ms/step), 128: 159 s (477 ms/step), 256: 584 s (1.85 s/step);
AdamW is slightly cheaper (no Newton–Schulz). The default sweep is 4 optimizers x 7 lrs x 3
widths = 84 runs per seed, 28 per width: 28 x (78 + 159 + 584) s = 6.4 h per seed at that
load. The main job's committed result (``benchmarks/results/train_lm_cpu.json``) has 120
ms/step at d_model 128, 4x less than measured here, so on a quiet 2-core CPU expect about
1.6-2 h per seed. ``--seeds 2`` doubles it, ``--steps 150`` halves it, and each ``--extend``
point adds one run at its width (quiet: roughly 20 s, 40 s, 150 s at d_model 64, 128, 256).
``--quick`` (24 runs of a 1-layer model, mostly compilation) took 2.3 min at load
average 5-7, about 1.3 min of CPU time.

Design notes: ``heads = d_model / 32`` keeps the head dimension fixed (2, 4, 8 heads; 4 at
d_model 128 is the main job's shape); the Muon variants' fallback lr stays 3e-3 at every width,
so any drift of the embedding/head optimum with width is common to all Muon variants.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.lm import Config, load_corpus, train, width_registry  # noqa: E402

DEFAULT_WIDTHS = (64, 128, 256)
QUICK_WIDTHS = (16, 32)


# ----------------------------------------------------------------------------- the runs


def width_config(base: Config, width: int, head_dim: int, seed: int) -> Config:
    """``base`` at ``d_model=width`` with ``width // head_dim`` heads and ``seed``."""
    if width < head_dim or width % head_dim:
        raise ValueError(f"width {width} is not a multiple of head_dim={head_dim}; choose "
                         f"widths that are, or another --head-dim")
    return base.replace(d_model=width, heads=width // head_dim, seed=seed)


def lr_grid(name: str, points: int) -> list[float]:
    """``points`` learning rates a factor 2 apart, centred on the optimizer's guess."""
    centre = width_registry.WIDTH_OPTIMIZERS[name][1]
    return [centre * 2.0**k for k in range(-(points // 2), points - points // 2)]


def run_key(name: str, width: int, seed: int, lr: float) -> tuple:
    return (name, int(width), int(seed), f"{lr:.6g}")


def record_key(record: dict) -> tuple:
    return run_key(record["optimizer"], record["width"], record["seed"], record["lr"])


def run_one(name, width, seed, lr, base, head_dim, corpus, progress) -> dict:
    """Train one (optimizer, width, seed, lr) and return its JSONL record."""
    cfg = width_config(base, width, head_dim, seed)
    start = time.perf_counter()
    history = train(width_registry.build_width_optimizer(name, cfg, lr), cfg, corpus=corpus,
                    name=f"{name} d{width} lr{lr:.3g}", progress=progress)
    losses = history.train_loss
    tail = losses[-max(1, len(losses) // 10):]
    val = history.val_loss[-1] if history.finite else math.inf
    return {
        "optimizer": name, "width": width, "seed": seed, "lr": lr, "heads": cfg.heads,
        "val": val, "train": float(np.mean(tail)) if history.finite else math.inf,
        "steps_run": len(losses), "nonfinite_step": history.nonfinite_step,
        "seconds": time.perf_counter() - start,
        "ms_per_step": 1e3 * history.mean_step_seconds(),
    }


def settings_of(base: Config, head_dim: int) -> dict:
    """What must match for an earlier run to count: all but width, heads and seed."""
    import jax

    config = dataclasses.asdict(base)
    for field in ("d_model", "heads", "seed"):
        config.pop(field)
    return {"config": config, "head_dim": head_dim,
            "fallback_lr": width_registry.WIDTH_FALLBACK_LR,
            "consistent_rms": width_registry.WIDTH_CONSISTENT_RMS,
            "platform": jax.devices()[0].platform}


def load_records(path: pathlib.Path, settings: dict) -> list[dict]:
    """The records of ``path`` with these settings (later duplicates win)."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = {record_key(r): r for r in lines if r["settings"] == settings}
    return list(kept.values())


def drop_records(path: pathlib.Path, settings: dict) -> None:
    """Remove the records with these settings from ``path`` (``--fresh``)."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["settings"] != settings]
        path.write_text("".join(line + "\n" for line in kept))


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
    successive = (np.diff(ll) / np.diff(lw)).tolist()
    slope = float(np.polyfit(lw, ll, 1)[0]) if len(lw) >= 2 else math.nan
    return {"slope": slope, "successive": successive}


def summarize(records: list[dict]) -> dict:
    """Per optimizer: the best lr per width and the shift per doubling (grid and smooth)."""
    out = {}
    for name, by_width in curves(records).items():
        widths = list(by_width)
        best = {w: best_lr(by_width[w]) for w in widths}
        out[name] = {
            "widths": widths,
            "best": {str(w): best[w] for w in widths},
            "losses": {str(w): {f"{lr:.6g}": v for lr, v in by_width[w].items()}
                       for w in widths},
            "shift_grid": shift_per_doubling(widths, [best[w]["lr"] for w in widths]),
            "shift_smooth": shift_per_doubling(widths, [best[w]["smooth_lr"] for w in widths]),
            "edge_widths": [w for w in widths if best[w]["edge"]],
        }
    return out


def extension_points(records: list[dict], names, widths, seeds) -> list[tuple]:
    """One more lr past each grid edge whose loss is the best (for every seed)."""
    todo = []
    table = curves(records)
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


# ----------------------------------------------------------------------------- reports


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


def plot(summary: dict, path: pathlib.Path) -> pathlib.Path:
    """Loss against lr: one panel per optimizer, one curve per width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(summary))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False,
                             constrained_layout=True)
    for ax, (name, s) in zip(axes[0], summary.items(), strict=False):
        bests = [b["loss"] for b in s["best"].values() if b["finite"]] or [0.0]
        finite = [v for w in s["losses"].values() for v in w.values() if math.isfinite(v)]
        top = min(max(finite, default=1.0) + 0.05, max(bests) + 0.6)
        for w in map(str, s["widths"]):
            pts = sorted((float(lr), v) for lr, v in s["losses"][w].items())
            lrs = [lr for lr, _ in pts]
            ys = [v if math.isfinite(v) else np.nan for _, v in pts]
            (line,) = ax.plot(lrs, ys, marker="o", ms=3, label=f"d_model {w}")
            ax.axvline(s["best"][w]["smooth_lr"], color=line.get_color(), ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_ylim(min(bests) - 0.05, top)  # the bowls; diverging points run off the top
        ax.set(title=f"{name} ({s['shift_smooth']['slope']:+.2f}/doubling)",
               xlabel="peak learning rate", ylabel="final val loss, nats/char")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(records, settings, out_dir: pathlib.Path, header: str) -> dict:
    summary = summarize(records)
    text = markdown(summary, header)
    (out_dir / "width_transfer.md").write_text(text)
    (out_dir / "summary.json").write_text(json.dumps(
        {"settings": settings, "runs": len(records), "optimizers": summary}, indent=1))
    if summary:
        plot(summary, out_dir / "width_transfer.png")
    print(text, flush=True)
    return summary


# ----------------------------------------------------------------------------- command line


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--widths", default=None, help="comma-separated d_model values (64,128,256)")
    add("--optimizers", default=",".join(width_registry.WIDTH_DEFAULT_OPTIMIZERS),
        help=f"comma-separated subset of {','.join(width_registry.WIDTH_OPTIMIZERS)}")
    add("--steps", type=int, default=None, help="training steps per run (300; quick 24)")
    add("--seeds", type=int, default=1, help="seeds per point (1); a seed sets init and data")
    add("--points", type=int, default=None, help="lrs per sweep, a factor 2 apart (7; quick 3)")
    add("--extend", type=int, nargs="?", const=2, default=0,
        help="add up to N lrs (2 when bare) past a grid edge holding the optimum")
    add("--head-dim", type=int, default=None, help="attention head width (32; quick 8)")
    add("--quick", action="store_true", help="tiny model, widths 16,32, 3 lrs, 24 steps")
    add("--fresh", action="store_true", help="drop earlier runs with the same settings")
    add("--report", action="store_true", help="tabulate finished runs, train nothing")
    add("--no-progress", action="store_true", help="no progress bars")
    add("--out", default="out/width_transfer", help="output directory (out/width_transfer)")
    return parser


def _plan(argv):
    args = _parser().parse_args(argv)
    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    unknown = sorted(set(names) - set(width_registry.WIDTH_OPTIMIZERS))
    if unknown:
        raise SystemExit(f"unknown optimizers {unknown}; choose from "
                         f"{', '.join(width_registry.WIDTH_OPTIMIZERS)}")
    default_widths = QUICK_WIDTHS if args.quick else DEFAULT_WIDTHS
    widths = [int(w) for w in args.widths.split(",")] if args.widths else list(default_widths)
    points = args.points or (3 if args.quick else 7)
    if points < 1 or args.seeds < 1 or args.extend < 0:
        raise SystemExit("--points and --seeds must be >= 1 and --extend >= 0")
    base = Config.quick() if args.quick else Config()
    steps = args.steps or base.steps
    base = base.replace(steps=steps, eval_every=steps, eval_batches=8 if not args.quick else 2)
    head_dim = args.head_dim or (8 if args.quick else 32)
    for width in widths:
        width_config(base, width, head_dim, 0)
    return args, names, widths, points, base, head_dim


def _run_all(todo, done, base, head_dim, corpus, results, settings, progress):
    for name, width, seed, lr in todo:
        if run_key(name, width, seed, lr) in done:
            continue
        record = run_one(name, width, seed, lr, base, head_dim, corpus, progress)
        record["settings"] = settings
        with results.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        done[record_key(record)] = record
        print(f"{name} d_model {width} seed {seed} lr {lr:.3g}: val {record['val']:.4f}, "
              f"{record['seconds']:.0f} s", flush=True)


def main(argv=None) -> dict:
    args, names, widths, points, base, head_dim = _plan(argv)
    settings = settings_of(base, head_dim)
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "runs.jsonl"
    if args.fresh:
        drop_records(results, settings)
    done = {record_key(r): r for r in load_records(results, settings)}
    header = (f"{base.steps} steps, batch {base.batch_size}x{base.seq_len} chars, "
              f"{base.layers} layers, head_dim {head_dim}, Muon fallback AdamW lr "
              f"{width_registry.WIDTH_FALLBACK_LR}, loss = final validation loss (nats/char), "
              f"mean over {args.seeds} seed(s); bold = best.")
    seeds = list(range(args.seeds))
    if not args.report:
        corpus = load_corpus(base.corpus_chars)
        print(f"width transfer: {names} at d_model {widths}, {points} lrs, seeds {seeds}; "
              f"{len(done)} runs already done", flush=True)
        todo = [(n, w, s, lr) for w in widths for n in names for lr in lr_grid(n, points)
                for s in seeds]
        _run_all(todo, done, base, head_dim, corpus, results, settings, not args.no_progress)
        for _ in range(args.extend):
            todo = extension_points(list(done.values()), names, widths, seeds)
            if not todo:
                break
            _run_all(todo, done, base, head_dim, corpus, results, settings,
                     not args.no_progress)
    selected = [r for r in done.values() if r["optimizer"] in names and r["width"] in widths
                and r["seed"] in seeds]
    return write_outputs(selected, settings, out_dir, header)


if __name__ == "__main__":
    main()
