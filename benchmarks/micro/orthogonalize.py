"""Accuracy and speed of Newton–Schulz orthogonalization configurations against optax.

For each float32 matrix shape (and the GPT-2-small set: 12 layers of 768×2304, 768×768,
768×3072 and 3072×768, one batched call per shape) this prints, per configuration:

* accuracy on inputs with a known SVD ``X = U diag(s) Vᵀ`` (random orthogonal U, V):
  ``max|σ−1|`` over the input's σ ≥ 1e-3·σ_max, where the output's σ_i is read as
  ``u_iᵀ O v_i`` (exact for ``O = U φ(S) Vᵀ``), and the relative Frobenius distance
  ``‖O − UVᵀ‖_F / ‖UVᵀ‖_F`` to the exact polar factor, both in float64 NumPy. Two spectra:
  ``log`` (σ log-spaced over [1e-3, 1]·σ_max: the schedules' whole design interval) and
  ``gauss`` (the singular values of a standard normal matrix of that shape);
* time relative to optax's ``orthogonalize_via_newton_schulz`` with its default 5-step
  Jordan coefficient tuple (an unrolled ``fori_loop``), measured in the same process,
  interleaved round-robin, jitted and warm, median of ``--repeats``;
* achieved GFLOP/s (analytic flop count of each method) relative to plain float32 matmuls
  of the same sizes (``X Xᵀ`` and ``A X``, the two products a Newton–Schulz step is made of,
  timed in the same interleaved rounds).

It then sweeps the aspect ratio at which the Gram iteration overtakes the standard one
(``GRAM_CROSSOVER`` in ``optorth/ns/_engine.py``) and saves a plot of accuracy against
relative time. Example::

    python -m benchmarks.micro.orthogonalize --quick     # 768x3072 + 1-layer GPT-2 shapes
    python -m benchmarks.micro.orthogonalize --out out/orthogonalize.png      # everything

On the shared 2-core CPU where it was written (load ≈ 9) these took 7 and 58 minutes.
A JSON of all rows is written next to the plot.
Timings on a shared CPU are noisy; compare ratios within one run, not seconds across runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from optax.contrib._muon import MuonDimensionNumbers, orthogonalize_via_newton_schulz

import optorth
from benchmarks.micro._timing import Timing, time_interleaved

JORDAN_ROW = (3.4445, -4.7750, 2.0315)
GPT2_SHAPES = ((768, 2304), (768, 768), (768, 3072), (3072, 768))
SIGMA_FLOOR = 1e-3
BASELINE = "optax jordan×5 (tuple, unrolled)"
MM_GRAM, MM_APPLY = "matmul X Xᵀ", "matmul A X"


@dataclasses.dataclass(frozen=True)
class Config:
    """One orthogonalization configuration: a function of a (..., m, n) array plus its cost."""

    name: str
    fn: Callable[[jax.Array], jax.Array]
    steps: int
    method: str = "standard"
    dtype: object = jnp.float32
    restart: int | None = None
    core: bool = False  # also run in --quick mode and on the GPT-2 set by default


def optax_ns(x, coeffs):
    """optax's orthogonalize_via_newton_schulz on a (m, n) or (B, m, n) array."""
    dims = None if x.ndim == 2 else MuonDimensionNumbers(reduction_axis=1, output_axis=2)
    return orthogonalize_via_newton_schulz(x, coeffs, ns_steps=5, dimension_numbers=dims)


def _ns(schedule, *, method="standard", restart=None, **kwargs):
    ns = optorth.NewtonSchulz(schedule, method=method, **kwargs)
    if restart is None:
        return lambda x: optorth.newton_schulz(x, ns)
    safety, precondition = ns.normalization()
    table = jnp.asarray(ns.table(), jnp.float32)
    return lambda x: optorth.ns.newton_schulz_table(
        x, table, safety=safety, precondition=precondition, method=method,
        dtype=ns.compute_dtype, restart=restart)


