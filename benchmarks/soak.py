"""Soak test: long runs of the main job's model with bfloat16 parameters, every ready optimizer.

    python benchmarks/soak.py                         # 3,000 steps x every ready optimizer
    python benchmarks/soak.py --steps 500 --optimizers muon,adafactor
    python benchmarks/soak.py --quick                 # tiny smoke run
    python benchmarks/soak.py --batch-size 4          # the same model, 4x fewer tokens/step

Not part of CI (hours on a CPU). Trains the character-level transformer of ``train_lm.py``
(same corpus, batches, warmup-cosine learning-rate shape) with ``bf16=True`` parameters and
activations and, by default, optimizer state in the parameters' dtype (``--mu-dtype float32``
for float32 state). Every ``--check-every`` steps and at the end, every parameter and every
optimizer-state leaf is checked for non-finite values; training stops at the first
non-finite loss, parameter or state value and the table names the step and the leaf.

Each optimizer runs with its own defaults (learning rate, weight decay, betas; adafactor at
its recommended learning rate), the learning rate shaped like the main job's (warmup, cosine
decay); the routed ones get the main job's AdamW fallback (lr 3e-3, betas (0.9, 0.95)).

Resumable: results go to ``--out``/soak.jsonl, one line per finished optimizer; a rerun with
the same settings skips optimizers already there at the same learning rate (``--fresh``
starts over). While an optimizer runs, ``--out``/soak_partial.json holds its latest checked
step, so an interrupted run still reports how far it got. The table printed at the end
covers every finished and partial run with these settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from lm import Config, load_corpus, train
from lm.registry import SOAK_OPTIMIZERS as OPTIMIZERS
from lm.registry import build_soak_optimizer as build
from lm.registry import soak_learning_rate


@jax.jit
def _finite_flags(leaves):
    return jnp.stack([jnp.all(jnp.isfinite(x.astype(jnp.float32))) for x in leaves]) if leaves \
        else jnp.ones((0,), bool)


def first_nonfinite(tree, prefix: str) -> str | None:
    """Path of the first floating leaf of ``tree`` holding a NaN or Inf, or ``None``."""
    flat = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]
    flags = np.asarray(_finite_flags([x for _, x in flat]))
    for (path, _), ok in zip(flat, flags, strict=True):
        if not ok:
            return prefix + jax.tree_util.keystr(path)
    return None


class Watch:
    """The per-step callback: finiteness checks every ``every`` steps and progress records."""

    def __init__(self, name, steps, every, partial_path: pathlib.Path, settings: dict):
        self.name, self.steps, self.every = name, steps, every
        self.partial_path, self.settings = partial_path, settings
        self.nonfinite = None  # (step, where)
        self.checked = 0
        self.start = time.perf_counter()

    def __call__(self, info):
        if info.step % self.every and info.step != self.steps:
            return
        where = (first_nonfinite(info.params, "params")
                 or first_nonfinite(info.opt_state, "opt_state"))
        self.checked = info.step
        if where is not None:
            self.nonfinite = (info.step, where)
            raise StopTraining
        self.partial_path.write_text(json.dumps({
            "settings": self.settings, "optimizer": self.name, "checked_step": info.step,
            "loss": info.loss, "seconds": time.perf_counter() - self.start}))


class StopTraining(Exception):
    """Raised by the callback to end a run at a non-finite parameter or state value."""


def run_one(name, cfg, corpus, args, settings, out_dir) -> dict:
    watch = Watch(name, cfg.steps, args.check_every, out_dir / "soak_partial.json", settings)
    tx = build(name, cfg, args.mu_dtype)
    start = time.perf_counter()
    history = None
    try:
        history = train(tx, cfg, corpus=corpus, callback=watch, name=name,
                                 progress=not args.no_progress)
    except StopTraining:
        pass
    seconds = time.perf_counter() - start
    record = {"settings": settings, "optimizer": name, "lr": soak_learning_rate(name),
              "complete": True, "seconds": seconds}
    if history is not None:
        losses = history.train_loss
        if history.nonfinite_step is not None:
            watch.nonfinite = (history.nonfinite_step, "loss")
        record.update(
            steps_run=len(losses),
            final_train=float(np.mean(losses[-100:])) if losses else math.nan,
            final_val=history.val_loss[-1] if history.val_loss else math.nan,
            val_steps=history.eval_steps, val=history.val_loss,
            ms_per_step=1e3 * history.mean_step_seconds())
    else:
        record.update(steps_run=watch.nonfinite[0], final_train=math.nan, final_val=math.nan)
    record["nonfinite"] = None if watch.nonfinite is None else {
        "step": watch.nonfinite[0], "where": watch.nonfinite[1]}
    return record


def load_records(path: pathlib.Path, settings: dict) -> list[dict]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["settings"] == settings]


def table(records: list[dict], partial: dict | None) -> str:
    header = ("optimizer", "peak lr", "steps", "non-finite", "final train", "final val",
              "ms/step")
    rows = [header]
    for r in records:
        bad = r["nonfinite"]
        rows.append((r["optimizer"], f"{r['lr']:g}" if "lr" in r else "?", str(r["steps_run"]),
                     "none" if bad is None else f"step {bad['step']}: {bad['where']}",
                     f"{r['final_train']:.4f}", f"{r['final_val']:.4f}",
                     f"{r.get('ms_per_step', math.nan):.0f}"))
    if partial is not None:
        rows.append((partial["optimizer"] + " (partial)", "", str(partial["checked_step"]),
                     "none so far", f"{partial['loss']:.4f} (last)", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--steps", type=int, default=3000, help="training steps per optimizer (3000)")
    add("--optimizers", default=",".join(OPTIMIZERS),
        help=f"comma-separated subset of {','.join(OPTIMIZERS)}")
    add("--batch-size", type=int, default=None,
        help="sequences per step (default: the main job's 16)")
    add("--check-every", type=int, default=100, help="steps between finiteness checks (100)")
    add("--mu-dtype", default=None, help="optimizer state dtype (default: the params' bf16)")
    add("--quick", action="store_true", help="the main job's tiny test settings")
    add("--fresh", action="store_true", help="ignore earlier results with the same settings")
    add("--no-progress", action="store_true", help="no progress bars")
    add("--report", action="store_true",
        help="print the table of finished (and the interrupted partial) runs, train nothing")
    add("--out", default="out/soak", help="output directory (out/soak)")
    return parser


def main(argv=None) -> list[dict]:
    args = _parser().parse_args(argv)
    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    unknown = sorted(set(names) - set(OPTIMIZERS))
    if unknown:
        raise SystemExit(f"unknown optimizers {unknown}; choose from {', '.join(OPTIMIZERS)}")
    base = Config.quick() if args.quick else Config()
    cfg = base.replace(steps=args.steps, bf16=True, eval_every=max(1, args.steps // 10))
    if args.batch_size is not None:
        cfg = cfg.replace(batch_size=args.batch_size)
    settings = {"config": dataclasses.asdict(cfg), "mu_dtype": args.mu_dtype,
                "device": str(jax.devices()[0].device_kind)}
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "soak.jsonl"
    done = {} if args.fresh else {r["optimizer"]: r for r in load_records(results, settings)
                                  if r.get("lr") == soak_learning_rate(r["optimizer"])}
    if args.report:
        partial_path = out_dir / "soak_partial.json"
        partial = json.loads(partial_path.read_text()) if partial_path.exists() else None
        if partial is not None and partial["settings"] != settings:
            partial = None
        records = [done[n] for n in names if n in done]
        print(table(records, partial))
        return records
    corpus = load_corpus(cfg.corpus_chars)
    print(f"soak: {cfg.steps} steps, bf16 params, state dtype {args.mu_dtype or 'bf16'}, "
          f"{cfg.batch_size}x{cfg.seq_len} chars, d={cfg.d_model}, {cfg.layers} layers, "
          f"{jax.devices()[0].device_kind}; already done: {sorted(done) or 'none'}", flush=True)
    for name in names:
        if name in done:
            continue
        record = run_one(name, cfg, corpus, args, settings, out_dir)
        with results.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        done[name] = record
        print(f"{name}: {record['steps_run']} steps, non-finite {record['nonfinite']}, "
              f"final train {record['final_train']:.4f}, val {record['final_val']:.4f}, "
              f"{record['seconds']:.0f} s", flush=True)
        (out_dir / "soak_partial.json").unlink(missing_ok=True)
    records = [done[n] for n in names if n in done]
    print(table(records, None))
    return records


if __name__ == "__main__":
    main()
