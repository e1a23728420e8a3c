"""diffGrad vs Adam on the main job (the character-level transformer LM of ``benchmarks/lm``).

    python -m benchmarks.micro.contrib_diffgrad [--steps 300] [--seeds 0,1]

Same model, data, batches and learning-rate shape (warmup, cosine to 10%) for every run, as in
``benchmarks/train_lm.py``; optax.adam and optorth.contrib.diffgrad with b1 = 0.9, b2 = 0.95,
eps = 1e-8 on every parameter. diffGrad's friction ξ ∈ [0.5, 1) shortens every step, so a run at
twice the peak learning rate is included as a control (same effective step where ξ ≈ 1/2).
Prints the validation loss at every quarter of the run (mean over seeds) and writes
``out/contrib_diffgrad.png``.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np
import optax

from benchmarks.lm import Config, LMTask, load_corpus
from benchmarks.runner import train
from benchmarks.runner.registry import lr_schedule
from optorth.contrib import diffgrad  # noqa: E402

PEAK = 2e-3
B1, B2, EPS = 0.9, 0.95, 1e-8


def optimizers(cfg):
    return {
        "adam": optax.adam(lr_schedule(PEAK, cfg), B1, B2, EPS),
        "diffgrad": diffgrad(lr_schedule(PEAK, cfg), B1, B2, EPS),
        "diffgrad_2xlr": diffgrad(lr_schedule(2 * PEAK, cfg), B1, B2, EPS),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    base = Config(steps=args.steps, batch_size=16, seq_len=64, eval_every=25)
    corpus = load_corpus(base.corpus_chars)
    start = time.perf_counter()
    results = {}
    for seed in seeds:
        cfg = base.replace(seed=seed)
        for name, tx in optimizers(cfg).items():
            results[name, seed] = train(LMTask(cfg, corpus), tx, name=name)
    names = list(optimizers(base))
    steps = base.table_steps()
    print(f"main job LM (d_model {base.d_model}, {base.layers} layers, seq {base.seq_len}, "
          f"batch {base.batch_size}), {args.steps} steps, peak lr {PEAK}, b1 {B1}, b2 {B2}; "
          f"validation loss (nats/char), mean over seeds {seeds} (± half-range)")
    print(f"{'optimizer':>14} " + " ".join(f"{'step ' + str(s):>15}" for s in steps)
          + f" {'ms/step':>8}")
    for name in names:
        cells = []
        for s in steps:
            vals = np.array([results[name, seed].val_at(s) for seed in seeds])
            cells.append(f"{vals.mean():.4f}±{(vals.max() - vals.min()) / 2:.4f}")
        ms = 1e3 * np.mean([results[name, seed].mean_step_seconds() for seed in seeds])
        print(f"{name:>14} " + " ".join(f"{c:>15}" for c in cells) + f" {ms:>8.1f}")
    print(f"wall time {time.perf_counter() - start:.0f} s")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in names:
        h = results[name, seeds[0]]
        vals = np.mean([results[name, seed].val_loss for seed in seeds], axis=0)
        ax.plot(h.eval_steps, vals, marker="o", label=f"{name} (val)")
        kernel = np.ones(10) / 10
        ax.plot(np.arange(10, len(h.train_loss) + 1), np.convolve(h.train_loss, kernel, "valid"),
                alpha=0.4, label=f"{name} (train, seed {seeds[0]}, smoothed)")
    ax.set(xlabel="step", ylabel="loss (nats/char)", ylim=(None, 3.5),
           title="diffGrad vs Adam on the main-job LM")
    ax.legend(fontsize=7)
    fig.tight_layout()
    pathlib.Path("out").mkdir(exist_ok=True)
    fig.savefig("out/contrib_diffgrad.png", dpi=120)
    print("plot: out/contrib_diffgrad.png")


if __name__ == "__main__":
    main()
