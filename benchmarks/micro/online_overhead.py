"""Step-time overhead of online coefficient learning (same process, interleaved repeats).

    python -m benchmarks.micro.online_overhead [--model gpt2-small|small] [--every 100]

Both optimizers are the same jitted chain, Nesterov momentum → ``optorth.orthogonalize``
(Jordan's table, read from the optimizer state) → scale; one of them is built with
``optorth.NewtonSchulz(learn=optorth.OnlineLearning(...))``, which refines the table every
``--every`` updates (``lax.cond``-gated) with ``--inner-steps`` Adam steps on
``--max-matrices`` sampled momenta.
Gradients are fixed random matrices with the shapes of the model's hidden matrices (GPT-2
small: 12 layers × (4 × 768×768, 768×3072, 3072×768)), so the ratio is the worst case: a real
step also runs the model's forward and backward pass, which the learning does not touch. The
mean over ``--steps`` updates includes the refinement steps.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optorth

MODELS = {
    "gpt2-small": dict(layers=12, d=768),
    "small": dict(layers=2, d=128),
}


def make_optimizer(learn, dtype):
    """Nesterov momentum → ``optorth.orthogonalize`` (Jordan's table, in the state) → scale."""
    return optax.chain(optax.trace(0.95, nesterov=True),
                       optorth.orthogonalize(optorth.NewtonSchulz("jordan", dtype=dtype,
                                                                  learn=learn)),
                       optax.scale(-0.02))


def make_params(layers, d, seed=0):
    shapes = [(d, d)] * 4 + [(d, 4 * d), (4 * d, d)]
    keys = jax.random.split(jax.random.PRNGKey(seed), layers * len(shapes))
    return {f"l{i // len(shapes)}_{i % len(shapes)}": jax.random.normal(k, shapes[i % len(shapes)])
            * 0.02 for i, k in enumerate(keys)}


def time_run(step, params, state, grads, steps):
    """Seconds per update over ``steps`` updates (the state is threaded through)."""
    jax.block_until_ready((params, state))
    start = time.perf_counter()
    for _ in range(steps):
        params, state = step(params, state, grads)
    jax.block_until_ready((params, state))
    return (time.perf_counter() - start) / steps, params, state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="gpt2-small")
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--inner-steps", type=int, default=4)
    parser.add_argument("--max-matrices", type=int, default=4)
    parser.add_argument("--objective", default="orthogonality")
    parser.add_argument("--steps", type=int, default=200, help="timed updates per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="Newton–Schulz in bfloat16")
    args = parser.parse_args(argv)
    dtype = jnp.bfloat16 if args.bf16 else None
    params = make_params(**MODELS[args.model])
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(p.shape[0]), p.shape),
                         params)
    learn = optorth.OnlineLearning(every=args.every, inner_steps=args.inner_steps,
                                   max_matrices=args.max_matrices, objective=args.objective)
    runs = {}
    for name, config in (("without learning", None), ("with online learning", learn)):
        opt = make_optimizer(config, dtype)

        @jax.jit
        def step(params, state, grads, opt=opt):
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        state = opt.init(params)
        start = time.perf_counter()
        p, s = step(params, state, grads)
        jax.block_until_ready((p, s))
        compile_s = time.perf_counter() - start
        runs[name] = {"step": step, "params": p, "state": s, "times": [], "compile": compile_s}
    for _ in range(args.repeats):  # interleaved
        for run in runs.values():
            seconds, run["params"], run["state"] = time_run(run["step"], run["params"],
                                                            run["state"], grads, args.steps)
            run["times"].append(seconds)
    device = jax.devices()[0]
    print(f"{args.model} hidden matrices ({len(params)}), NS jordan×5 "
          f"{'bf16' if args.bf16 else 'float32'} on {device.platform} ({device.device_kind}); "
          f"learning every {args.every} updates, {args.inner_steps} inner Adam steps on "
          f"{args.max_matrices} matrices, objective {args.objective!r}")
    base = np.median(runs["without learning"]["times"])
    for name, run in runs.items():
        med = np.median(run["times"])
        print(f"  {name:22s} {1e3 * med:9.3f} ms/update (median of {args.repeats} × "
              f"{args.steps}; compile {run['compile']:.1f}s)  ratio {med / base:.3f}")
    state = runs["with online learning"]["state"][1]
    coeffs = np.asarray(state.coeffs, np.float64)
    report = optorth.validate_schedule(coeffs)
    changed = float(np.max(np.abs(coeffs - optorth.ns.PRESETS["jordan"].rows())))
    print(f"  learned table after {int(state.count)} updates: max |Δc| = {changed:.4f}, "
          f"validator ok={report.ok}, band {report.band[0]:.3f}..{report.band[1]:.3f}")
    ratio = np.median(runs["with online learning"]["times"]) / base
    print(f"  overhead {100 * (ratio - 1):+.1f}% -> {'MET' if ratio <= 1.10 else 'NOT met'} "
          f"(target ≤ +10%)")
    return ratio


if __name__ == "__main__":
    main()
