"""One benchmark per `optorth.contrib` method, each against the baseline it claims to beat.

    python -m benchmarks.micro.contrib <method> [--steps N] [--seeds 0,1] [--out out]

Methods (each prints its table, logs in ``benchmarks/results/contrib_<method>.log``, and saves
``<out>/contrib_<method>.png``):

* ``aegd``: AEGD (constant base step η ∈ {0.03, 0.1, 0.3}; its energy decays the step) against
  Adam (lr 3e-3, the main job's warmup + cosine) on the main job, loss passed to every update.
* ``diffgrad``: diffGrad against Adam (b1 0.9, b2 0.95, eps 1e-8, peak 2e-3) on the main job
  (batch 16 × 64); diffGrad's friction ξ ∈ [0.5, 1) shortens steps, so twice the peak lr is a
  control.
* ``scaling``: Adam at batch B for N steps (reference) against batch 4B for N/4 steps with the
  square-root rule (``sqrt_scaling_rule``: η·2, b1 0.6, b2 0.8, eps/2), linear scaling (η·4) or
  nothing changed; "gap" = mean |loss − reference| at equal samples after warmup (Malladi et
  al. 2022 claim the sqrt run tracks the reference).
* ``bloop``: over-parameterised linear regression (n = 40, d = 200, batches of 8) with an
  auxiliary loss on a conflicting prior; SGD on the plain sum g_main + λ g_aux against Bloop
  (projection on the EMA of g_main, decay 0.99) and Bloop without the EMA, against the exact
  bilevel solution (Hsieh et al. 2024's "other dataset" setting).
* ``polyak``: Polyak-momentum (ALR-MAG, given f*) against heavy ball with its best constant lr
  of a log grid, per β ∈ {0.5, 0.9, 0.99}, on an ill-conditioned quadratic (d = 50, κ = 1e3)
  and L2-regularised logistic regression (f* by Newton); final f(x_T) − f*.
* ``rogo``: continual learning on generated tasks (see `rogo_tasks`): plain SGD against GPM
  and ROGO (relax_threshold 0.9, lr halved after each relaxing search, as the official code)
  and ROGO at a constant lr; final accuracy, BWT, Ω_new, FWT.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.lm import Config, LMTask, load_corpus
from benchmarks.runner import train
from benchmarks.runner.registry import lr_schedule
from optorth import MatrixSpec
from optorth.contrib import (
    add_task_subspace,
    aegd,
    bloop,
    diffgrad,
    polyak_momentum,
    relax_subspace,
    rogo,
    sqrt_scaling_rule,
)

B1, B2, EPS, PEAK = 0.9, 0.95, 1e-8, 2e-3
DEFAULTS = {"aegd": (150, "0"), "diffgrad": (300, "0,1"), "scaling": (400, "0,1"),
            "bloop": (3000, "0,1,2"), "polyak": (500, "0"), "rogo": (10, "0,1,2,3,4")}


def _figure(ncols=1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(7 if ncols == 1 else 11, 4))


def _save(fig, out: str, method: str) -> None:
    fig.tight_layout()
    path = pathlib.Path(out) / f"contrib_{method}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


def _mean_halfrange(values) -> str:
    values = np.asarray(values)
    return f"{values.mean():.4f}±{(values.max() - values.min()) / 2:.4f}"


# --- the main job's LM: aegd, diffgrad, scaling ------------------------------------------------


def _lm_runs(runs, seeds, pass_loss=False):
    """``{name: [History per seed]}`` of ``runs(seed) -> {name: (tx, cfg)}``."""
    out, corpus = {}, None
    for seed in seeds:
        for name, (tx, cfg) in runs(seed).items():
            corpus = load_corpus(cfg.corpus_chars) if corpus is None else corpus
            history = train(LMTask(cfg, corpus, pass_loss=pass_loss), tx, name=name)
            out.setdefault(name, []).append((cfg, history))
    return out


def _lm_table(results, extra=None) -> None:
    """Validation loss at every quarter of each run (mean ± half-range over seeds), ms/step."""
    print(f"{'run':>22} " + " ".join(f"{q:>15}" for q in ("25%", "50%", "75%", "100%"))
          + f" {'ms/step':>8}" + ("" if extra is None else f" {extra[0]:>7}"))
    for name, runs in results.items():
        cfg = runs[0][0]
        cells = [_mean_halfrange([h.val_at(s) for _, h in runs]) for s in cfg.table_steps()]
        ms = 1e3 * np.mean([h.mean_step_seconds() for _, h in runs])
        tail = "" if extra is None else f" {extra[1][name]:>7.4f}"
        print(f"{name:>22} " + " ".join(f"{c:>15}" for c in cells) + f" {ms:>8.1f}" + tail)


def _plot_val(results, xscale, xlabel, title, out, method) -> None:
    fig, ax = _figure()
    for name, runs in results.items():
        cfg, h = runs[0]
        vals = np.mean([r.val_loss for _, r in runs], axis=0)
        ax.plot(np.array(h.eval_steps) * xscale(cfg), vals, marker="o", ms=3, label=name)
    ax.set(xlabel=xlabel, ylabel="validation loss (nats/char)", ylim=(None, 3.5), title=title)
    ax.legend(fontsize=7)
    _save(fig, out, method)


def bench_aegd(args, seeds):
    cfg = Config(steps=args.steps)

    def runs(seed):
        c = cfg.replace(seed=seed)
        out = {"adam lr=3e-3 (sched)": (optax.adam(lr_schedule(3e-3, c)), c)}
        return out | {f"aegd eta={eta}": (aegd(eta, c=1.0), c) for eta in (0.03, 0.1, 0.3)}

    results = _lm_runs(runs, seeds, pass_loss=True)
    print(f"validation loss (nats/char), {cfg.steps} steps, model d={cfg.d_model} "
          f"layers={cfg.layers}, batch {cfg.batch_size}x{cfg.seq_len}, seeds {seeds}")
    _lm_table(results)
    _plot_val(results, lambda c: 1, "step", "AEGD vs Adam, char LM", args.out, "aegd")


def bench_diffgrad(args, seeds):
    cfg = Config(steps=args.steps, batch_size=16, seq_len=64, eval_every=25)

    def runs(seed):
        c = cfg.replace(seed=seed)
        return {"adam": (optax.adam(lr_schedule(PEAK, c), B1, B2, EPS), c),
                "diffgrad": (diffgrad(lr_schedule(PEAK, c), B1, B2, EPS), c),
                "diffgrad_2xlr": (diffgrad(lr_schedule(2 * PEAK, c), B1, B2, EPS), c)}

    results = _lm_runs(runs, seeds)
    print(f"main job LM (d_model {cfg.d_model}, {cfg.layers} layers, seq {cfg.seq_len}, "
          f"batch {cfg.batch_size}), {cfg.steps} steps, peak lr {PEAK}, b1 {B1}, b2 {B2}; "
          f"validation loss (nats/char), mean over seeds {seeds} (± half-range)")
    _lm_table(results)
    _plot_val(results, lambda c: 1, "step", "diffGrad vs Adam on the main-job LM", args.out,
              "diffgrad")


def bench_scaling(args, seeds, kappa=4, batch=16):
    if args.steps % (4 * kappa):
        raise SystemExit(f"--steps must be a multiple of {4 * kappa}")
    small = Config(steps=args.steps, batch_size=batch, seq_len=64, eval_every=args.steps // 16)
    big = small.replace(steps=args.steps // kappa, batch_size=kappa * batch,
                        eval_every=args.steps // (16 * kappa))

    def runs(seed):
        s, b = small.replace(seed=seed), big.replace(seed=seed)
        h = sqrt_scaling_rule(kappa, learning_rate=lr_schedule(PEAK, b), b1=B1, b2=B2, eps=EPS)
        return {f"B={batch} (reference)": (optax.adam(lr_schedule(PEAK, s), B1, B2, EPS), s),
                f"{kappa}B sqrt": (optax.adam(**h._asdict()), b),
                f"{kappa}B linear": (optax.adam(lr_schedule(kappa * PEAK, b), B1, B2, EPS), b),
                f"{kappa}B same": (optax.adam(lr_schedule(PEAK, b), B1, B2, EPS), b)}

    results = _lm_runs(runs, seeds)
    ref = np.mean([h.val_loss for _, h in results[f"B={batch} (reference)"]], axis=0)
    gaps = {}
    for name, pairs in results.items():  # evaluations fall at the same samples in every run
        samples = np.array(pairs[0][1].eval_steps) * pairs[0][0].batch_size
        vals = np.mean([h.val_loss for _, h in pairs], axis=0)
        gaps[name] = np.mean(np.abs(vals - ref)[samples >= batch * small.steps * 0.1])
    h = sqrt_scaling_rule(kappa, learning_rate=PEAK, b1=B1, b2=B2, eps=EPS)
    print(f"main job LM (d_model {small.d_model}, {small.layers} layers, seq {small.seq_len}); "
          f"Adam peak lr {PEAK}, b1 {B1}, b2 {B2}, eps {EPS} at batch {batch} for {small.steps} "
          f"steps; batch {big.batch_size} for {big.steps} steps. sqrt rule: lr "
          f"{h.learning_rate:.4g}, b1 {h.b1:.3g}, b2 {h.b2:.3g}, eps {h.eps:.3g}; linear: lr "
          f"{kappa * PEAK:.4g}. Validation loss (nats/char) at each quarter of the samples, "
          f"seeds {seeds}; 'gap' = mean |loss − reference| over all evaluations after warmup.")
    _lm_table(results, ("gap", gaps))
    _plot_val(results, lambda c: c.batch_size, "samples seen (sequences)",
              f"Batch ×{kappa}: square-root vs linear scaling (Adam)", args.out, "scaling")


# --- bloop: linear regression with an auxiliary loss -------------------------------------------

N, D, BATCH, LR = 40, 200, 8, 0.05


def _regression(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)) / np.sqrt(D)
    y = x @ rng.standard_normal(D) + 0.1 * rng.standard_normal(N)
    prior = rng.standard_normal(D)  # unrelated to the teacher: conflicts with the main loss
    return tuple(jnp.asarray(a, jnp.float32) for a in (x, y, prior))


def _losses(theta, x, y, prior):
    return 0.5 * jnp.mean((x @ theta - y) ** 2), 0.5 * jnp.sum((theta - prior) ** 2) / D


def bilevel_solution(x, y, prior):
    """argmin aux over {θ: Xθ = y} (X has full row rank): the prior projected on that space."""
    x, y, prior = (np.asarray(a, np.float64) for a in (x, y, prior))
    theta = prior + np.linalg.pinv(x) @ (y - x @ prior)
    return 0.5 * np.mean((x @ theta - y) ** 2), 0.5 * np.sum((theta - prior) ** 2) / D


def _bloop_run(method, strength, seed, steps):
    x, y, prior = _regression(seed)
    surgery = {"sum": None, "bloop": bloop(strength, 0.99), "bloop_noema": bloop(strength, 0.0)}
    tx = optax.sgd(LR) if surgery[method] is None else optax.chain(surgery[method],
                                                                    optax.sgd(LR))
    idx = jax.random.randint(jax.random.PRNGKey(seed), (steps, BATCH), 0, N)

    def step(carry, batch):
        theta, state = carry
        g_main = jax.grad(lambda t: _losses(t, x[batch], y[batch], prior)[0])(theta)
        g_aux = jax.grad(lambda t: _losses(t, x, y, prior)[1])(theta)
        if surgery[method] is None:
            u, state = tx.update(g_main + strength * g_aux, state, theta)
        else:
            u, state = tx.update(g_main, state, theta, aux_grads=g_aux)
        return (optax.apply_updates(theta, u), state), _losses(theta, x, y, prior)

    theta = jnp.zeros(D)
    (theta, _), curve = jax.jit(lambda c: jax.lax.scan(step, c, idx))((theta, tx.init(theta)))
    return [float(v) for v in _losses(theta, x, y, prior)], np.asarray(curve)


def bench_bloop(args, seeds, strengths=(0.1, 0.3, 1.0, 3.0)):
    methods, table, curves = ("sum", "bloop", "bloop_noema"), {}, {}
    for method in methods:
        for strength in strengths:
            runs = [_bloop_run(method, strength, seed, args.steps) for seed in seeds]
            table[method, strength] = np.mean([r[0] for r in runs], axis=0)
            curves[method] = runs[0][1] if strength == 1.0 else curves.get(method)
    table["main only", 0.0] = np.mean([_bloop_run("sum", 0.0, s, args.steps)[0] for s in seeds],
                                      axis=0)
    bound = np.mean([bilevel_solution(*_regression(s)) for s in seeds], axis=0)
    print(f"linear regression n={N}, d={D}, batch {BATCH}, SGD lr {LR}, {args.steps} steps, "
          f"mean of {len(seeds)} seeds (full-batch losses at the end)")
    print(f"{'method':>12} {'lambda':>7} {'main loss':>11} {'aux loss':>10}")
    for (method, strength), (main_loss, aux_loss) in table.items():
        print(f"{method:>12} {strength:>7} {main_loss:>11.5f} {aux_loss:>10.4f}")
    print(f"{'bilevel opt':>12} {'':>7} {bound[0]:>11.5f} {bound[1]:>10.4f}  "
          f"(exact argmin of aux over the main loss's minimisers)")
    fig, (ax1, ax2) = _figure(2)
    for method, marker in zip(methods, "osx", strict=True):
        pts = np.array([table[method, s] for s in strengths])
        ax1.plot(pts[:, 0], pts[:, 1], marker=marker, label=method)
        ax2.plot(curves[method][0], label=f"{method} main")
        ax2.plot(curves[method][1], ls="--", label=f"{method} aux")
    ax1.axhline(bound[1], color="gray", ls=":", label="bilevel optimum (aux)")
    ax1.set(xscale="log", xlabel="final main loss", ylabel="final aux loss",
            title="Pareto front over λ (mean of seeds)")
    ax2.set(yscale="log", xlabel="step", ylabel="loss", title="λ = 1, first seed")
    ax1.legend()
    ax2.legend(fontsize=7)
    _save(fig, args.out, "bloop")


# --- polyak: heavy ball with a tuned step against Polyak-momentum -------------------------------

FLOOR = 1e-7  # float32 resolution of f − f* here; smaller values print as this floor


def quadratic(seed=0, d=50, cond=1e3):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a = q @ np.diag(np.logspace(0, np.log10(cond), d)) @ q.T / cond * 10
    b = rng.normal(size=d)
    a_j, b_j = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    return (lambda x: 0.5 * x @ a_j @ x - b_j @ x), float(-0.5 * b @ np.linalg.solve(a, b)), d


def logistic(seed=0, n=500, d=20, lam=1e-3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * np.logspace(0, 1.5, d)  # badly scaled features
    y = np.sign(x @ rng.normal(size=d) + rng.normal(size=n))
    w = np.zeros(d)
    for _ in range(50):  # Newton on the float64 objective
        s = 1 / (1 + np.exp(y * (x @ w)))
        hess = (x * (s * (1 - s))[:, None]).T @ x / n + lam * np.eye(d)
        w -= np.linalg.solve(hess, x.T @ (-y * s) / n + lam * w)
    f_star = np.mean(np.logaddexp(0, -y * (x @ w))) + 0.5 * lam * w @ w
    xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    return (lambda w: jnp.mean(jnp.logaddexp(0, -yj * (xj @ w))) + 0.5 * lam * w @ w,
            float(f_star), d)


def _descend(tx, loss, d, steps):
    def body(carry, _):
        x, state = carry
        value, grad = jax.value_and_grad(loss)(x)
        updates, state = tx.update(grad, state, x, value=value)
        return (optax.apply_updates(x, updates), state), value

    x0 = jnp.zeros(d)
    (x, _), values = jax.lax.scan(body, (x0, tx.init(x0)), None, length=steps)
    return jnp.append(values, loss(x))


def bench_polyak(args, seeds, betas=(0.5, 0.9, 0.99)):
    rows, curves, lrs = [], {}, np.logspace(-4, 1, 16)
    problems = (("quadratic", quadratic(seeds[0])), ("logistic", logistic(seeds[0])))
    for name, (loss, f_star, d) in problems:
        descend = jax.jit(_descend, static_argnums=(0, 1, 2, 3))
        for beta in betas:
            best = (np.inf, None, None)
            for lr in lrs:
                tx = optax.with_extra_args_support(optax.sgd(float(lr), momentum=beta))
                vals = np.asarray(descend(tx, loss, d, args.steps)) - f_star
                final = vals[-1] if np.isfinite(vals[-1]) else np.inf
                best = (final, lr, vals) if final < best[0] else best
            tx = polyak_momentum(beta, f_star=f_star, max_step=100.0)
            vals_p = np.asarray(descend(tx, loss, d, args.steps)) - f_star
            rows.append((name, beta, max(best[0], FLOOR), best[1], max(vals_p[-1], FLOOR)))
            curves[name, beta] = (best[2], vals_p)
    print(f"final suboptimality f(x_T) - f* after {args.steps} steps (float32, floor {FLOOR:g})")
    print(f"{'problem':<10} {'beta':>5} {'HB tuned':>11} {'(best lr)':>10} {'Polyak-mom':>11}")
    for name, beta, hb, lr, pm in rows:
        print(f"{name:<10} {beta:>5} {hb:>11.3e} {lr:>10.2e} {pm:>11.3e}")
    fig, axes = _figure(2)
    for ax, name in zip(axes, ("quadratic", "logistic"), strict=True):
        hb, pm = [r[2] for r in rows if r[0] == name], [r[4] for r in rows if r[0] == name]
        print(f"{name}: spread across beta (max/min final subopt): HB tuned "
              f"{max(hb) / min(hb):.3g}, Polyak-momentum {max(pm) / min(pm):.3g}")
        for beta, color in zip(betas, ("C0", "C1", "C2"), strict=True):
            hb, pm = curves[name, beta]
            ax.semilogy(np.maximum(hb, 1e-12), color=color, ls="--", label=f"HB tuned β={beta}")
            ax.semilogy(np.maximum(pm, 1e-12), color=color, label=f"Polyak-mom β={beta}")
        ax.set(title=name, xlabel="step", ylabel="f(x) − f*")
        ax.legend(fontsize=7)
    _save(fig, args.out, "polyak")


# --- rogo: continual learning, SGD against GPM and ROGO ------------------------------------------

D_IN, HIDDEN, CLASSES, N_TRAIN, N_TEST = 20, 64, 4, 512, 1000
SPECS = {"w1": MatrixSpec(), "w2": MatrixSpec()}
THRESHOLDS = {"w1": 0.97, "w2": 0.99}  # GPM's basis and ROGO's grad_threshold, per layer


def rogo_tasks(n_tasks, seed):
    """Domain-incremental tasks for a 20 → 64 → 4 ReLU MLP: task t's inputs lie near 3
    directions shared by all tasks and 3 of its own; labels argmax(x W*_t) with related
    teachers W*_t = W*_shared + 0.8 R_t."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(D_IN, D_IN)))
    w_shared, tasks = rng.normal(size=(D_IN, CLASSES)), []
    for t in range(n_tasks):
        own = q[:, 3 + 3 * t: 6 + 3 * t] if 6 + 3 * t <= D_IN else np.linalg.qr(
            rng.normal(size=(D_IN, 3)))[0]
        basis = np.hstack([q[:, :3], own])
        teacher = w_shared + 0.8 * rng.normal(size=(D_IN, CLASSES))

        def sample(n, basis=basis, teacher=teacher):
            x = rng.normal(size=(n, 6)) @ basis.T * 1.5 + 0.05 * rng.normal(size=(n, D_IN))
            return x.astype(np.float32), np.argmax(x @ teacher, -1).astype(np.int32)

        tasks.append((sample(N_TRAIN), sample(N_TEST)))
    return tasks