def build_configs() -> list[Config]:
    """The configurations compared; ``core`` ones also run in --quick mode and on GPT-2."""
    jordan_row = jnp.asarray(JORDAN_ROW)
    jordan_table = jnp.tile(jordan_row, (5, 1))
    bf16 = jnp.bfloat16
    pe = optorth.ns.polar_express_schedule
    pe5, pe4 = pe(5, sigma_min=1e-3), pe(4, sigma_min=1e-3)
    # Steeper designs: minimax on [5e-3, 1] / [1e-2, 1]; below that they rely on ∏a.
    pe4s, pe3s = pe(4, sigma_min=5e-3), pe(3, sigma_min=1e-2)
    return [
        Config(BASELINE, lambda x: optax_ns(x, jordan_row), 5, core=True),
        Config("optax jordan×5 (table, scan)", lambda x: optax_ns(x, jordan_table), 5),
        Config("jordan standard", _ns("jordan"), 5, core=True),
        Config("jordan gram", _ns("jordan", method="gram"), 5, "gram", core=True),
        Config("jordan gram no-restart", _ns("jordan", method="gram", restart=0), 5, "gram",
               restart=0),
        Config("you gram", _ns("you", method="gram"), 5, "gram"),
        Config("polar_express5 standard", _ns("polar_express5"), 5),
        Config("polar_express5 gram", _ns("polar_express5", method="gram"), 5, "gram"),
        Config("polar_express5 gram schatten",
               _ns("polar_express5", method="gram", precondition="schatten"), 5, "gram"),
        Config("turbo standard (aol)", _ns("turbo"), 4),
        Config("turbo gram (aol)", _ns("turbo", method="gram"), 4, "gram", core=True),
        Config("pe(5,1e-3) auto spectral", _ns(pe5, method="auto", precondition="spectral"),
               5, "auto", core=True),
        Config("pe(4,1e-3) auto spectral", _ns(pe4, method="auto", precondition="spectral"),
               4, "auto"),
        Config("pe(4,5e-3) auto spectral", _ns(pe4s, method="auto", precondition="spectral"),
               4, "auto", core=True),
        Config("pe(3,1e-2) auto spectral", _ns(pe3s, method="auto", precondition="spectral"),
               3, "auto", core=True),
        Config("jordan standard bf16", _ns("jordan", dtype=bf16), 5, dtype=bf16, core=True),
        Config("turbo gram bf16", _ns("turbo", method="gram", dtype=bf16), 4, "gram", bf16),
        Config("pe(4,5e-3) auto spectral bf16",
               _ns(pe4s, method="auto", precondition="spectral", dtype=bf16), 4, "auto", bf16),
    ]


def ns_flops(m: int, n: int, cfg: Config) -> float:
    """Matmul flops of one orthogonalization of an m×n matrix (O(mn) terms ignored).

    Standard step on the wide orientation (m ≤ n): XXᵀ, A², BX = 4m²n + 2m³. Gram: R = XXᵀ,
    then a chunk of L steps between restarts costs (8L − 6)m³ plus QX (2m²n); every restart
    recomputes R (2m²n).
    """
    method = optorth.ns.choose_method((m, n), cfg.method)
    m, n = sorted((m, n))
    if method == "standard" or m == 1:
        return cfg.steps * (4 * m * m * n + 2 * m**3)
    restart = optorth.ns.default_restart(cfg.dtype) if cfg.restart is None else cfg.restart
    bounds = list(range(0, cfg.steps, restart)) if restart else [0]
    chunks = np.diff(bounds + [cfg.steps])
    return sum((8 * length - 6) * m**3 + 4 * m * m * n for length in chunks)


# ----------------------------------------------------------------------------- inputs


def _orthonormal(rng, rows, cols):
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


@dataclasses.dataclass
class Problem:
    """A batch (B, m, n) of inputs with known SVDs, sharing U, V across spectra."""

    u: np.ndarray  # (B, m, k) float32
    v: np.ndarray  # (B, n, k) float32
    spectra: dict  # name -> (k,) float64, descending, σ_max = 1
    inputs: dict  # name -> jax array (B, m, n) float32


