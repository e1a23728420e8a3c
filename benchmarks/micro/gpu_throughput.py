"""bf16 Newton–Schulz throughput against bf16 matmul throughput on an accelerator.

For each GPT-2-small matrix shape (stacked over its 12 layers, one batched call per
shape), times a plain batched bf16 matmul ``X Xᵀ`` and several orthogonalization
configurations in the same process, and prints achieved TFLOP/s and the ratio to the
matmul. Also times optax's ``orthogonalize_via_newton_schulz`` (vmapped) as the
incumbent. Run it where a GPU/TPU is available::

    python -m benchmarks.micro.gpu_throughput --out out/gpu_throughput.json

On a CPU it runs too (use ``--layers 1`` to keep it short), but the numbers mean little.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

import optorth
from benchmarks.micro._timing import time_round_robin

GPT2_SHAPES = ((768, 2304), (768, 768), (768, 3072), (3072, 768))


def _time(fn, x, repeats: int) -> float:
    """Median wall time of the jitted ``fn(x)`` in seconds (after 2 untimed calls)."""
    return time_round_robin({"fn": fn}, {"fn": (x,)}, repeats, warmup=2)["fn"].median


def ns_flops(batch: int, m: int, n: int, steps: int) -> float:
    """FLOPs of the standard quintic iteration: per step 4m²n + 2m³ (m ≤ n)."""
    m, n = min(m, n), max(m, n)
    return batch * steps * (4.0 * m * m * n + 2.0 * m**3)


def configs():
    """(name, function of x, steps) for the configurations compared."""
    def ours(**kw):
        ns = optorth.NewtonSchulz(**{"method": "standard", "dtype": jnp.bfloat16, **kw})
        return jax.jit(lambda x: optorth.newton_schulz(x, ns))

    from optax.contrib._muon import orthogonalize_via_newton_schulz as optax_ns

    jordan = jnp.asarray((3.4445, -4.7750, 2.0315))
    optax_fn = jax.jit(jax.vmap(lambda x: optax_ns(x, jordan, 5, eps=1e-7)))
    return (
        ("optax NS5 (vmapped)", optax_fn, 5),
        ("optorth jordan standard", ours(schedule="jordan"), 5),
        ("optorth jordan gram", ours(schedule="jordan", method="gram"), 5),
        ("optorth polar_express5 standard", ours(schedule="polar_express5"), 5),
        ("optorth turbo (aol, 4 steps)", ours(schedule="turbo"), 4),
        ("optorth turbo gram", ours(schedule="turbo", method="gram"), 4),
    )


def accuracy(y, x) -> float:
    """max |σ − 1| of the output over input σ ≥ 1e-3 σ_max (float64 SVD of one matrix)."""
    s_in = np.linalg.svd(np.asarray(x[0], np.float64), compute_uv=False)
    s_out = np.linalg.svd(np.asarray(y[0].astype(jnp.float32), np.float64), compute_uv=False)
    keep = s_in >= 1e-3 * s_in[0]
    return float(np.max(np.abs(s_out[: keep.sum()] - 1.0)))


def run(layers: int, repeats: int, shrink: int = 1):
    rows = []
    key = jax.random.PRNGKey(0)
    for m, n in GPT2_SHAPES:
        m, n = m // shrink, n // shrink
        x = jax.random.normal(key, (layers, m, n), jnp.float32).astype(jnp.bfloat16)
        wide = x if m <= n else jnp.swapaxes(x, -1, -2)
        mm = jax.jit(lambda a: a @ jnp.swapaxes(a, -1, -2))
        t_mm = _time(mm, wide, repeats=repeats)
        mm_flops = 2.0 * layers * min(m, n) ** 2 * max(m, n)
        mm_tflops = mm_flops / t_mm / 1e12
        for name, fn, steps in configs():
            t = _time(fn, x, repeats=repeats)
            tflops = ns_flops(layers, m, n, steps) / t / 1e12
            err = accuracy(fn(x), x.astype(jnp.float32))
            rows.append({
                "shape": f"{layers}x{m}x{n}", "config": name, "ms": 1e3 * t,
                "tflops": tflops, "matmul_tflops": mm_tflops, "ratio": tflops / mm_tflops,
                "max_sigma_err": err,
            })
            print(f"{layers}x{m}x{n:<6} {name:34s} {1e3 * t:8.3f} ms  {tflops:7.1f} eff. TFLOP/s"
                  f"  matmul {mm_tflops:7.1f}  ratio {tflops / mm_tflops:5.2f}  "
                  f"max|σ-1| {err:.3f}", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--shrink", type=int, default=1, help="divide every dim (smoke test)")
    parser.add_argument("--out", default="out/gpu_throughput.json")
    args = parser.parse_args(argv)
    print("backend:", jax.default_backend(), jax.devices()[0].device_kind, "jax", jax.__version__)
    rows = run(args.layers, args.repeats, args.shrink)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"device": jax.devices()[0].device_kind, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
