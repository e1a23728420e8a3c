"""Command line of the fine-tuning benchmark: ``python benchmarks/finetune.py --help``."""

from __future__ import annotations

import argparse
import pathlib
import time
from collections.abc import Sequence

import jax

from benchmarks.lm import Config
from benchmarks.lm import model as lm_model

from . import loop, methods, report
from .data import load_sources

DESCRIPTION = ("Orthogonal fine-tuning benchmark: pretrain the main job's char LM on Python "
               "source, fine-tune on English prose with full FT, LoRA, OFTv2, HRA and Givens.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    add = parser.add_argument
    add("--quick", action="store_true", help="tiny model and runs (smoke test, ~1 min)")
    add("--pretrain-steps", type=int, default=None, help="steps on source A (300; quick 60)")
    add("--steps", type=int, default=None, help="fine-tuning steps per run (100; quick 24)")
    add("--pretrain-optimizer", default="muon",
        help="registry name of the pretraining optimizer (muon)")
    add("--budget", type=int, default=None,
        help="trainable-parameter target of the adapters (default 4 x sum of adapted "
             "in_features)")
    add("--methods", default=None, help="comma-separated subset of full,lora,oft,hra,givens,"
                                        "givens_quasi (default all available)")
    add("--rates", type=int, default=None,
        help="use only the first N rates of each method's grid (tests; default all 3)")
    add("--timing-repeats", type=int, default=None, help="round-robin timing rounds (15)")
    add("--no-progress", action="store_true", help="no progress bars")
    add("--out", default="out", help="directory of finetune.png and finetune.json")
    return parser


def configs(args) -> tuple[Config, Config, int, int]:
    """(pretraining config, fine-tuning config, source-A chars, source-B chars)."""
    if args.quick:
        pre = Config.quick(steps=args.pretrain_steps or 60, corpus_chars=200_000)
        steps = args.steps or 24
        tune = pre.replace(steps=steps, eval_every=max(1, steps // 4), seed=1)
        return pre, tune, 200_000, 120_000
    pre = Config(steps=args.pretrain_steps or 300)
    steps = args.steps or 100
    # Fine-tuning windows 8x64 (a quarter of pretraining's 16x128 tokens per step): 18 runs
    # must fit in minutes on 2 CPU cores, and Givens steps cost several full-FT steps here.
    tune = pre.replace(steps=steps, batch_size=8, seq_len=64, eval_every=max(1, steps // 4),
                       eval_batches=8, seed=1)
    return pre, tune, pre.corpus_chars, 460_000


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; print the tables; write the plot and JSON; return the summary."""
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    pre_cfg, cfg, a_chars, b_chars = configs(args)
    progress = not args.no_progress
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    sources = load_sources(a_chars, b_chars)
    info = sources.summary()
    print(f"source A: Python stdlib source, {info['a_train']:,} train / {info['a_val']:,} val "
          f"chars; source B: pydoc topic prose, {info['b_train']:,} train / {info['b_val']:,} "
          f"val / {info['b_test']:,} test chars; joint vocab {info['vocab_size']} "
          f"({len(info['b_only_chars'])} chars only in B: {info['b_only_chars']!r}, "
          f"{info['b_only_count']} occurrences)")
    optimizer = args.pretrain_optimizer
    print(f"pretraining: {pre_cfg.steps} steps of {optimizer} on A, model d_model "
          f"{pre_cfg.d_model}, {pre_cfg.layers} layers, {pre_cfg.heads} heads, batch "
          f"{pre_cfg.batch_size}x{pre_cfg.seq_len}; {jax.devices()[0].device_kind}")
    pretrained, pre_history = loop.pretrain(sources, pre_cfg, optimizer=optimizer,
                                            progress=progress)
    a_before = loop.evaluate(pretrained, loop.eval_windows(sources.a_val, cfg, final=True))
    b_val_before = loop.evaluate(pretrained, loop.eval_windows(sources.b_val, cfg))
    b_test_before = loop.evaluate(pretrained, loop.eval_windows(sources.b_test, cfg, final=True))
    print(f"pretrained ({lm_model.count_params(pretrained):,} params): A val {a_before:.4f}, "
          f"B val {b_val_before:.4f}, B test {b_test_before:.4f} nats/char")

    budget = args.budget or methods.default_budget(pretrained)
    only = None if args.methods is None else tuple(m.strip() for m in args.methods.split(","))
    chosen, notes = methods.methods(pretrained, budget, seed=cfg.seed, only=only)
    for note in notes:
        print(f"note: {note}")
    if args.rates is not None:
        chosen = [methods.Method(m.name, m.label, m.adapters, m.rates[:args.rates], m.wrt)
                  for m in chosen]
    print(f"fine-tuning on B: {cfg.steps} steps of AdamW (warmup + cosine), batch "
          f"{cfg.batch_size}x{cfg.seq_len}; adapters on {methods.HIDDEN_LAYERS!r}; "
          f"adapter budget {budget:,} trainable parameters")

    results = [loop.finetune(m, pretrained, sources, cfg, progress=progress) for m in chosen]
    _report(results, sources, cfg, pre_cfg, pre_history, a_before, b_val_before,
            b_test_before, budget, args, out_dir, start)
    return {"results": results, "a_before": a_before, "b_test_before": b_test_before}


def _report(results, sources, cfg, pre_cfg, pre_history, a_before, b_val_before,
            b_test_before, budget, args, out_dir, start):
    start_gap = max(abs(run.history.val_loss[0] - b_val_before) for r in results for run in r.runs)
    print(f"\nidentity at start: max |B val at step 0 - pretrained B val| = {start_gap:.1e}")
    windows = loop.eval_windows(sources.b_test, cfg, final=True)
    merge_gap, merge_lines = {}, []
    for r in results:
        adapted, merged = loop.merged_model(r)
        a_loss, a_logits = loop.evaluate(adapted, windows, logits=True)
        m_loss, m_logits = loop.evaluate(merged, windows, logits=True)
        logit_gap = float(jax.numpy.abs(a_logits - m_logits).max())
        merge_gap[r.method.name] = logit_gap
        merge_lines.append(f"  {r.method.label:<14} adapted {a_loss:.6f}  merged {m_loss:.6f}"
                           f"  |Δ loss| {abs(a_loss - m_loss):.1e}  max |Δ logit| "
                           f"{logit_gap:.1e}")
    print("merge check (chosen run; B test loss and first-batch logits, adapters vs merged "
          "nnx.Linear layers):")
    print("\n".join(merge_lines))

    repeats = args.timing_repeats or (5 if args.quick else 15)
    inputs, targets = (x[0] for x in windows)
    step_s = loop.time_steps(results, inputs, targets, repeats=repeats)
    rows = report.summary_rows(results, a_before, step_s, merge_gap)
    sweep = report.sweep_table(results)
    table = report.main_table(rows)
    print(f"\nlearning-rate sweep: B val loss after {cfg.steps} steps (* = chosen):")
    print(sweep)
    print(f"\nfine-tuning results ({cfg.steps} steps; before fine-tuning: B test "
          f"{b_test_before:.4f}, A val {a_before:.4f}). B test: target loss; A val: source "
          f"loss after; forgetting = A val - {a_before:.4f}; ms/step: median of {repeats} "
          f"round-robin steps, compile excluded; temp: XLA temp buffers of the compiled step; "
          f"state: trained params + AdamW state; x full = ratio to full FT:")
    print(table)
    seconds = time.perf_counter() - start
    png = report.plot(results, a_before, b_test_before, out_dir / "finetune.png")
    config = {"pretrain": vars(pre_cfg), "finetune": vars(cfg), "budget": budget,
              "args": vars(args), "hidden_layers": methods.HIDDEN_LAYERS,
              "device": str(jax.devices()[0].device_kind), "seconds": seconds}
    pre = {"optimizer": pre_history.name, "eval_steps": pre_history.eval_steps,
           "val_loss": pre_history.val_loss, "a_val": a_before, "b_val": b_val_before,
           "b_test": b_test_before}
    path = report.save_json(out_dir / "finetune.json", config=config,
                            sources=sources.summary(), pretrain=pre, results=results,
                            rows=rows, tables={"sweep": sweep, "main": table})
    print(f"\ntotal {seconds:.0f} s; wrote {png}, {path}")
    return rows