def make_problem(rng, batch: int, m: int, n: int) -> Problem:
    """Inputs U diag(s) Vᵀ for the ``log`` and ``gauss`` spectra (see the module docstring)."""
    k = min(m, n)
    u = np.stack([_orthonormal(rng, m, k) for _ in range(batch)]).astype(np.float32)
    v = np.stack([_orthonormal(rng, n, k) for _ in range(batch)]).astype(np.float32)
    gauss = np.linalg.svd(rng.standard_normal((m, n)), compute_uv=False)
    spectra = {"log": np.logspace(0, np.log10(SIGMA_FLOOR), k), "gauss": gauss / gauss[0]}
    inputs = {
        name: jnp.asarray(np.einsum("bik,k,bjk->bij", u, s.astype(np.float32), v))
        for name, s in spectra.items()
    }
    return Problem(u, v, spectra, inputs)


def accuracy(out: np.ndarray, prob: Problem, spectrum: str, count: int) -> tuple[float, float]:
    """(max|σ−1| over σ ≥ 1e-3·σ_max, ‖O − UVᵀ‖_F/‖UVᵀ‖_F) over the first ``count`` matrices."""
    s = prob.spectra[spectrum]
    keep = s >= SIGMA_FLOOR * s[0] * (1 - 1e-9)
    worst, rel = 0.0, 0.0
    for b in range(min(count, out.shape[0])):
        o = out[b].astype(np.float64)
        u, v = prob.u[b].astype(np.float64), prob.v[b].astype(np.float64)
        d = np.einsum("ij,ji->i", u.T @ o, v)
        k = d.size
        worst = max(worst, float(np.max(np.abs(d[keep] - 1.0))))
        dist2 = max(np.sum(o * o) - 2 * np.sum(d) + k, 0.0)
        rel = max(rel, float(np.sqrt(dist2 / k)))
    return worst, rel


# ----------------------------------------------------------------------------- runs


def _matmul_fns(m: int, n: int) -> dict[str, Callable[[jax.Array], jax.Array]]:
    """The two float32 products of a Newton–Schulz step at these sizes (wide orientation)."""
    k = min(m, n)

    def wide(x):
        return x if x.shape[-2] <= x.shape[-1] else jnp.swapaxes(x, -1, -2)

    return {
        MM_GRAM: lambda x: wide(x) @ jnp.swapaxes(wide(x), -1, -2),  # (k×n)(n×k)
        MM_APPLY: lambda x: wide(x)[..., :, :k] @ wide(x),  # (k×k)(k×n)
    }


def run_case(label, prob: Problem, configs, repeats, acc_count):
    """Times all configs interleaved on the ``log`` input and measures both accuracies."""
    x = prob.inputs["log"]
    batch, m, n = x.shape
    squeeze = batch == 1
    arg = x[0] if squeeze else x
    fns = {c.name: c.fn for c in configs} | _matmul_fns(m, n)
    timings: dict[str, Timing] = time_interleaved(fns, arg, repeats=repeats)
    mm_flops = 2 * (2 * min(m, n) ** 2 * max(m, n)) * batch
    mm_rate = mm_flops / (timings[MM_GRAM].median + timings[MM_APPLY].median) / 1e9
    base = timings[BASELINE].median
    rows = []
    for cfg in configs:
        fn = jax.jit(cfg.fn)
        acc = {}
        for spectrum, inp in prob.inputs.items():
            out = fn(inp[0] if squeeze else inp)
            out = np.asarray(out.astype(jnp.float32)).reshape(batch, m, n)
            if not np.all(np.isfinite(out)):
                acc[spectrum] = (float("nan"), float("nan"))
                continue
            acc[spectrum] = accuracy(out, prob, spectrum, acc_count)
        t = timings[cfg.name].median
        rate = ns_flops(m, n, cfg) * batch / t / 1e9
        rows.append(dict(case=label, config=cfg.name, steps=cfg.steps, time_s=t,
                         rel_time=t / base, speedup=base / t, gflops=rate,
                         mm_frac=rate / mm_rate, err_log=acc["log"][0], fro_log=acc["log"][1],
                         err_gauss=acc["gauss"][0], fro_gauss=acc["gauss"][1]))
    return rows, mm_rate


