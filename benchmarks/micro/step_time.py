"""One jitted optimizer update on GPT-2 small: optorth ``muon`` against ``optax.contrib.muon``.

Parameters (Flax layout, float32, 124M): 12 layers of c_attn 768×2304, attn c_proj 768×768,
c_fc 768×3072, mlp c_proj 3072×768 with their biases and layer norms, plus the embeddings
wte 50257×768 and wpe 1024×768 (``benchmarks/micro/memory.py``). Gradients are random normal.
Sections (every ratio is measured in this process, timings interleaved round-robin):

1. accuracy: each optorth configuration's Newton–Schulz on inputs with a known SVD at the
   four GPT-2 shapes (``benchmarks/micro/orthogonalize.py``: max|σ−1| over σ ≥ 1e-3·σ_max and the
   relative Frobenius distance to the exact polar factor, for a log-spaced and a Gaussian
   spectrum), against optax's default (Jordan ×5). A configuration qualifies when it is at
   least as accurate by both measures on every shape and both spectra.
2. orthogonalization throughput: the ``orthogonalize`` block alone on the 48 matrices, for
   each qualifying configuration; achieved GFLOP/s (analytic flops) relative to plain
   float32 matmuls of the same sizes (X Xᵀ and A X per shape, 12-batched, timed alongside).
3. step time: one whole update (momentum, orthogonalization, AdamW for the rest) of optorth
   ``muon`` (default and every qualifying configuration; the fastest is named) divided by
   ``optax.contrib.muon(0.02)``; the ratio is also printed per interleaved round. optax's default
   routing sends every 2-D leaf, the 50257×768 embedding included, to Newton–Schulz;
   optorth sends embeddings to AdamW. Both ratios are printed: against the default, and
   against optax with the same routing (``muon_weight_dimension_numbers`` with the
   embeddings set to ``None``), the like-for-like one.
4. memory: ``jax.jit(update).lower(...).compile().memory_analysis()`` of each update: peak
   temporary bytes (``temp_size_in_bytes``), arguments and outputs.

``--devices 8`` reruns in a subprocess with 8 simulated CPU devices and FSDP-style sharding
(each leaf sharded over the mesh on its first axis that divides, else replicated): step
time against optax under automatic axes (optax does not run under explicit axes; that is
reported), optorth under explicit axes too, the collectives in each compiled program (HLO
text, loops counted once) and per-device memory. The 8 simulated devices share this
machine's cores, so absolute times there measure total work plus data movement.

Run::

    python -m benchmarks.micro.step_time --quick            # 2 layers, fewer repeats
    python -m benchmarks.micro.step_time                    # the full GPT-2-small set
    python -m benchmarks.micro.step_time --devices 8 [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optorth
from benchmarks.micro._hlo import COLLECTIVES, collective_counts, collectives_in_loops
from benchmarks.micro._timing import time_round_robin
from benchmarks.micro.memory import gpt2_small_shapes
from benchmarks.micro.orthogonalize import (
    JORDAN_ROW,
    Config,
    accuracy,
    make_problem,
    ns_flops,
    optax_ns,
)

GPT2_SHAPES = ((768, 2304), (768, 768), (768, 3072), (3072, 768))


# ----------------------------------------------------------------------------- configurations
@dataclasses.dataclass(frozen=True)
class Candidate:
    """An optorth ``muon`` configuration: its keyword arguments and its engine cost model."""

    name: str
    muon_kwargs: dict
    steps: int
    method: str = "standard"

    @property
    def ns(self) -> optorth.NewtonSchulz:
        """The candidate's Newton–Schulz settings (the plain iteration unless it says)."""
        return optorth.NewtonSchulz(**{"method": "standard", **self.muon_kwargs})

    def engine(self, x):
        return optorth.newton_schulz(x, self.ns)

    def cost(self) -> Config:
        return Config(self.name, None, self.steps, self.method)


