"""The benchmark's outputs: markdown tables, the plot and a JSON record."""

from __future__ import annotations

import json
import math
import pathlib

from benchmarks.runner.experiment import markdown

from .loop import MethodResult

COLUMNS = ("method", "trainable", "lr", "B test", "A val", "forgetting", "ms/step", "x full",
           "temp MiB", "x full ", "state MiB", "x full  ", "merge Δlogit")


def summary_rows(results: list[MethodResult], a_before: float, step_s: dict,
                 merge_gap: dict) -> list[dict]:
    """One dict per method: the chosen run's losses and the method's costs (ratios to full)."""
    full = results[0]
    rows = []
    for r in results:
        best = r.best
        rows.append({
            "method": r.method.label, "key": r.method.name, "trainable": r.trainable,
            "lr": best.rate, "b_test": best.b_test, "a_val": best.a_val,
            "forgetting": best.a_val - a_before,
            "ms_per_step": 1e3 * step_s[r.method.name],
            "step_ratio": step_s[r.method.name] / step_s[full.method.name],
            "temp_mib": r.temp_bytes / 2**20, "temp_ratio": r.temp_bytes / full.temp_bytes,
            "state_mib": r.state_bytes / 2**20, "state_ratio": r.state_bytes / full.state_bytes,
            "merge_gap": merge_gap[r.method.name], "compile_s": r.compile_seconds,
            "finite": best.history.nonfinite_step is None,
        })
    return rows


def main_table(rows: list[dict]) -> str:
    body = [[r["method"], f"{r['trainable']:,}", f"{r['lr']:g}", f"{r['b_test']:.4f}",
             f"{r['a_val']:.4f}", f"{r['forgetting']:+.4f}", f"{r['ms_per_step']:.1f}",
             f"{r['step_ratio']:.2f}", f"{r['temp_mib']:.2f}", f"{r['temp_ratio']:.2f}",
             f"{r['state_mib']:.3f}", f"{r['state_ratio']:.3f}",
             "n/a" if r["key"] == "full" else f"{r['merge_gap']:.1e}"] for r in rows]
    return markdown(COLUMNS, body, padded=True)


def sweep_table(results: list[MethodResult]) -> str:
    """Final target-val loss of every (method, rate); ``*`` marks the chosen rate."""
    body = []
    for r in results:
        cells = []
        for run in r.runs:
            mark = "*" if run is r.best else ""
            loss = "diverged" if run.history.nonfinite_step else f"{run.final_val:.4f}"
            cells.append(f"{run.rate:g}: {loss}{mark}")
        body.append([r.method.label] + cells)
    width = max(len(r.runs) for r in results)
    return markdown(["method"] + [f"rate {i + 1}: B val" for i in range(width)],
                    [row + [""] * (width + 1 - len(row)) for row in body], padded=True)


def plot(results: list[MethodResult], a_before: float, b_before: float,
         path: pathlib.Path) -> pathlib.Path:
    """Target val loss vs step (chosen rate) and forgetting vs target loss (every rate).

    The scatter's axes cover the runs that improved the target loss (``b_test < b_before``);
    runs that made it worse (a too-high rate) are left off-scale and counted in the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, trade) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for r in results:
        best = r.best
        label = f"{r.method.label} ({r.trainable:,} params, lr {best.rate:g})"
        h = best.history
        (line,) = curves.plot(h.eval_steps, h.val_loss, marker="o", ms=3, label=label)
        for run in r.runs:
            if run.history.nonfinite_step is None and math.isfinite(run.b_test):
                chosen = run is best
                trade.scatter(run.b_test, run.a_val - a_before, color=line.get_color(),
                              s=60 if chosen else 18, alpha=1.0 if chosen else 0.4,
                              label=r.method.label if chosen else None)
    finals = [v for r in results for v in r.best.history.val_loss[1:] if math.isfinite(v)]
    if finals:
        curves.set_ylim(min(finals) - 0.05, max(finals) + 0.1)
    runs = [run for r in results for run in r.runs if math.isfinite(run.b_test)]
    kept = [run for run in runs if run.b_test < b_before]
    if kept:
        xs, ys = [run.b_test for run in kept], [run.a_val - a_before for run in kept]
        pad_x, pad_y = 0.05 * (max(xs) - min(xs) + 0.01), 0.05 * (max(ys) - min(ys) + 0.01)
        trade.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
        trade.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    off = len(runs) - len(kept)
    curves.set(xlabel="fine-tuning step", ylabel="target (prose) val loss, nats/char",
               title="fine-tuning on source B (chosen rate)")
    trade.set(xlabel="target (prose) test loss, nats/char",
              ylabel="forgetting: source-A val loss increase",
              title="forgetting vs target loss (large dot: chosen rate)")
    if off:
        trade.text(0.99, 0.99, f"{off} run(s) worse than no fine-tuning: off-scale",
                   transform=trade.transAxes, ha="right", va="top", fontsize=8)
    for ax in (curves, trade):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_json(path: pathlib.Path, *, config: dict, sources: dict, pretrain: dict,
              results: list[MethodResult], rows: list[dict], tables: dict) -> pathlib.Path:
    def run_dict(run):
        return {"method": run.method, "rate": run.rate, "eval_steps": run.history.eval_steps,
                "b_val": run.history.val_loss, "train_loss": run.history.train_loss,
                "step_seconds": run.history.step_seconds, "b_test": run.b_test,
                "a_val": run.a_val, "nonfinite_step": run.history.nonfinite_step}

    payload = {
        "config": config, "sources": sources, "pretrain": pretrain, "summary": rows,
        "methods": {r.method.name: {"label": r.method.label, "trainable": r.trainable,
                                    "runs": [run_dict(run) for run in r.runs]}
                    for r in results},
        "tables": tables,
    }
    path.write_text(json.dumps(payload, indent=1, allow_nan=True))
    return path
