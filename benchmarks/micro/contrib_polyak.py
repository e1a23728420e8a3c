"""Polyak-momentum (ALR-MAG) vs heavy ball with a tuned constant step, across β.

    python -m benchmarks.micro.contrib_polyak [--steps 500] [--out out]

Two problems: an ill-conditioned quadratic (d = 50, condition number 1e3) and L2-regularised
logistic regression on generated data (n = 500, d = 20), with f* from Newton's method. For
each β ∈ {0.5, 0.9, 0.99} heavy ball (optax.sgd(lr, momentum=β), the same d = g + βd form)
gets the best constant lr of a log grid chosen *per β*; polyak_momentum gets f* and no tuning.
Prints final suboptimality f(x_T) − f* for both and saves ``<out>/contrib_polyak.png``.
The paper's claim: the adaptive step is much less sensitive to β.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optorth.contrib import polyak_momentum

BETAS = (0.5, 0.9, 0.99)
LRS = np.logspace(-4, 1, 16)
FLOOR = 1e-7  # float32 resolution of f − f* here; smaller values print as this floor


def quadratic(seed=0, d=50, cond=1e3):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a = q @ np.diag(np.logspace(0, np.log10(cond), d)) @ q.T / cond * 10
    b = rng.normal(size=d)
    x_star = np.linalg.solve(a, b)
    a_j, b_j = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    loss = lambda x: 0.5 * x @ a_j @ x - b_j @ x  # noqa: E731
    return loss, float(-0.5 * b @ x_star), jnp.zeros(d)


def logistic(seed=0, n=500, d=20, lam=1e-3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * np.logspace(0, 1.5, d)  # badly scaled features
    y = np.sign(x @ rng.normal(size=d) + rng.normal(size=n))
    w = np.zeros(d)
    for _ in range(50):  # Newton on the float64 objective
        m = y * (x @ w)
        s = 1 / (1 + np.exp(m))
        grad = x.T @ (-y * s) / n + lam * w
        hess = (x * (s * (1 - s))[:, None]).T @ x / n + lam * np.eye(d)
        w -= np.linalg.solve(hess, grad)
    f_star = np.mean(np.logaddexp(0, -y * (x @ w))) + 0.5 * lam * w @ w
    xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    loss = lambda w: jnp.mean(jnp.logaddexp(0, -yj * (xj @ w))) + 0.5 * lam * w @ w  # noqa: E731
    return loss, float(f_star), jnp.zeros(d)


def run(tx, loss, x0, steps):
    def body(carry, _):
        x, state = carry
        value, grad = jax.value_and_grad(loss)(x)
        updates, state = tx.update(grad, state, x, value=value)
        return (optax.apply_updates(x, updates), state), value

    (x, _), values = jax.lax.scan(body, (x0, tx.init(x0)), None, length=steps)
    return jnp.append(values, loss(x))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--out", default="out")
    args = parser.parse_args()
    rows, curves = [], {}
    for name, (loss, f_star, x0) in (("quadratic", quadratic()), ("logistic", logistic())):
        run_jit = jax.jit(run, static_argnums=(0, 1, 3))
        for beta in BETAS:
            best = (np.inf, None, None)
            for lr in LRS:
                tx = optax.with_extra_args_support(optax.sgd(float(lr), momentum=beta))
                vals = np.asarray(run_jit(tx, loss, x0, args.steps)) - f_star
                final = vals[-1] if np.isfinite(vals[-1]) else np.inf
                if final < best[0]:
                    best = (final, lr, vals)
            vals_p = np.asarray(run_jit(polyak_momentum(beta, f_star=f_star, max_step=100.0),
                                        loss, x0, args.steps)) - f_star
            rows.append((name, beta, max(best[0], FLOOR), best[1], max(vals_p[-1], FLOOR)))
            curves[(name, beta)] = (best[2], vals_p)
    print(f"final suboptimality f(x_T) - f* after {args.steps} steps (float32, floor {FLOOR:g})")
    print(f"{'problem':<10} {'beta':>5} {'HB tuned':>11} {'(best lr)':>10} {'Polyak-mom':>11}")
    for name, beta, hb, lr, pm in rows:
        print(f"{name:<10} {beta:>5} {hb:>11.3e} {lr:>10.2e} {pm:>11.3e}")
    for name in ("quadratic", "logistic"):
        hb = [r[2] for r in rows if r[0] == name]
        pm = [r[4] for r in rows if r[0] == name]
        print(f"{name}: spread across beta (max/min final subopt): HB tuned "
              f"{max(hb) / min(hb):.3g}, Polyak-momentum "
              f"{max(pm) / min(pm):.3g}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, name in zip(axes, ("quadratic", "logistic"), strict=True):
        for beta, color in zip(BETAS, ("C0", "C1", "C2"), strict=True):
            hb, pm = curves[(name, beta)]
            ax.semilogy(np.maximum(hb, 1e-12), color=color, ls="--", label=f"HB tuned β={beta}")
            ax.semilogy(np.maximum(pm, 1e-12), color=color, label=f"Polyak-mom β={beta}")
        ax.set(title=name, xlabel="step", ylabel="f(x) − f*")
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "contrib_polyak.png")
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
