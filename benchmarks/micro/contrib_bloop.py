"""Bloop vs the plain sum of losses on a main + auxiliary objective (a few seconds on CPU).

    python -m benchmarks.micro.contrib_bloop

Over-parameterised linear regression: the main loss (mean squared error on n = 40 samples in
d = 200 dimensions, sampled in mini-batches of 8) has a whole affine space of minimisers; the
auxiliary loss is the squared error on a second, small data set (the "other dataset" setting
of Hsieh et al. 2024). The bilevel goal: the minimiser of the main loss with the lowest
auxiliary loss. Compared, each with SGD at the same step size and strengths λ:

* ``sum``:         g_main + λ g_aux (the usual regulariser, a trade-off between the losses);
* ``bloop``:       g_main + λ π(g_aux; EMA of g_main), decay 0.99 (optorth.contrib.bloop);
* ``bloop_noema``: the same with decay 0, projecting on the mini-batch gradient (the paper's
  ablation).

Prints a table of the final full-batch main and auxiliary losses (mean over seeds), the
auxiliary loss at the exact bilevel solution (lower bound) and writes ``out/contrib_bloop.png``.
"""

from __future__ import annotations

import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optorth.contrib import bloop  # noqa: E402

N, D, BATCH, STEPS, LR = 40, 200, 8, 3000, 0.05
STRENGTHS = (0.1, 0.3, 1.0, 3.0)
SEEDS = (0, 1, 2)


def problem(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)) / np.sqrt(D)
    theta_star = rng.standard_normal(D)
    y = x @ theta_star + 0.1 * rng.standard_normal(N)
    prior = rng.standard_normal(D)  # unrelated to theta_star: conflicts with the main loss
    return tuple(jnp.asarray(a, jnp.float32) for a in (x, y, prior))


def losses(theta, x, y, prior):
    return 0.5 * jnp.mean((x @ theta - y) ** 2), 0.5 * jnp.sum((theta - prior) ** 2) / D


def bilevel_solution(x, y, prior):
    """argmin aux over {θ: Xθ = y} (X has full row rank, so the main minimisers interpolate):
    the projection of the prior on that affine space."""
    x, y, prior = (np.asarray(a, np.float64) for a in (x, y, prior))
    pinv = np.linalg.pinv(x)
    theta = prior + pinv @ (y - x @ prior)
    return 0.5 * np.mean((x @ theta - y) ** 2), 0.5 * np.sum((theta - prior) ** 2) / D


def run(method, strength, seed):
    x, y, prior = problem(seed)
    surgery = {"sum": None, "bloop": bloop(strength, 0.99),
               "bloop_noema": bloop(strength, 0.0)}[method]
    tx = optax.sgd(LR) if surgery is None else optax.chain(surgery, optax.sgd(LR))
    theta = jnp.zeros(D)
    state = tx.init(theta)
    idx = jax.random.randint(jax.random.PRNGKey(seed), (STEPS, BATCH), 0, N)

    def step(carry, batch):
        theta, state = carry
        g_main = jax.grad(lambda t: losses(t, x[batch], y[batch], prior)[0])(theta)
        g_aux = jax.grad(lambda t: losses(t, x, y, prior)[1])(theta)
        if surgery is None:
            u, state = tx.update(g_main + strength * g_aux, state, theta)
        else:
            u, state = tx.update(g_main, state, theta, aux_grads=g_aux)
        return (optax.apply_updates(theta, u), state), losses(theta, x, y, prior)

    (theta, _), curve = jax.jit(lambda c: jax.lax.scan(step, c, idx))((theta, state))
    return [float(v) for v in losses(theta, x, y, prior)], np.asarray(curve)


def main():
    start = time.perf_counter()
    methods = ("sum", "bloop", "bloop_noema")
    table, curves = {}, {}
    for method in methods:
        for strength in STRENGTHS:
            runs = [run(method, strength, seed) for seed in SEEDS]
            table[method, strength] = np.mean([r[0] for r in runs], axis=0)
            curves[method, strength] = runs[0][1]
    table["main only", 0.0] = np.mean([run("sum", 0.0, seed)[0] for seed in SEEDS], axis=0)
    bound = np.mean([bilevel_solution(*problem(s)) for s in SEEDS], axis=0)
    print(f"linear regression n={N}, d={D}, batch {BATCH}, SGD lr {LR}, {STEPS} steps, "
          f"mean of {len(SEEDS)} seeds (full-batch losses at the end)")
    print(f"{'method':>12} {'lambda':>7} {'main loss':>11} {'aux loss':>10}")
    for (method, strength), (main_loss, aux_loss) in table.items():
        print(f"{method:>12} {strength:>7} {main_loss:>11.5f} {aux_loss:>10.4f}")
    print(f"{'bilevel opt':>12} {'':>7} {bound[0]:>11.5f} {bound[1]:>10.4f}  "
          f"(exact argmin of aux over the main loss's minimisers)")
    print(f"wall time {time.perf_counter() - start:.1f} s")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for method, marker in zip(methods, "osx", strict=True):
        pts = np.array([table[method, s] for s in STRENGTHS])
        ax1.plot(pts[:, 0], pts[:, 1], marker=marker, label=method)
    ax1.axhline(bound[1], color="gray", ls=":", label="bilevel optimum (aux)")
    ax1.set(xscale="log", xlabel="final main loss", ylabel="final aux loss",
            title="Pareto front over λ (mean of seeds)")
    ax1.legend()
    for method in methods:
        curve = curves[method, 1.0]
        ax2.plot(curve[0], label=f"{method} main")
        ax2.plot(curve[1], ls="--", label=f"{method} aux")
    ax2.set(yscale="log", xlabel="step", ylabel="loss", title="λ = 1, seed 0")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    pathlib.Path("out").mkdir(exist_ok=True)
    fig.savefig("out/contrib_bloop.png", dpi=120)
    print("plot: out/contrib_bloop.png")


if __name__ == "__main__":
    main()
