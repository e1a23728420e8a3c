"""QK-clip on the main job: maximum attention logit, loss and step time with and without it.

    python benchmarks/qk_clip.py                       # lr 0.16, τ 20, the main job's 300 steps
    python benchmarks/qk_clip.py --lr 0.08 --tau 15 --steps 100
    python benchmarks/qk_clip.py --timing-only

Both runs train ``optorth.muon`` (the main job's lr shape and AdamW fallback) at a peak
learning rate above the tuned one, where the attention logits grow, with the attention
recording its per-head maxima (``benchmarks/lm/qk.py``); one of them chains
``optorth.qk_clip(QKClip.separate(τ))`` and passes the maxima to every update. The step-time
overhead is measured separately, interleaving compiled steps of four programs on the same
batches in one process: the main job's step (``jax.nn.dot_product_attention``), the same
attention computed from explicit logits without recording (what the recording attention
runs), the step that records the maxima, and the step that records and clips. Each of
``--rounds`` rounds times ``--repeat`` steps of every program in a random order; a ratio is
taken within each round (the same moment's load on a shared machine) and reported as its
median over the rounds with a distribution-free 95% interval. QK-clip's overhead is the
ratio of the recording-and-clip step to the main job's step (the whole feature) and to the
recording step (the clip transform alone).

Writes ``--out``/qk_clip.json, qk_clip.md and qk_clip.png (max logit and loss per step).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

if __package__ in (None, ""):  # run as `python benchmarks/qk_clip.py`
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.lm import data as lm_data  # noqa: E402
from benchmarks.lm import qk as lm_qk  # noqa: E402
from benchmarks.lm.config import Config, lr_schedule, make_model  # noqa: E402
from benchmarks.lm.registry import fallback_adamw  # noqa: E402

FALLBACK_LR = 3e-3


def muon(cfg, lr):
    import optorth

    return optorth.muon(learning_rate=lr_schedule(lr, cfg),
                        fallback=fallback_adamw(cfg, lr_schedule(FALLBACK_LR, cfg)))


def with_clip(tx, tau):
    import optorth

    return optax.chain(tx, optorth.qk_clip(lm_qk.clip_config(tau)))


def training(cfg, corpus, lr, tau) -> dict:
    out = {}
    for name, clip in (("no_clip", False), ("qk_clip", True)):
        tx = with_clip(muon(cfg, lr), tau) if clip else muon(cfg, lr)
        start = time.perf_counter()
        history, maxima = lm_qk.train(tx, cfg, corpus, clip=clip)
        jax.clear_caches()
        curve = [float(np.max(v)) for v in zip(*maxima.values(), strict=True)]
        out[name] = {"train_loss": history.train_loss, "eval_steps": history.eval_steps,
                     "val_loss": history.val_loss, "max_logit": curve,
                     "max_logit_per_layer": maxima, "nonfinite_step": history.nonfinite_step,
                     "seconds": time.perf_counter() - start}
        print(f"{name}: final val {history.val_loss[-1]:.4f}, max logit {max(curve):.1f} "
              f"(last {curve[-1]:.1f}), {out[name]['seconds']:.0f} s", flush=True)
    return out


def _program(cfg, corpus, tx, *, explicit, capture, clip):
    model = make_model(cfg, corpus.vocab_size)
    if explicit:
        lm_qk.enable_recording(model)
    graphdef, state = nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))
    return graphdef, state, (clip, capture)


def median_interval(values, z: float = 1.96) -> tuple[float, float, float]:
    """Median of ``values`` and a distribution-free 95% interval for it: the order
    statistics of ranks ⌊n/2 − z√n/2⌋ and ⌈1 + n/2 + z√n/2⌉ (1-based; the normal
    approximation of the binomial)."""
    ordered = np.sort(np.asarray(values, dtype=float))
    n = len(ordered)
    half = z * np.sqrt(n) / 2
    lo = max(0, int(np.floor(n / 2 - half)) - 1)
    hi = min(n - 1, int(np.ceil(1 + n / 2 + half)) - 1)
    return float(np.median(ordered)), float(ordered[lo]), float(ordered[hi])


PROGRAMS = ("main_job_step", "explicit_logits", "recording", "recording_and_clip")


def _programs(cfg, corpus, lr, tau, names) -> dict:
    flags = {"main_job_step": (False, False, False), "explicit_logits": (True, False, False),
             "recording": (True, True, False), "recording_and_clip": (True, True, True)}
    out = {}
    for name in names:
        explicit, capture, clip = flags[name]
        tx = with_clip(muon(cfg, lr), tau) if clip else muon(cfg, lr)
        out[name] = _program(cfg, corpus, tx, explicit=explicit, capture=capture, clip=clip)
    return out


def compiled_cost(programs: dict, batch) -> dict:
    """FLOPs and bytes accessed of each compiled step (XLA's cost analysis): deterministic,
    unlike the clock."""
    out = {}
    for name, (graphdef, state, flags) in programs.items():
        cost = lm_qk._jit_step.lower(graphdef, state, *batch, *flags).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        out[name] = {"flops": float(cost["flops"]), "bytes": float(cost["bytes accessed"])}
    return out


def timing(cfg, corpus, lr, tau, rounds: int, repeat: int, seed: int = 0,
           names=PROGRAMS) -> dict:
    """Seconds per step of the programs ``names``, interleaved round by round in a random
    order, on the wall clock and on the process's CPU clock (all its threads: less
    sensitive to other jobs on a shared machine); each ratio is taken within a round and
    summarized by its median over the rounds with a 95% interval."""
    programs = _programs(cfg, corpus, lr, tau, names)
    batches = lm_data.Batches(corpus.train, repeat, cfg.batch_size, cfg.seq_len, cfg.seed)
    cost = compiled_cost(programs, batches[0])
    states = {}
    for name, (graphdef, state, flags) in programs.items():  # compile and warm up
        states[name] = lm_qk._jit_step(graphdef, state, *batches[0], *flags)[0]
        jax.block_until_ready(states[name])
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    seconds = {clock: {name: [] for name in programs} for clock in clocks}
    order = np.random.default_rng(seed)
    for _ in range(rounds):
        for name in order.permutation(list(programs)):
            graphdef, _, flags = programs[name]
            state = states[name]
            start = {clock: read() for clock, read in clocks.items()}
            for step in range(repeat):
                state, loss, _ = lm_qk._jit_step(graphdef, state, *batches[step], *flags)
            jax.block_until_ready(loss)
            for clock, read in clocks.items():
                seconds[clock][name].append((read() - start[clock]) / repeat)
            states[name] = state
    bases = [b for b in ("main_job_step", "explicit_logits", "recording") if b in programs]
    ratios = {clock: {base: {n: median_interval(np.array(s) / np.array(per[base]))
                             for n, s in per.items()} for base in bases}
              for clock, per in seconds.items()}
    return {"median_seconds": {c: {n: float(np.median(s)) for n, s in per.items()}
                               for c, per in seconds.items()},
            "ratios": ratios, "cost": cost, "seconds": seconds, "rounds": rounds,
            "repeat": repeat}


def report(result: dict) -> str:
    lines = [f"QK-clip on the main job: optorth.muon at peak lr {result['lr']:g}, τ = "
             f"{result['tau']:g}, {result['steps']} steps, seed {result['seed']} "
             f"({result['device']}).", ""]
    if "runs" in result:
        lines += ["| run | max logit (whole run) | max logit (last step) | final train loss | "
                  "final val loss |", "|---|---|---|---|---|"]
        for name, run in result["runs"].items():
            lines.append(f"| {name} | {max(run['max_logit']):.1f} | {run['max_logit'][-1]:.1f}"
                         f" | {run['train_loss'][-1]:.4f} | {run['val_loss'][-1]:.4f} |")
        lines.append("")
    t = result["timing"]
    lines += [f"Step time: {t['rounds']} rounds of {t['repeat']} step(s) of each program, in a "
              "random order per round; each ratio is taken within a round, its median over "
              "the rounds shown with a 95% interval. CPU: the process's CPU time (all "
              "threads); FLOPs and bytes: XLA's cost analysis of the compiled step.", ""]
    bases = list(t["ratios"]["wall"])
    lines += ["| program | ms per step, wall (cpu) | "
              + " | ".join(f"wall ratio to {b} | cpu ratio to {b}" for b in bases)
              + " | FLOPs ratio | bytes ratio |",
              "|---" * (2 + 2 * len(bases) + 2) + "|"]
    ratio = lambda r: f"{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}]"  # noqa: E731
    first = next(iter(t["cost"].values()))
    for name in t["median_seconds"]["wall"]:
        cells = [f"{1e3 * t['median_seconds']['wall'][name]:.1f} "
                 f"({1e3 * t['median_seconds']['cpu'][name]:.1f})"]
        for b in bases:
            cells += [ratio(t["ratios"]["wall"][b][name]), ratio(t["ratios"]["cpu"][b][name])]
        cells += [f"{t['cost'][name]['flops'] / first['flops']:.4f}",
                  f"{t['cost'][name]['bytes'] / first['bytes']:.4f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for name, run in result["runs"].items():
        a.plot(np.arange(1, len(run["max_logit"]) + 1), run["max_logit"], label=name)
        b.plot(run["eval_steps"], run["val_loss"], label=name)
    a.axhline(result["tau"], color="k", ls=":", label="τ")
    a.set(xlabel="step", ylabel="max attention logit (all layers and heads)")
    b.set(xlabel="step", ylabel="validation loss (nats/char)")
    a.legend()
    b.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lr", type=float, default=0.16)
    parser.add_argument("--tau", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=None, help="the main job's 300")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--timing-only", action="store_true")
    parser.add_argument("--programs", default=",".join(PROGRAMS),
                        help=f"programs to time (all: {','.join(PROGRAMS)})")
    parser.add_argument("--out", default="out/qk_clip")
    args = parser.parse_args(argv)
    cfg = Config(seed=args.seed)
    cfg = cfg if args.steps is None else cfg.replace(steps=args.steps)
    corpus = lm_data.load_corpus(cfg.corpus_chars)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"lr": args.lr, "tau": args.tau, "steps": cfg.steps, "seed": args.seed,
              "device": jax.devices()[0].device_kind}
    previous = out / "qk_clip.json"
    if not args.timing_only:
        result["runs"] = training(cfg, corpus, args.lr, args.tau)
    elif previous.exists():  # keep the training runs of an earlier call
        old = json.loads(previous.read_text())
        if "runs" in old and (old["lr"], old["tau"], old["steps"]) == (
                args.lr, args.tau, cfg.steps):
            result["runs"] = old["runs"]
    names = args.programs.split(",")
    unknown = sorted(set(names) - set(PROGRAMS))
    if unknown:
        raise SystemExit(f"unknown programs {unknown}; choose from {', '.join(PROGRAMS)}")
    result["timing"] = timing(cfg, corpus, args.lr, args.tau, args.rounds, args.repeat,
                              names=names)
    (out / "qk_clip.json").write_text(json.dumps(result))
    text = report(result)
    (out / "qk_clip.md").write_text(text + "\n")
    if "runs" in result:
        plot(result, out / "qk_clip.png")
    print(text)
    return result


if __name__ == "__main__":
    main()
