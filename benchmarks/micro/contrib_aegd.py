"""AEGD vs Adam on the main job's character-level transformer (a short run).

    python -m benchmarks.micro.contrib_aegd [--steps 150] [--out out]

Same model, initial weights, batches and order for every optimizer (``benchmarks.lm``: Config,
load_corpus, the run's batches), trained by the runner's loop with the loss value passed to
every update (``tx.update(grads, state, params, value=loss)``, which AEGD needs). Adam
uses the lm schedule (warmup + cosine); AEGD uses a constant base step η (its energy already
decays the effective step), a few η each. Prints the validation loss at each quarter and the
mean step time, saves ``<out>/contrib_aegd.png``.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import optax

from benchmarks.lm import Config, LMTask, load_corpus
from benchmarks.runner import train as run
from benchmarks.runner.registry import lr_schedule
from optorth.contrib import aegd


def train(tx, cfg, corpus):
    """One run on the runner's loop, the loss passed to every update."""
    history = run(LMTask(cfg, corpus, pass_loss=True), tx)
    return history.train_loss, history, history.mean_step_seconds()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", default="out")
    args = parser.parse_args()
    cfg = Config(steps=args.steps)
    corpus = load_corpus(cfg.corpus_chars)
    runs = {"adam lr=3e-3 (sched)": optax.adam(lr_schedule(3e-3, cfg))}
    for eta in (0.03, 0.1, 0.3):
        runs[f"aegd eta={eta}"] = aegd(eta, c=1.0)
    results = {}
    for name, tx in runs.items():
        results[name] = train(tx, cfg, corpus)
        print(f"done {name}", flush=True)
    steps = cfg.table_steps()
    print(f"validation loss (nats/char), {cfg.steps} steps, model d={cfg.d_model} "
          f"layers={cfg.layers}, batch {cfg.batch_size}x{cfg.seq_len}")
    print(f"{'optimizer':<22}" + "".join(f"{'@' + str(s):>9}" for s in steps) + f"{'s/step':>9}")
    for name, (_, vals, sec) in results.items():
        print(f"{name:<22}" + "".join(f"{vals.val_at(s):>9.3f}" for s in steps)
              + f"{sec:>9.3f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (losses, _, _) in results.items():
        smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
        ax.plot(np.arange(len(smooth)) + 10, smooth, label=name)
    ax.set(xlabel="step", ylabel="train loss (10-step mean)", title="AEGD vs Adam, char LM")
    ax.legend()
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "contrib_aegd.png")
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
