"""GivensLinear's cost next to a plain nnx.Linear: time and memory of forward + backward.

    python -m benchmarks.micro.givens_cost | tee benchmarks/results/givens_cost_cpu.log

GOFT (Ma et al., "Parameter Efficient Quasi-Orthogonal Fine-Tuning via Givens Rotation",
arXiv 2404.04316) rotates the input of a frozen ``nnx.Linear`` by ``d - 1`` Givens rotations in
``ceil(log2 d)`` parallel layers. For ``d`` inputs, ``d`` outputs and ``N`` tokens, each step is
the loss ``mean(y²)`` and its gradient with respect to the trainable parameters and the input
(what a layer inside a network needs), for

* ``nnx.Linear``: full fine-tuning of the plain layer (gradient on kernel, bias and input);
  the baseline of every ratio;
* ``GivensLinear``: ``GivensLinear.__call__`` (strict GOFT, random angles), which applies the
  layers with static slices, reshapes and elementwise products;
* ``GivensLinear, previous gathers``: the same layer with each rotation layer written as a
  length-``d`` gather of the partner coordinates plus two products (the implementation before
  the gather-free one, kept here for the comparison; its backward is a scatter-add).

Before timing, the two GivensLinear variants are checked to agree (gradients included) and
to return the input bit for bit at zero angles. Times are medians of interleaved repeats
(``benchmarks/micro/_timing.py``) in one process; memory is XLA's compiled
``memory_analysis().temp_size_in_bytes``.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.micro._timing import cost_cells, machine
from optorth.nn._adapter import AdapterParam  # noqa: E402
from optorth.nn._givens import GivensLinear, givens_pairs  # noqa: E402

WIDTHS = (64, 512, 500)
BASELINE = "nnx.Linear"


@functools.lru_cache(maxsize=None)
def _gather_schedule(d: int):
    """Per layer, ``(partner, block, role)`` index arrays of length ``d`` (identity block last)."""
    schedule, offset = [], 0
    for pairs in givens_pairs(d):
        partner, block, role = np.arange(d), np.full(d, d - 1), np.zeros(d, dtype=np.int32)
        for k, (i, j) in enumerate(pairs):
            partner[i], partner[j] = j, i
            block[i] = block[j] = offset + k
            role[j] = 1
        schedule.append((partner, block, role))
        offset += len(pairs)
    return tuple(schedule)


def previous_transform(x, blocks):
    """The gather-based ``x P_1 ... P_L`` (float32 ``x``, ``(d - 1, 2, 2)`` blocks)."""
    blocks = jnp.concatenate([blocks, jnp.eye(2, dtype=blocks.dtype)[None]], axis=0)
    for partner, block, role in _gather_schedule(x.shape[-1]):
        x = x * blocks[block, role, role] + x[..., partner] * blocks[block, 1 - role, role]
    return x


def previous_call(layer: GivensLinear, x):
    rotated = previous_transform(x.astype(jnp.float32), layer.blocks()).astype(x.dtype)
    return layer.base(rotated)


def steps(d: int):
    """(name -> step(params, x), params per name) for one d x d layer."""
    linear = nnx.Linear(d, d, rngs=nnx.Rngs(0))
    adapter = GivensLinear(linear)
    adapter.givens_angles[...] = 0.3 * jax.random.normal(jax.random.key(1), (d - 1,))

    def step(module, wrt, apply):
        graphdef, params, rest = nnx.split(module, wrt, ...)

        def loss(params, x):
            return jnp.mean(apply(nnx.merge(graphdef, params, rest), x) ** 2)

        return jax.value_and_grad(loss, argnums=(0, 1)), params

    made = {BASELINE: step(linear, nnx.Param, lambda m, x: m(x)),
            "GivensLinear": step(adapter, AdapterParam, lambda m, x: m(x)),
            "GivensLinear, previous gathers": step(adapter, AdapterParam, previous_call)}
    return {k: v[0] for k, v in made.items()}, {k: v[1] for k, v in made.items()}


def check(d: int, x):
    """The two GivensLinear variants agree, and both are the identity bit for bit at init."""
    fns, params = steps(d)
    new, old = (jax.jit(fns[k])(params[k], x) for k in ("GivensLinear",
                                                        "GivensLinear, previous gathers"))
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    fresh = GivensLinear(nnx.Linear(d, d, rngs=nnx.Rngs(0)))
    for dtype in (jnp.float32, jnp.bfloat16):
        xd = x.astype(dtype)
        for out in (fresh.transform_inputs(xd), previous_transform(xd.astype(jnp.float32),
                                                                   fresh.blocks()).astype(dtype)):
            np.testing.assert_array_equal(np.asarray(out), np.asarray(xd))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--tokens", type=int, default=1024)
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"d x d layer, forward + backward (gradient on the trainable parameters and the input), "
          f"float32, {args.tokens} tokens, {machine()}, median of "
          f"{args.repeats} interleaved repeats; ratios to '{BASELINE}' in the same process\n")
    print("| d | method | ms/step | × time | temp MiB | × temp |")
    print("|---|---|---|---|---|---|")
    for d in WIDTHS:
        x = jax.random.normal(jax.random.key(2), (args.tokens, d))
        check(d, x)
        fns, params = steps(d)
        cells = cost_cells(fns, {name: (params[name], x) for name in fns}, args.repeats,
                           BASELINE)
        for name in fns:
            print(f"| {d} | {name} | {cells[name]} |")
    print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