HEADER = (f"{'config':36s} {'T':>2s} {'rel.time':>8s} {'speedup':>7s} {'GF/s':>6s} "
          f"{'÷matmul':>7s} {'max|σ−1|log':>11s} {'relF log':>9s} "
          f"{'max|σ−1|gau':>11s} {'relF gau':>9s}")


def print_rows(label, rows, mm_rate):
    print(f"\n== {label}   (baseline: {BASELINE} = {rows[0]['time_s'] * 1e3:.1f} ms; "
          f"float32 matmul {mm_rate:.1f} GFLOP/s)")
    print(HEADER)
    for r in rows:
        print(f"{r['config']:36s} {r['steps']:2d} {r['rel_time']:8.3f} {r['speedup']:7.2f} "
              f"{r['gflops']:6.1f} {r['mm_frac']:7.2f} {r['err_log']:11.4f} "
              f"{r['fro_log']:9.2e} {r['err_gauss']:11.4f} {r['fro_gauss']:9.2e}")


def best_config(rows, slack=1e-4):
    """The fastest optorth row with max|σ−1| ≤ the baseline's (+ slack) on both spectra."""
    base = next(r for r in rows if r["config"] == BASELINE)
    ok = [r for r in rows if not r["config"].startswith("optax")
          and r["err_log"] <= base["err_log"] + slack
          and r["err_gauss"] <= base["err_gauss"] + slack]
    return min(ok, key=lambda r: r["rel_time"]) if ok else None


def crossover(m, ns, repeats, rng):
    """Time of standard vs Gram (Jordan ×5, float32) for m×n matrices, interleaved."""
    print(f"\n== Gram crossover: jordan×5 float32, m={m}; ratio = time(gram) / time(standard)")
    print(f"{'n':>6s} {'n/m':>5s} {'standard ms':>11s} {'gram ms':>8s} {'ratio':>6s}")
    results = []
    for n in ns:
        x = jnp.asarray(rng.standard_normal((m, n)), jnp.float32)
        t = time_interleaved({"standard": _ns("jordan"), "gram": _ns("jordan", method="gram")},
                             x, repeats=repeats)
        ratio = t["gram"].median / t["standard"].median
        results.append(dict(n=n, aspect=n / m, standard_s=t["standard"].median,
                            gram_s=t["gram"].median, ratio=ratio))
        print(f"{n:6d} {n / m:5.2f} {t['standard'].median * 1e3:11.1f} "
              f"{t['gram'].median * 1e3:8.1f} {ratio:6.2f}")
    faster = [r["aspect"] for r in results if r["ratio"] < 1.0]
    wins_after = [a for a in faster if all(r["ratio"] < 1.0 for r in results if r["aspect"] >= a)]
    print(f"Gram is faster from n/m = {min(wins_after):.2f} on" if wins_after
          else "Gram never faster in this sweep")
    return results