def candidates(quick: bool) -> list[Candidate]:
    pe = optorth.ns.polar_express_schedule
    out = [
        Candidate("jordan standard (previous default)", dict(method="standard"), 5),
        Candidate("jordan auto (gram n/m≥2)", dict(method="auto"), 5, "auto"),
        Candidate("turbo auto (aol, 4 steps)", dict(schedule="turbo", method="auto"), 4, "auto"),
        Candidate("pe(4,5e-3) auto spectral",
                  dict(schedule=pe(4, sigma_min=5e-3), method="auto", precondition="spectral"),
                  4, "auto"),
        Candidate("pe(3,1e-2) auto spectral",
                  dict(schedule=pe(3, sigma_min=1e-2), method="auto", precondition="spectral"),
                  3, "auto"),
    ]
    return out if not quick else [out[0], out[2], out[3]]


def find_candidate(substring: str) -> Candidate:
    found = [c for c in candidates(False) if substring in c.name]
    if not found:
        raise SystemExit(f"--best {substring!r} matches none of "
                         f"{[c.name for c in candidates(False)]}")
    return found[0]


# ----------------------------------------------------------------------------- parameters
def gpt2_params(layers: int, seed: int = 0):
    """GPT-2-small parameters (``layers`` blocks) and gradients as float32 arrays."""
    shapes = gpt2_small_shapes()
    shapes["h"] = {k: v for k, v in shapes["h"].items() if int(k) < layers}
    leaves, treedef = jax.tree.flatten(shapes)
    keys = jax.random.split(jax.random.PRNGKey(seed), 2 * len(leaves))
    params = [0.02 * jax.random.normal(k, s.shape) for k, s in zip(keys[0::2], leaves,
                                                                     strict=True)]
    grads = [jax.random.normal(k, s.shape) for k, s in zip(keys[1::2], leaves, strict=True)]
    return treedef.unflatten(params), treedef.unflatten(grads)


def optax_same_routing(params):
    """optax dimension numbers with optorth's routing: hidden kernels only."""
    dims = optax.contrib.MuonDimensionNumbers()

    def label(path, x):
        names = [str(getattr(k, "key", k)) for k in path]
        hidden = x.ndim == 2 and not any(n in ("wte", "wpe") for n in names)
        return dims if hidden else None

    return jax.tree_util.tree_map_with_path(label, params)


def optimizers(params, extra: list[Candidate]):
    """(name, transformation) of the updates timed in section 3."""
    txs = [("optax.contrib.muon default", optax.contrib.muon(0.02)),
           ("optax muon, same routing", optax.contrib.muon(
               0.02, muon_weight_dimension_numbers=optax_same_routing(params))),
           ("optorth.muon default", optorth.muon())]
    txs += [(update_name(c), optorth.muon(ns=c.ns)) for c in extra if c.muon_kwargs]
    return txs


def update_name(c: Candidate) -> str:
    return f"optorth.muon {c.name}" if c.muon_kwargs else "optorth.muon default"


# ----------------------------------------------------------------------------- compiling
def compile_update(tx, grads, params, state=None):
    """(compiled update, its args, compile seconds); the state is initialized eagerly."""
    state = tx.init(params) if state is None else state
    start = time.perf_counter()
    compiled = jax.jit(tx.update).lower(grads, state, params).compile()
    return compiled, (grads, state, params), time.perf_counter() - start


def memory_row(compiled) -> dict[str, float]:
    stats = compiled.memory_analysis()
    mib = 2.0**20
    return dict(temp_mib=stats.temp_size_in_bytes / mib,
                argument_mib=stats.argument_size_in_bytes / mib,
                output_mib=stats.output_size_in_bytes / mib,
                alias_mib=stats.alias_size_in_bytes / mib)


