"""AEGD vs Adam on the main job's character-level transformer (a short run).

    python -m benchmarks.contrib_aegd [--steps 150] [--out out]     (from the repository root)

Same model, initial weights, batches and order for every optimizer (``benchmarks.lm``: Config,
make_model, load_corpus, the run's batches). The loop is written here because AEGD needs the
loss value at every step (``tx.update(grads, state, params, value=loss)``), which the shared
loop does not pass. Adam uses the lm schedule (warmup + cosine); AEGD uses a constant base
step η (its energy already decays the effective step), a few η each. Prints the validation
loss at each quarter and the mean step time, saves ``<out>/contrib_aegd.png``.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks.lm import Config, load_corpus, lr_schedule, make_model
from benchmarks.lm import data as lm_data
from benchmarks.lm import model as lm_model
from optorth.contrib import aegd


def train(tx, cfg, corpus):
    model = make_model(cfg, corpus.vocab_size)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = tx.init(params)

    def loss_of(p, inputs, targets):
        return lm_model.loss_fn(nnx.merge(graphdef, p, rest), inputs, targets)

    @jax.jit
    def step(p, s, inputs, targets):
        loss, grads = jax.value_and_grad(loss_of)(p, inputs, targets)
        updates, s = tx.update(grads, s, p, value=loss)
        return optax.apply_updates(p, updates), s, loss

    val_loss = jax.jit(lambda p, x, y: jax.lax.map(lambda xy: loss_of(p, *xy), (x, y)).mean())
    batches = lm_data.Batches(corpus.train, cfg.steps, cfg.batch_size, cfg.seq_len, cfg.seed)
    vx, vy = (jnp.asarray(a) for a in lm_data.eval_windows(
        corpus.val, cfg.eval_batches, cfg.batch_size, cfg.seq_len))
    train_losses, vals, times = [], {0: float(val_loss(params, vx, vy))}, []
    for k in range(cfg.steps):
        x, y = batches[k]
        start = time.perf_counter()
        params, state, loss = step(params, state, x, y)
        loss = float(loss)
        times.append(time.perf_counter() - start)
        train_losses.append(loss)
        if not np.isfinite(loss):
            break
        if k + 1 in cfg.table_steps():
            vals[k + 1] = float(val_loss(params, vx, vy))
    return train_losses, vals, float(np.mean(times[1:]))


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
        print(f"{name:<22}" + "".join(f"{vals.get(s, float('nan')):>9.3f}" for s in steps)
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
