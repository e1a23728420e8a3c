"""Newton–Schulz telemetry of the main job: per-layer orthogonalization error over steps.

With ``python benchmarks/train_lm.py --ns-telemetry 8`` every optimizer that runs an optorth
Newton–Schulz is built with ``NewtonSchulz(telemetry=8)``; a `TelemetryRecorder` reads
``optorth.blocks.ns_telemetry`` after each step (RMS(σ² − 1) of each layer's orthogonalized
update, estimated with 8 random probes, and the iteration's dtype) and `plot_telemetry`
draws one panel per optimizer.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

import numpy as np


class TelemetryRecorder:
    """A per-step callback of `benchmarks.lm.train` that keeps the Newton–Schulz telemetry.

    Attributes:
      steps: the completed steps at which the telemetry was read.
      errors: ``{layer path: [error per recorded step]}``.
      dtype: the iteration's compute dtype name (``None`` before the first step).
    """

    def __init__(self):
        self.steps: list[int] = []
        self.errors: dict[str, list[float]] = {}
        self.dtype: str | None = None

    def __call__(self, info) -> None:
        import optorth

        report = optorth.blocks.ns_telemetry(info.opt_state)
        self.dtype = report["dtype"]
        self.steps.append(info.step)
        for path, value in report["errors"].items():
            self.errors.setdefault(path, []).append(value)

    def to_dict(self) -> dict:
        return {"dtype": self.dtype, "steps": self.steps, "errors": self.errors}


def plot_telemetry(records: Mapping[str, TelemetryRecorder], path: pathlib.Path,
                   title: str = "") -> pathlib.Path:
    """One panel per optimizer: each layer's orthogonalization error against the step.

    Args:
      records: ``{optimizer name: its TelemetryRecorder}`` (at least one).
      path: the PNG to write.
      title: the figure's title (e.g. the model's shape).

    Returns:
      ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        raise ValueError("plot_telemetry: no optimizer recorded Newton–Schulz telemetry; run "
                         "at least one optorth Newton–Schulz optimizer (e.g. muon).")
    fig, axes = plt.subplots(1, len(records), figsize=(max(8.0, 5.5 * len(records)), 5.0),
                             constrained_layout=True, squeeze=False)
    colors = plt.get_cmap("tab20").colors  # distinct colours for up to 20 layers
    for ax, (name, rec) in zip(axes[0], records.items(), strict=True):
        for i, (layer, values) in enumerate(rec.errors.items()):
            ax.plot(rec.steps, values, lw=1, label=layer, color=colors[i % len(colors)])
        ax.set_title(f"{name} (Newton–Schulz in {rec.dtype})")
        ax.set_xlabel("step")
        ax.set_ylabel("RMS(σ² − 1) of the orthogonalized update")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=7)
    fig.suptitle(f"Newton–Schulz telemetry per layer{': ' + title if title else ''}")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def summary(records: Mapping[str, TelemetryRecorder]) -> str:
    """One line per optimizer: dtype, mean error over layers and steps, largest and where."""
    lines = []
    for name, rec in records.items():
        values = np.array(list(rec.errors.values()))
        layer, step = np.unravel_index(np.nanargmax(values), values.shape)
        lines.append(f"{name}: Newton–Schulz in {rec.dtype}, orthogonalization error mean "
                     f"{np.nanmean(values):.4f}, largest {values[layer, step]:.4f} "
                     f"({list(rec.errors)[layer]}, step {rec.steps[step]})")
    return "\n".join(lines)