# ----------------------------------------------------------------------------- 1. accuracy
def accuracy_table(cands, rng, acc_count=1):
    """max|σ−1| (log, gauss spectra) per shape, optax default first."""
    rows = {}
    problems = {shape: make_problem(rng, acc_count, *shape) for shape in GPT2_SHAPES}
    optax_fn = jax.jit(lambda x: optax_ns(x, jnp.asarray(JORDAN_ROW)))
    entries = [("optax default (jordan×5)", optax_fn)] + [(c.name, jax.jit(c.engine))
                                                         for c in cands]
    for name, fn in entries:
        errs = {}
        for shape, prob in problems.items():
            for spectrum, x in prob.inputs.items():
                out = np.asarray(fn(x), np.float32)
                errs[(shape, spectrum)] = accuracy(out, prob, spectrum, acc_count)
        rows[name] = errs
    return rows


def qualifying(acc_rows, cands, slack=1e-4):
    base = acc_rows["optax default (jordan×5)"]
    return [c for c in cands
            if all(mine <= theirs + slack
                   for k in base for mine, theirs in zip(acc_rows[c.name][k], base[k],
                                                         strict=True))]


def print_accuracy(acc_rows, ok_names):
    keys = list(next(iter(acc_rows.values())))
    print("\n== 1. accuracy per shape: max|σ−1| over σ ≥ 1e-3·σ_max, then ‖O − UVᵀ‖_F/‖UVᵀ‖_F;"
          " log spectrum / gaussian spectrum")
    head = "".join(f" {f'{m}x{n}':>23s}" for (m, n), s in keys if s == "log")
    print(f"{'configuration':34s}{head}  qualifies")
    for name, errs in acc_rows.items():
        for measure in (0, 1):
            label = name if measure == 0 else ""
            cells = "".join(f" {errs[(shape, 'log')][measure]:11.4f}/"
                            f"{errs[(shape, 'gauss')][measure]:<11.4f}" for shape in GPT2_SHAPES)
            mark = ("baseline" if name.startswith("optax")
                    else "yes" if name in ok_names else "no") if measure == 0 else ""
            print(f"{label:34s}{cells}  {mark}")


# ----------------------------------------------------------------------------- 2. throughput
def matrix_tree(params):
    """The hidden kernels only (what the orthogonalization sees)."""
    return {k: v for k, v in jax.tree_util.tree_flatten_with_path(params)[0]
            if v.ndim == 2 and not any(str(getattr(p, "key", "")) in ("wte", "wpe")
                                       for p in k)}


def throughput(params, cands, repeats):
    """Orthogonalize block on the hidden matrices vs float32 matmuls of the same sizes."""
    mats = {jax.tree_util.keystr(k): v for k, v in matrix_tree(params).items()}
    shapes = [v.shape for v in mats.values()]
    fns, args = {}, {}
    for c in cands:
        tx = optorth.orthogonalize(c.ns)
        state = tx.init(mats)
        fns[c.name] = jax.jit(tx.update).lower(mats, state).compile()
        args[c.name] = (mats, state)
    by_shape: dict[tuple, int] = {}
    for s in shapes:
        by_shape[s] = by_shape.get(s, 0) + 1
    stacks = {s: jnp.stack([v for v in mats.values() if v.shape == s]) for s in by_shape}

    def wide(x):
        return x if x.shape[-2] <= x.shape[-1] else jnp.swapaxes(x, -1, -2)

    def products(stacks):
        out = []
        for x in stacks.values():
            w = wide(x)
            a = w @ jnp.swapaxes(w, -1, -2)  # (k×n)(n×k)
            out.append(a @ w)  # (k×k)(k×n)
        return out

    fns["float32 matmul (XXᵀ, AX)"] = jax.jit(products).lower(stacks).compile()
    args["float32 matmul (XXᵀ, AX)"] = (stacks,)
    timings = time_round_robin(fns, args, repeats)
    mm_flops = sum(count * 4 * min(s) ** 2 * max(s) for s, count in by_shape.items())
    mm_rate = mm_flops / timings["float32 matmul (XXᵀ, AX)"].median / 1e9
    rows = []
    for c in cands:
        flops = sum(count * ns_flops(*s, c.cost()) for s, count in by_shape.items())
        t = timings[c.name].median
        rows.append(dict(config=c.name, time_s=t, gflop=flops / 1e9, gflops=flops / t / 1e9,
                         mm_frac=flops / t / 1e9 / mm_rate))
    return rows, mm_rate


