"""The main job's command line: ``python benchmarks/train_lm.py --help``."""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from collections.abc import Sequence

import jax
from flax import nnx

from . import model as lm_model
from .config import Config, make_model
from .data import load_corpus
from .loop import History, train
from .registry import (
    DEFAULT_OPTIMIZERS,
    REGISTRY,
    available_optimizers,
    build_optimizer,
    registry_help,
)
from .report import plot_curves, results_table, save_results
from .telemetry import TelemetryRecorder, plot_telemetry, summary

DESCRIPTION = "The main job: train a small character-level transformer LM with several optimizers."

def _parser() -> argparse.ArgumentParser:
    d = Config()
    parser = argparse.ArgumentParser(
        description=DESCRIPTION,
        epilog=registry_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--optimizers", default=None,
        help="comma-separated registry names (default: the available ones of "
             f"{','.join(DEFAULT_OPTIMIZERS)})")
    add("--steps", type=int, default=None, help=f"training steps (default {d.steps})")
    add("--batch-size", type=int, default=None, help=f"sequences per step ({d.batch_size})")
    add("--seq-len", type=int, default=None, help=f"context length ({d.seq_len})")
    add("--d-model", type=int, default=None, help=f"residual width ({d.d_model})")
    add("--layers", type=int, default=None, help=f"transformer blocks ({d.layers})")
    add("--heads", type=int, default=None, help=f"attention heads ({d.heads})")
    add("--seed", type=int, default=None, help=f"model init and data order seed ({d.seed})")
    add("--eval-every", type=int, default=None, help=f"validation interval ({d.eval_every})")
    add("--corpus-chars", type=int, default=None,
        help=f"characters of stdlib source ({d.corpus_chars})")
    add("--weight-decay", type=float, default=None, help=f"for every optimizer ({d.weight_decay})")
    add("--lr", type=float, default=None, help="override the peak lr of every optimizer")
    add("--fallback-lr", type=float, default=None,
        help="override the peak lr of the AdamW fallback path of every optimizer")
    add("--bf16", action="store_true", help="bfloat16 parameters and activations")
    add("--ns-telemetry", type=int, default=0, metavar="K",
        help="record each layer's Newton–Schulz orthogonalization error with K random probes "
             "(optorth Newton–Schulz optimizers) and plot it; 0: off (default)")
    add("--ns-dtype", default=None,
        help="compute dtype of optorth's Newton–Schulz (e.g. bfloat16; default: float32)")
    add("--quick", action="store_true", help="tiny settings (tests, smoke runs)")
    add("--no-progress", action="store_true", help="no progress bars")
    add("--show-routing", action="store_true",
        help="print optorth.describe_routing of the model's parameters before training")
    add("--out", default="out", help="output directory (default out/)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = Config.quick() if args.quick else Config()
    changes = {
        field: getattr(args, field)
        for field in ("steps", "batch_size", "seq_len", "d_model", "layers", "heads", "seed",
                      "eval_every", "corpus_chars", "weight_decay")
        if getattr(args, field) is not None
    }
    if args.bf16:
        changes["bf16"] = True
    return cfg.replace(**changes)


def select_optimizers(spec: str | None) -> list[str]:
    """Names from a comma-separated list (default: the available default optimizers)."""
    if spec is None:
        names = [n for n in DEFAULT_OPTIMIZERS if REGISTRY[n].available()]
        missing = [n for n in DEFAULT_OPTIMIZERS if n not in names]
        if missing:
            print(f"note: skipping {', '.join(missing)} (not in the installed optorth)")
        return names
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ValueError("--optimizers is empty")
    for n in names:
        key = n.partition("@")[0]
        if key not in REGISTRY:
            raise ValueError(f"unknown optimizer {key!r}; registered: {', '.join(REGISTRY)}")
        if not REGISTRY[key].available():
            raise ValueError(
                f"optimizer {key!r} needs optorth.{', optorth.'.join(REGISTRY[key].requires)}, "
                f"which the installed optorth lacks; available: "
                f"{', '.join(available_optimizers())}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"--optimizers lists a name twice: {spec}")
    return names


def main(argv: Sequence[str] | None = None) -> list[History]:
    """Run the comparison; print the table; write the plot, JSON and CSV to ``--out``."""
    args = _parser().parse_args(argv)
    if args.ns_telemetry < 0:
        raise ValueError(f"--ns-telemetry must be >= 0 (probes; 0: off), got {args.ns_telemetry}")
    cfg = config_from_args(args)
    names = select_optimizers(args.optimizers)
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    corpus = load_corpus(cfg.corpus_chars)
    info = corpus.summary()
    model = make_model(cfg, corpus.vocab_size)
    print(f"corpus: {info['files']} stdlib files, {info['train_chars']:,} train / "
          f"{info['val_chars']:,} val chars, vocab {info['vocab_size']} ({info['root']})")
    print(f"model: {lm_model.count_params(model):,} parameters; {cfg.steps} steps of "
          f"{cfg.batch_size}x{cfg.seq_len} chars; {jax.devices()[0].device_kind}")
    if args.show_routing:
        import optorth

        print(optorth.describe_routing(nnx.state(model, nnx.Param)))
    del model

    ns_changes = {k: v for k, v in (("telemetry", args.ns_telemetry), ("dtype", args.ns_dtype))
                  if v}
    histories, telemetry = [], {}
    for name in names:
        tx = build_optimizer(name, cfg, lr=args.lr, fallback_lr=args.fallback_lr,
                             ns_changes=ns_changes)
        recorder = None
        if args.ns_telemetry and REGISTRY[name.partition("@")[0]].takes_schedule:
            recorder = telemetry[name] = TelemetryRecorder()
        histories.append(train(tx, cfg, corpus=corpus, progress=not args.no_progress,
                               name=name, callback=recorder))
    seconds = time.perf_counter() - start

    table = results_table(histories, cfg)
    print(f"\nvalidation loss (nats/char) and mean step time, compilation excluded "
          f"(x first = ratio to {histories[0].name}):")
    print(table)
    png = plot_curves(histories, cfg, out_dir / "train_lm.png")
    json_path, csv_path = save_results(histories, cfg, corpus, out_dir, table, seconds)
    print(f"\ntotal {seconds:.0f} s; wrote {png}, {json_path}, {csv_path}")
    if args.ns_telemetry:
        _report_telemetry(telemetry, cfg, out_dir)
    return histories


def _report_telemetry(records: dict, cfg: Config, out_dir: pathlib.Path) -> None:
    """Print, plot and save the Newton–Schulz telemetry of the optimizers that recorded it."""
    if not records:
        print("note: --ns-telemetry: none of the optimizers runs optorth's Newton–Schulz")
        return
    print(summary(records))
    title = f"d_model {cfg.d_model}, {cfg.layers} layers, {cfg.steps} steps"
    png = plot_telemetry(records, out_dir / "train_lm_telemetry.png", title)
    path = out_dir / "train_lm_telemetry.json"
    path.write_text(json.dumps({name: r.to_dict() for name, r in records.items()}))
    print(f"wrote {png}, {path}")
