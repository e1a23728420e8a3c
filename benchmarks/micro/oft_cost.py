"""OFTv2's input-centric forward vs the weight-centric one: time and memory of a training step.

    python -m benchmarks.micro.oft_cost | tee benchmarks/results/oft_cost_cpu.log

Qiu et al., "Orthogonal Finetuning Made Scalable" (arXiv 2506.19847) compute ``(x R) W``
(input-centric) instead of ``x (R W)`` (weight-centric, the original OFT). For one
``OFTLinear`` (``d`` inputs, ``n`` outputs, blocks of ``b``) and ``N`` tokens, each step is the
loss ``mean(y²)`` and its gradient with respect to ``oft_skew`` (forward + backward), for

* ``weight-centric dense``: the dense block-diagonal ``R`` times ``W`` (``O(n d²)``), as the
  original OFT implementation did; the baseline of every ratio;
* ``weight-centric blockwise``: ``R W`` formed block by block (``O(n d b)``);
* ``input-centric``: ``OFTLinear.__call__``, ``x R`` block by block (``O(N d b)``);
* ``frozen base only``: the plain ``nnx.Linear``, no adapter (its gradient is on the input),
  for scale.

Times are medians of interleaved repeats (``benchmarks/micro/_timing.py``) in one
process; memory is XLA's compiled ``memory_analysis().temp_size_in_bytes`` (the step's
temporaries; the arguments, ``W`` included, are the same for every method).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks.micro._timing import cost_cells, machine
from optorth.nn._adapter import AdapterParam  # noqa: E402
from optorth.nn._oft import OFTLinear  # noqa: E402

#: (d = in_features, n = out_features, N = tokens, b = block_size)
SIZES = ((256, 256, 64, 32), (1024, 1024, 128, 32), (1024, 1024, 2048, 32),
         (1024, 4096, 512, 64))
BASELINE = "weight-centric dense"


def steps(d: int, n: int, b: int):
    """(name -> step(params, rest, x), params, rest) for one adapted layer."""
    base = nnx.Linear(d, n, rngs=nnx.Rngs(0))
    layer = OFTLinear(base, block_size=b)
    layer.oft_skew[...] = 0.05 * jax.random.normal(jax.random.key(1), layer.oft_skew.shape)
    graphdef, params, rest = nnx.split(layer, AdapterParam, ...)

    def step(apply):
        def loss(params, rest, x):
            return jnp.mean(apply(nnx.merge(graphdef, params, rest), x) ** 2)

        return jax.value_and_grad(loss)

    def frozen_only(params, rest, x):
        model = nnx.merge(graphdef, params, rest)
        return jax.value_and_grad(lambda x: jnp.mean(model.base(x) ** 2))(x)

    fns = {
        BASELINE: step(lambda m, x: m.weight_centric_call(x, dense=True)),
        "weight-centric blockwise": step(lambda m, x: m.weight_centric_call(x)),
        "input-centric": step(lambda m, x: m(x)),
        "frozen base only": frozen_only,
    }
    return fns, params, rest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"OFTLinear forward + backward (gradient on oft_skew), float32, {machine()}, median "
          f"of {args.repeats} interleaved repeats; ratios to '{BASELINE}' in the same process\n")
    print("| d | n | N | b | method | ms/step | × time | temp MiB | × temp |")
    print("|---|---|---|---|---|---|---|---|---|")
    for d, n, tokens, b in SIZES:
        fns, params, rest = steps(d, n, b)
        x = jax.random.normal(jax.random.key(2), (tokens, d))
        cells = cost_cells(fns, dict.fromkeys(fns, (params, rest, x)), args.repeats, BASELINE)
        for name in fns:
            print(f"| {d} | {n} | {tokens} | {b} | {name} | {cells[name]} |")
    print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