def print_throughput(rows, mm_rate):
    print(f"\n== 2. orthogonalization of the hidden matrices (float32 matmul: {mm_rate:.1f} "
          f"GFLOP/s)")
    print(f"{'configuration':34s} {'time s':>7s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'÷matmul':>8s}")
    for r in rows:
        print(f"{r['config']:34s} {r['time_s']:7.3f} {r['gflop']:7.1f} {r['gflops']:8.1f} "
              f"{r['mm_frac']:8.2f}")


# ----------------------------------------------------------------------------- 3+4. updates
def step_times(params, grads, txs, repeats, state_fn=None):
    fns, args, rows = {}, {}, {}
    for name, tx in txs:
        try:
            compiled, a, compile_s = compile_update(tx, grads, params,
                                                    None if state_fn is None
                                                    else state_fn(tx))
        except Exception as err:  # noqa: BLE001 - reported, e.g. optax under explicit axes
            rows[name] = dict(error=f"{type(err).__name__}: {str(err).splitlines()[0][:120]}")
            continue
        fns[name], args[name] = compiled, a
        hlo = compiled.as_text()
        rows[name] = dict(compile_s=compile_s, **memory_row(compiled),
                          collectives=collective_counts(hlo),
                          collectives_in_loops=collectives_in_loops(hlo))
    for name, t in time_round_robin(fns, args, repeats).items():
        rows[name].update(time_s=t.median, best_s=t.best, times=list(t.times))
    return rows


def print_steps(rows, title, baselines=("optax.contrib.muon default",
                                        "optax muon, same routing")):
    print(f"\n== {title}")
    base = {b: rows[b]["time_s"] for b in baselines if "time_s" in rows.get(b, {})}
    cols = "".join(f" {'÷' + b[:22]:>24s}" for b in base)
    print(f"{'update':44s} {'time s':>7s}{cols} {'temp MiB':>9s} {'out MiB':>8s}")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:44s} FAILS: {r['error']}")
            continue
        ratios = "".join(f" {r['time_s'] / t:24.3f}" for t in base.values())
        print(f"{name:44s} {r['time_s']:7.2f}{ratios} {r['temp_mib']:9.1f} "
              f"{r['output_mib']:8.1f}")


def print_collectives(rows):
    print(f"\n{'update':44s} " + " ".join(f"{c:>18s}" for c in COLLECTIVES) + "  in loops")
    for name, r in rows.items():
        if "collectives" in r:
            print(f"{name:44s} " + " ".join(f"{r['collectives'][c]:18d}" for c in COLLECTIVES)
                  + f"  {r['collectives_in_loops']:8d}")


# ----------------------------------------------------------------------------- devices
def fsdp_spec(shape, size, axis_name="x"):
    from jax.sharding import PartitionSpec as P

    for axis, dim in enumerate(shape):
        if dim % size == 0:
            return P(*([None] * axis + [axis_name] + [None] * (len(shape) - axis - 1)))
    return P()