def _forward(params, x):
    h = jax.nn.relu(x @ params["w1"])
    return h @ params["w2"], h


def _ce(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(_forward(params, x)[0], y).mean()


def _search(state, g, params):
    """relax_subspace once per layer, each with its own grad_threshold (as the official code)."""
    for name, threshold in THRESHOLDS.items():
        found = relax_subspace(state, g, params, relax_threshold=0.9, grad_threshold=threshold,
                               specs=SPECS)
        state = state._replace(**{f: {**getattr(state, f), name: getattr(found, f)[name]}
                                  for f in ("relax", "relax_rank", "anchor")})
    return state


def _rogo_run(method, tasks, epochs, seed):
    """The accuracy matrix A[i, j] (task j after training task i) and relaxed directions."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    params = {"w1": jax.random.normal(k1, (D_IN, HIDDEN)) / np.sqrt(D_IN),
              "w2": jax.random.normal(k2, (HIDDEN, CLASSES)) / np.sqrt(HIDDEN)}
    sgd = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    tx = sgd if method == "sgd" else optax.chain(
        rogo(penalty=1.0, relax=method.startswith("rogo"), specs=SPECS), sgd)
    state, grad = tx.init(params), jax.jit(jax.grad(_ce))

    @jax.jit
    def epoch(params, state, xs, ys):
        def body(carry, batch):
            u, s = tx.update(jax.grad(_ce)(carry[0], *batch), carry[1], carry[0])
            return (optax.apply_updates(carry[0], u), s), None

        return jax.lax.scan(body, (params, state), (xs, ys))[0]

    def set_lr(state, lr):
        (state if method == "sgd" else state[1]).hyperparams["learning_rate"] = jnp.asarray(lr)
        return state

    def rank(s):
        return sum(int(r.sum()) for r in jax.tree.leaves(s.relax_rank))

    rng, acc, relaxed = np.random.default_rng(seed), np.zeros((len(tasks),) * 2), []
    for t, ((x, y), _) in enumerate(tasks):
        lr, searching, n_relaxed = 0.1, True, 0
        state = set_lr(state, lr)
        for _ in range(epochs):
            perm = rng.permutation(N_TRAIN)
            params, state = epoch(params, state, x[perm].reshape(-1, 32, D_IN),
                                  y[perm].reshape(-1, 32))
            if method.startswith("rogo") and t > 0 and searching:
                b = rng.permutation(N_TRAIN)[:125]
                new = _search(state[0], grad(params, x[b], y[b]), params)
                grown = rank(new) - rank(state[0])
                searching, state = grown > 0, (new,) + tuple(state[1:])
                if searching:
                    n_relaxed += grown
                    if method == "rogo":  # the official schedule; "rogo_const" keeps lr
                        lr /= 2
                        state = set_lr(state, lr)
        relaxed.append(n_relaxed)
        for j, (_, (xt, yt)) in enumerate(tasks):
            acc[t, j] = float(jnp.mean(jnp.argmax(_forward(params, xt)[0], -1) == yt))
        if method != "sgd":  # extend GPM's basis from 300 training inputs of each layer
            reps = {"w1": x[:300], "w2": _forward(params, x[:300])[1]}
            s = state[0]
            for name in THRESHOLDS:
                s = add_task_subspace(s, {name: jnp.asarray(reps[name])}, THRESHOLDS[name])
            state = (s,) + tuple(state[1:])
    return acc, relaxed


def continual_metrics(acc):
    """Final average accuracy, BWT (negative = forgetting), Ω_new (accuracy right after
    learning a task), FWT (accuracy on a task before training it, minus chance)."""
    t = len(acc)
    return (acc[-1].mean(), np.mean([acc[-1, j] - acc[j, j] for j in range(t - 1)]),
            np.mean(np.diag(acc)), np.mean([acc[j - 1, j] - 1.0 / CLASSES for j in range(1, t)]))


def bench_rogo(args, seeds):
    methods, labels = ("sgd", "gpm", "rogo", "rogo_const"), ("final avg acc", "BWT",
                                                               "Omega_new", "FWT")
    results, accs, relaxed = {m: [] for m in methods}, {m: [] for m in methods}, []
    for seed in seeds:
        tasks = rogo_tasks(args.tasks, seed)
        for m in methods:
            acc, rel = _rogo_run(m, tasks, args.steps, seed)
            results[m].append(continual_metrics(acc))
            accs[m].append(acc)
            relaxed += [rel] if m == "rogo" else []
    print(f"{args.tasks} tasks, {args.steps} epochs/task, {len(seeds)} seeds "
          f"(mean ± std over seeds), test accuracy in %")
    print(f"{'method':10s}" + "".join(f"{label:>16s}" for label in labels))
    for m in methods:
        r = np.asarray(results[m]) * 100
        print(f"{m:10s}" + "".join(f"{r[:, i].mean():9.1f} ± {r[:, i].std():4.1f}"
                                   for i in range(4)))
    print("ROGO relaxed directions per task (both layers, per seed):", relaxed)
    for m in methods:
        print(f"accuracy matrix, {m}, first seed (row i: after task i):")
        print(np.array2string(accs[m][0] * 100, precision=1, suppress_small=True))
    fig, axes = _figure(2)
    for i, m in enumerate(methods):
        r = np.asarray(results[m]) * 100
        axes[0].bar(np.arange(4) + (i - 1.5) * 0.2, r.mean(0), 0.2, yerr=r.std(0), label=m)
        curve = np.mean([[a[k, : k + 1].mean() for k in range(args.tasks)] for a in accs[m]], 0)
        axes[1].plot(np.arange(1, args.tasks + 1), curve * 100, marker="o", label=m)
    axes[0].set_xticks(np.arange(4), labels)
    axes[0].set(ylabel="%")
    axes[1].set(xlabel="tasks learned", ylabel="mean accuracy on tasks so far (%)")
    axes[0].legend()
    axes[1].legend()
    _save(fig, args.out, "rogo")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=sorted(DEFAULTS))
    parser.add_argument("--steps", type=int, help="training steps (rogo: epochs per task; "
                        "default: aegd 150, diffgrad 300, scaling 400, bloop 3000, polyak 500, "
                        "rogo 10)")
    parser.add_argument("--seeds", help="comma-separated (default: aegd and polyak 0, diffgrad "
                        "and scaling 0,1, bloop 0,1,2, rogo 0-4)")
    parser.add_argument("--tasks", type=int, default=5, help="rogo: tasks in the sequence")
    parser.add_argument("--out", default="out")
    args = parser.parse_args(argv)
    steps, seeds = DEFAULTS[args.method]
    args.steps = args.steps or steps
    start = time.perf_counter()
    globals()[f"bench_{args.method}"](args, [int(s) for s in (args.seeds or seeds).split(",")])
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