def plot(all_rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in all_rows))
    names = list(dict.fromkeys(r["config"] for r in all_rows))
    cols = min(3, len(cases))
    rows_n = -(-len(cases) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 4.2 * rows_n), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, case in zip(axes.flat, cases, strict=False):
        for r in (r for r in all_rows if r["case"] == case):
            i = names.index(r["config"])
            ax.scatter(r["rel_time"], r["err_log"], color=cmap(i % 20), marker="o")
            ax.scatter(r["rel_time"], r["err_gauss"], color=cmap(i % 20), marker="^")
            ax.annotate(str(i), (r["rel_time"], r["err_log"]), fontsize=7)
        ax.set_title(case)
        ax.set_xlabel("time / optax default NS")
        ax.set_ylabel("max|σ−1| (o: log spectrum, ^: gaussian)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cases):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=cmap(i % 20), marker="o", ls="", label=f"{i}: {name}")
               for i, name in enumerate(names)]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7)
    fig.tight_layout(rect=(0, 0.04 + 0.012 * len(names) / 3, 1, 1))
    fig.savefig(path, dpi=120)
    print(f"\nplot saved to {path}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="768x768,768x3072,3072x768,1024x4096",
                   help="comma-separated MxN single-matrix cases ('' for none)")
    p.add_argument("--gpt2", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the GPT-2-small set (one batched call per shape)")
    p.add_argument("--layers", type=int, default=12, help="GPT-2 layers per shape")
    p.add_argument("--acc-layers", type=int, default=2,
                   help="GPT-2 matrices per shape whose accuracy is measured")
    p.add_argument("--gpt2-all-configs", action="store_true",
                   help="run every config on the GPT-2 set (default: the core ones)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--gpt2-repeats", type=int, default=3,
                   help="timed repeats for the GPT-2 set (each call is 12 matrices)")
    p.add_argument("--configs", default="", help="only configs whose name contains one of "
                   "these comma-separated substrings (the baseline always runs)")
    p.add_argument("--crossover", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--crossover-m", type=int, default=512)
    p.add_argument("--crossover-n", default="512,640,768,1024,1536,2048,4096")
    p.add_argument("--quick", action="store_true",
                   help="768x3072 + GPT-2 shapes with 1 layer, core configs, 3 repeats, short "
                   "crossover sweep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/orthogonalize.png")
    args = p.parse_args(argv)
    if args.quick:
        args.shapes, args.layers, args.acc_layers = "768x3072", 1, 1
        args.repeats, args.gpt2_repeats = 3, 3
        args.crossover_n = "512,1024,2048"
    return args


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    configs = build_configs()
    if args.configs:
        keys = args.configs.split(",")
        configs = [c for c in configs if c.name == BASELINE or any(k in c.name for k in keys)]
    core = [c for c in configs if c.core]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; repeats={args.repeats}")
    all_rows = []
    for shape in filter(None, args.shapes.split(",")):
        m, n = (int(v) for v in shape.lower().split("x"))
        prob = make_problem(rng, 1, m, n)
        rows, mm = run_case(f"{m}x{n}", prob, core if args.quick else configs, args.repeats, 1)
        print_rows(f"{m}x{n}", rows, mm)
        all_rows += rows
        if (m, n) == (768, 3072):
            best = best_config(rows)
            if best:
                print(f"best optorth at 768x3072 with max|σ−1| ≤ optax's: {best['config']} "
                      f"({best['speedup']:.2f}x faster; target ≥ 2x: "
                      f"{'met' if best['speedup'] >= 2 else 'NOT met'})")
    if args.gpt2:
        gpt2_configs = configs if args.gpt2_all_configs else core
        for m, n in GPT2_SHAPES:
            prob = make_problem(rng, args.layers, m, n)
            label = f"gpt2 {args.layers}x{m}x{n}"
            rows, mm = run_case(label, prob, gpt2_configs, args.gpt2_repeats, args.acc_layers)
            print_rows(label, rows, mm)
            all_rows += rows
        total = {}
        for r in (r for r in all_rows if r["case"].startswith("gpt2")):
            total[r["config"]] = total.get(r["config"], 0.0) + r["time_s"]
        print("\n== GPT-2-small set, all 4 shapes: total time relative to the baseline")
        for name, t in total.items():
            print(f"{name:36s} {t / total[BASELINE]:6.3f}  ({total[BASELINE] / t:.2f}x)")
    sweep = []
    if args.crossover:
        ns = [int(v) for v in args.crossover_n.split(",")]
        sweep = crossover(args.crossover_m, ns, args.repeats, rng)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    if all_rows:
        plot(all_rows, args.out)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"rows": all_rows, "crossover": sweep}, f, indent=1)


if __name__ == "__main__":
    main()