def run_devices(args):
    from jax.sharding import AxisType, NamedSharding

    n = jax.device_count()
    print(f"jax {jax.__version__}: {n} simulated {jax.devices()[0].platform} devices, FSDP")
    params, grads = gpt2_params(args.layers)
    extra = [find_candidate(name) for name in args.best.split(",") if name]
    results = {}
    for kind_name, kind in (("auto", AxisType.Auto), ("explicit", AxisType.Explicit)):
        mesh = jax.make_mesh((n,), ("x",), axis_types=(kind,))

        def place(tree, mesh=mesh):
            return jax.tree.map(lambda x: jax.device_put(
                x, NamedSharding(mesh, fsdp_spec(x.shape, n))), tree)

        p, g = place(params), place(grads)
        txs = optimizers(p, extra)
        with jax.set_mesh(mesh):
            rows = step_times(p, g, txs, args.repeats)
        print_steps(rows, f"3/4. step time and per-device memory, {n} devices, {kind_name} "
                          f"axes (FSDP)")
        print_collectives(rows)
        results[kind_name] = rows
    return results


def _respawn(args) -> int:
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count="
                                     f"{args.devices}".strip(), STEP_TIME_CHILD="1")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.call([sys.executable, "-m", "benchmarks.micro.step_time"] + sys.argv[1:],
                           env=env, cwd=root)


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 layers, 2 repeats, 3 candidates")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--devices", type=int, default=1, help="simulated CPU devices (FSDP run)")
    p.add_argument("--best", default="", help="with --devices: also time the candidates "
                   "whose names contain these comma-separated strings (e.g. 'pe(4,jordan auto')"
                   "; default: only optorth's default")
    p.add_argument("--skip-optax-default", action="store_true",
                   help="do not time optax's default routing (its embedding NS is slow)")
    p.add_argument("--json", default="", help="write all numbers to this file")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.layers, args.repeats = min(args.layers, 2), min(args.repeats, 2)
    return args


def single_device(args):
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} cores); "
          f"GPT-2 small with {args.layers} layers; repeats={args.repeats}")
    rng = np.random.default_rng(args.seed)
    cands = candidates(args.quick)
    acc = accuracy_table(cands, rng)
    ok = qualifying(acc, cands)
    print_accuracy(acc, {c.name for c in ok})
    params, grads = gpt2_params(args.layers, args.seed)
    tput, mm_rate = throughput(params, ok, args.repeats)
    print_throughput(tput, mm_rate)
    txs = optimizers(params, ok)
    if args.skip_optax_default:
        txs = txs[1:]
    rows = step_times(params, grads, txs, args.repeats)
    print_steps(rows, "3/4. step time (median of repeats) and compiled memory, one device")
    best = min(ok, key=lambda c: rows[update_name(c)]["time_s"])
    key = update_name(best)
    print(f"fastest update at least as accurate as optax's default: {key} {best.muon_kwargs}")
    for base in ("optax.contrib.muon default", "optax muon, same routing"):
        if "time_s" in rows.get(base, {}):
            mine, theirs = rows[key], rows[base]
            print(f"ratio {key} / {base}: median {mine['time_s'] / theirs['time_s']:.3f}, "
                  f"best {mine['best_s'] / theirs['best_s']:.3f} (target ≤ 0.5); per round: "
                  + " ".join(f"{a / b:.3f}" for a, b in zip(mine["times"], theirs["times"],
                                                            strict=True)))
    best_tput = next(r for r in tput if r["config"] == best.name)
    print(f"orthogonalization throughput of {best.name}: {best_tput['mm_frac']:.2f} of float32 "
          f"matmul (target ≥ 0.85)")
    return dict(accuracy={k: {f"{s[0][0]}x{s[0][1]} {s[1]}": list(v) for s, v in e.items()}
                          for k, e in acc.items()},
                throughput=tput, matmul_gflops=mm_rate, best=best.name,
                best_kwargs=_jsonable(best.muon_kwargs), steps=rows)


def _jsonable(kwargs):
    out = {}
    for k, v in kwargs.items():
        out[k] = v.to_dict() if hasattr(v, "to_dict") else v
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.devices > 1 and os.environ.get("STEP_TIME_CHILD") != "1":
        return _respawn(args)
    if args.devices > 1:
        results = run_devices(args)
    else:
        results = single_device(args)
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
