"""The square-root scaling rule vs linear scaling when the batch grows ×4, on the main job.

    python -m benchmarks.micro.contrib_scaling [--steps 400] [--batch 16] [--seeds 0,1]

Adam (b1 0.9, b2 0.95, eps 1e-8, peak η with warmup and cosine decay) is run on the
character-level transformer LM of ``benchmarks/lm`` at batch B for N steps (the reference),
then at batch 4B for N/4 steps (the same samples, the same schedule shape in samples) with

* ``sqrt``:   optorth.contrib.sqrt_scaling_rule(4, ...): η·2, b1 0.6, b2 0.8, eps/2;
* ``linear``: η·4, b1, b2, eps unchanged (the rule for SGD, applied naively to Adam);
* ``same``:   η, b1, b2, eps unchanged.

The rule's claim (Malladi et al. 2022) is that the 4B run tracks the reference as a function of
samples seen. Prints validation loss at every quarter of the samples (mean over seeds) and the
mean gap to the reference, and writes ``out/contrib_scaling.png`` (loss vs samples).
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
from optorth.contrib import sqrt_scaling_rule  # noqa: E402

PEAK, B1, B2, EPS, KAPPA = 2e-3, 0.9, 0.95, 1e-8, 4


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.steps % (4 * KAPPA):
        raise SystemExit(f"--steps must be a multiple of {4 * KAPPA}")
    small = Config(steps=args.steps, batch_size=args.batch, seq_len=64,
                   eval_every=args.steps // 16)
    big = small.replace(steps=args.steps // KAPPA, batch_size=KAPPA * args.batch,
                        eval_every=args.steps // (16 * KAPPA))
    corpus = load_corpus(small.corpus_chars)

    def runs(seed):
        s, b = small.replace(seed=seed), big.replace(seed=seed)
        h = sqrt_scaling_rule(KAPPA, learning_rate=lr_schedule(PEAK, b), b1=B1, b2=B2, eps=EPS)
        return {
            f"B={s.batch_size} (reference)": (optax.adam(lr_schedule(PEAK, s), B1, B2, EPS), s),
            f"{KAPPA}B sqrt": (optax.adam(**h._asdict()), b),
            f"{KAPPA}B linear": (optax.adam(lr_schedule(KAPPA * PEAK, b), B1, B2, EPS), b),
            f"{KAPPA}B same": (optax.adam(lr_schedule(PEAK, b), B1, B2, EPS), b),
        }

    start = time.perf_counter()
    results = {}
    for seed in seeds:
        for name, (tx, cfg) in runs(seed).items():
            history = train(LMTask(cfg, corpus), tx, name=name)
            samples = np.array(history.eval_steps) * cfg.batch_size
            results[name, seed] = (samples, np.array(history.val_loss), history)
    names = list(runs(seeds[0]))
    h = sqrt_scaling_rule(KAPPA, learning_rate=PEAK, b1=B1, b2=B2, eps=EPS)
    print(f"main job LM (d_model {small.d_model}, {small.layers} layers, seq {small.seq_len}); "
          f"Adam peak lr {PEAK}, b1 {B1}, b2 {B2}, eps {EPS} at batch {small.batch_size} for "
          f"{small.steps} steps; batch {big.batch_size} for {big.steps} steps. sqrt rule: "
          f"lr {h.learning_rate:.4g}, b1 {h.b1:.3g}, b2 {h.b2:.3g}, eps {h.eps:.3g}; linear: lr "
          f"{KAPPA * PEAK:.4g}. Validation loss (nats/char) vs samples seen, mean over seeds "
          f"{seeds}; 'gap' = mean |loss − reference| over all evaluations after warmup.")
    quarters = [small.batch_size * s for s in small.table_steps()]
    ref = np.mean([results[names[0], seed][1] for seed in seeds], axis=0)
    print(f"{'run':>22} " + " ".join(f"{str(q) + ' smp':>11}" for q in quarters)
          + f" {'gap':>7}")
    for name in names:
        samples = results[name, seeds[0]][0]
        vals = np.mean([results[name, seed][1] for seed in seeds], axis=0)
        cells = [vals[list(samples).index(q)] for q in quarters]
        late = samples >= small.batch_size * small.steps * 0.1
        gap = np.mean(np.abs(vals - ref)[late])
        print(f"{name:>22} " + " ".join(f"{c:>11.4f}" for c in cells) + f" {gap:>7.4f}")
    print(f"wall time {time.perf_counter() - start:.0f} s")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in names:
        samples = results[name, seeds[0]][0]
        vals = np.mean([results[name, seed][1] for seed in seeds], axis=0)
        ax.plot(samples, vals, marker="o", ms=3, label=name)
    ax.set(xlabel="samples seen (sequences)", ylabel="validation loss (nats/char)",
           ylim=(None, 3.5), title=f"Batch ×{KAPPA}: square-root vs linear scaling (Adam)")
    ax.legend()
    fig.tight_layout()
    pathlib.Path("out").mkdir(exist_ok=True)
    fig.savefig("out/contrib_scaling.png", dpi=120)
    print("plot: out/contrib_scaling.png")


if __name__ == "__main__":
    main()
