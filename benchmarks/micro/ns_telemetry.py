"""Newton–Schulz telemetry on the main job: float32 against bfloat16 iterations.

    python -m benchmarks.micro.ns_telemetry            # 60 steps, polar_express5 and jordan

Trains ``optorth.muon`` (the main job's lr shape and AdamW fallback, peak lr 0.02) with
``NewtonSchulz(schedule, dtype=..., telemetry=8)`` and reads ``optorth.blocks.ns_telemetry``
after every step: the per-leaf RMS(σ² − 1) of the orthogonalized momentum. Reports, per
schedule and dtype, the mean over leaves and steps, the largest value seen and the leaf it
came from, and the final validation loss. Writes ``--out``/ns_telemetry.json and .md.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import numpy as np

from benchmarks.lm import Config, LMTask, load_corpus
from benchmarks.runner import train
from benchmarks.runner.registry import fallback_adamw, lr_schedule


def run(cfg, corpus, schedule: str, dtype) -> dict:
    import optorth

    ns = optorth.NewtonSchulz(schedule, dtype=dtype, telemetry=8)
    tx = optorth.muon(learning_rate=lr_schedule(0.02, cfg), ns=ns,
                      fallback=fallback_adamw(cfg, lr_schedule(3e-3, cfg)))
    per_step = []

    def callback(info):
        per_step.append(optorth.blocks.ns_telemetry(info.opt_state))

    history = train(LMTask(cfg, corpus), tx, callbacks=[callback])
    jax.clear_caches()
    errors = np.array([list(r["errors"].values()) for r in per_step])
    paths = list(per_step[0]["errors"])
    worst = np.unravel_index(np.argmax(errors), errors.shape)
    return {"schedule": schedule, "dtype": per_step[0]["dtype"],
            "mean_error": float(errors.mean()), "max_error": float(errors.max()),
            "max_at": {"step": int(worst[0]) + 1, "leaf": paths[worst[1]]},
            "final_val_loss": history.val_loss[-1],
            "per_leaf_last": per_step[-1]["errors"]}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--schedules", default="polar_express5,jordan")
    parser.add_argument("--out", default="out/ns_telemetry")
    args = parser.parse_args(argv)
    cfg = Config(steps=args.steps, eval_every=args.steps)
    corpus = load_corpus(cfg.corpus_chars)
    rows = [run(cfg, corpus, schedule, dtype) for schedule in args.schedules.split(",")
            for dtype in (None, "bfloat16")]
    lines = [f"Newton–Schulz telemetry on the main job, optorth.muon, {args.steps} steps "
             f"({jax.devices()[0].device_kind}): RMS(σ² − 1) of each orthogonalized update, "
             f"8 probes.", "",
             "| schedule | NS dtype | mean over leaves and steps | largest (step, leaf) | "
             "final val loss |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['schedule']} | {r['dtype']} | {r['mean_error']:.4f} | "
                     f"{r['max_error']:.4f} ({r['max_at']['step']}, `{r['max_at']['leaf']}`) | "
                     f"{r['final_val_loss']:.4f} |")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ns_telemetry.json").write_text(json.dumps(rows))
    (out / "ns_telemetry.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
