"""The results of a comparison: printed table, loss curves, JSON and CSV files."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pathlib
import platform
from collections.abc import Sequence

import jax
import numpy as np
import optax

from benchmarks.runner import History
from benchmarks.runner.experiment import markdown
from benchmarks.runner.registry import REGISTRY

from .config import Config


def results_table(histories: Sequence[History], cfg: Config) -> str:
    """Validation loss at every quarter of the run, mean step time and its ratio to the first."""
    steps = cfg.table_steps()
    header = ["optimizer"] + [f"val@{s}" for s in steps]
    header += ["best val", "ms/step", "x first", "compile s", "finite"]
    base = histories[0].mean_step_seconds() if histories else float("nan")
    rows = []
    for h in histories:
        best = min(h.val_loss) if h.val_loss else float("nan")
        row = [h.name] + [f"{h.val_at(s):.4f}" for s in steps]
        row += [
            f"{best:.4f}",
            f"{1e3 * h.mean_step_seconds():.1f}",
            f"{h.mean_step_seconds() / base:.2f}",
            f"{h.compile_seconds:.1f}",
            "yes" if h.finite else f"no (step {h.nonfinite_step})",
        ]
        rows.append(row)
    return markdown(header, rows, padded=True)


def _smooth(values, weight=0.9):
    out, acc = [], None
    for v in values:
        acc = v if acc is None else weight * acc + (1 - weight) * v
        out.append(acc)
    return out


def plot_curves(histories: Sequence[History], cfg: Config, path: pathlib.Path) -> pathlib.Path:
    """Save training (EMA-smoothed) and validation loss curves as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for h in histories:
        steps = np.arange(1, len(h.train_loss) + 1)
        (line,) = ax_train.plot(steps, _smooth(h.train_loss), label=h.name)
        ax_val.plot(h.eval_steps, h.val_loss, marker="o", ms=3, color=line.get_color(),
                    label=h.name)
    title = (f"d_model {cfg.d_model}, {cfg.layers} layers, {cfg.heads} heads, seq {cfg.seq_len}, "
             f"batch {cfg.batch_size}{', bf16' if cfg.bf16 else ''}")
    for ax, what in ((ax_train, "training loss (EMA 0.9)"), (ax_val, "validation loss")):
        ax.set_xlabel("step")
        ax.set_ylabel(f"{what}, nats/char")
        ax.grid(alpha=0.3)
        ax.legend()
    finite = [v for h in histories for v in h.val_loss[1:] if math.isfinite(v)]
    if finite:  # zoom past the initial ln(vocab) loss so the differences are visible
        ax_val.set_ylim(min(finite) - 0.05, max(finite) + 0.05)
    fig.suptitle(f"Character-level LM on Python stdlib source: {title}")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _environment() -> dict:
    import flax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "flax": flax.__version__,
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def save_results(histories, cfg, corpus, out_dir: pathlib.Path, table: str, seconds: float):
    """Write ``train_lm.json`` and ``train_lm.csv`` to ``out_dir``; return their paths."""
    payload = {
        "config": dataclasses.asdict(cfg),
        "environment": _environment(),
        "corpus": corpus.summary(),
        "optimizers": {
            h.name: {
                "description": REGISTRY[h.name.partition("@")[0]].description
                if h.name.partition("@")[0] in REGISTRY else "custom",
                **h.to_dict(),
            }
            for h in histories
        },
        "table": table,
        "total_seconds": seconds,
    }
    json_path = out_dir / "train_lm.json"
    json_path.write_text(json.dumps(payload, indent=1, allow_nan=True))
    csv_path = out_dir / "train_lm.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["optimizer", "split", "step", "loss"])
        for h in histories:
            writer.writerows((h.name, "train", i + 1, v) for i, v in enumerate(h.train_loss))
            val_rows = zip(h.eval_steps, h.val_loss, strict=True)
            writer.writerows((h.name, "val", s, v) for s, v in val_rows)
    return json_path, csv_path
