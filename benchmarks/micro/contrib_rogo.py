"""Continual learning on generated tasks: plain SGD vs GPM (hard projection) vs ROGO.

    python -m benchmarks.micro.contrib_rogo [--tasks 5] [--seeds 5] [--epochs 10] [--out out]

A one-hidden-layer ReLU MLP (20 → 64 → 4 classes, no biases, as the MLPs of the GPM/ROGO
papers) learns a sequence of classification tasks in the domain-incremental setting (one
shared head). Task t's inputs live near a 6-dimensional subspace of R^20: 3 directions shared
by all tasks and 3 of its own, plus a little isotropic noise; its labels are argmax(x W*_t)
with W*_t = W*_shared + 0.8 R_t (related, not identical teachers).

Protocol (as the official ROGO code, scaled down): SGD (lr 0.1, batch 32) for ``--epochs``
epochs per task. After each task GPM's basis is extended from 300 training inputs of each layer
(thresholds 0.97 / 0.99). ROGO additionally searches the relaxing space after every epoch of a
new task while the previous search relaxed something (relax_threshold 0.9, grad_threshold
0.97 / 0.99 by layer, on a batch of 125), halving the learning rate when it did; β = 1.
``rogo_const`` is the same without the halving, to separate the relaxation from that schedule.

Reported, from the accuracy matrix A[i, j] (test accuracy on task j after training task i):
average final accuracy mean_j A[T−1, j]; backward transfer BWT = mean_{j<T−1} (A[T−1, j] −
A[j, j]) (negative = forgetting); Ω_new = mean_j A[j, j], the accuracy on a task right after
learning it (the papers' forward-transfer / plasticity measure); FWT = mean_{j>0} (A[j−1, j] −
chance), accuracy on a task before training on it. Saves ``<out>/contrib_rogo.png``.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optorth import MatrixSpec
from optorth.contrib import add_task_subspace, relax_subspace, rogo

D_IN, HIDDEN, CLASSES = 20, 64, 4
N_TRAIN, N_TEST = 512, 1000
SPECS = {"w1": MatrixSpec(), "w2": MatrixSpec()}
GPM_THRESHOLDS = {"w1": 0.97, "w2": 0.99}
GRAD_THRESHOLDS = {"w1": 0.97, "w2": 0.99}


def make_tasks(n_tasks, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(D_IN, D_IN)))
    shared = q[:, :3]
    w_shared = rng.normal(size=(D_IN, CLASSES))
    tasks = []
    for t in range(n_tasks):
        own = q[:, 3 + 3 * t: 6 + 3 * t] if 6 + 3 * t <= D_IN else np.linalg.qr(
            rng.normal(size=(D_IN, 3)))[0]
        basis = np.hstack([shared, own])
        teacher = w_shared + 0.8 * rng.normal(size=(D_IN, CLASSES))

        def sample(n, basis=basis, teacher=teacher):
            x = rng.normal(size=(n, 6)) @ basis.T * 1.5 + 0.05 * rng.normal(size=(n, D_IN))
            return x.astype(np.float32), np.argmax(x @ teacher, -1).astype(np.int32)

        tasks.append((sample(N_TRAIN), sample(N_TEST)))
    return tasks


def forward(params, x):
    h = jax.nn.relu(x @ params["w1"])
    return h @ params["w2"], h


def loss_fn(params, x, y):
    logits, _ = forward(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def accuracy(params, x, y):
    return float(jnp.mean(jnp.argmax(forward(params, x)[0], -1) == y))


def build(method):
    sgd = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    if method == "sgd":
        return sgd
    return optax.chain(rogo(penalty=1.0, relax=method.startswith("rogo"), specs=SPECS), sgd)


def run(method, tasks, epochs, seed):
    key = jax.random.PRNGKey(seed)
    k1, k2 = jax.random.split(key)
    params = {"w1": jax.random.normal(k1, (D_IN, HIDDEN)) / np.sqrt(D_IN),
              "w2": jax.random.normal(k2, (HIDDEN, CLASSES)) / np.sqrt(HIDDEN)}
    tx = build(method)
    state = tx.init(params)
    grad = jax.jit(jax.grad(loss_fn))

    @jax.jit
    def epoch(params, state, xs, ys):
        def body(carry, batch):
            p, s = carry
            u, s = tx.update(jax.grad(loss_fn)(p, *batch), s, p)
            return (optax.apply_updates(p, u), s), None

        (params, state), _ = jax.lax.scan(body, (params, state), (xs, ys))
        return params, state

    def set_lr(state, lr):
        inner = state if method == "sgd" else state[1]
        inner.hyperparams["learning_rate"] = jnp.asarray(lr)
        return state

    rng = np.random.default_rng(seed)
    acc = np.zeros((len(tasks), len(tasks)))
    relaxed = []
    for t, ((x, y), _) in enumerate(tasks):
        lr, searching, n_relaxed = 0.1, True, 0
        state = set_lr(state, lr)
        for _ in range(epochs):
            perm = rng.permutation(N_TRAIN)
            xs = x[perm].reshape(-1, 32, D_IN)
            ys = y[perm].reshape(-1, 32)
            params, state = epoch(params, state, xs, ys)
            if method.startswith("rogo") and t > 0 and searching:
                b = rng.permutation(N_TRAIN)[:125]
                g = grad(params, x[b], y[b])
                before = sum(int(r.sum()) for r in jax.tree.leaves(state[0].relax_rank))
                new = _search(state[0], g, params)
                after = sum(int(r.sum()) for r in jax.tree.leaves(new.relax_rank))
                state = (new,) + tuple(state[1:])
                searching = after > before
                if searching:
                    n_relaxed += after - before
                    if method == "rogo":  # the official schedule; "rogo_const" keeps lr
                        lr /= 2
                        state = set_lr(state, lr)
        relaxed.append(n_relaxed)
        for j, (_, (xt, yt)) in enumerate(tasks):
            acc[t, j] = accuracy(params, xt, yt)
        if method != "sgd":
            _, h = forward(params, x[:300])
            rogo_state = state[0]
            for name, reps in (("w1", x[:300]), ("w2", h)):
                rogo_state = _extend(rogo_state, name, reps)
            state = (rogo_state,) + tuple(state[1:])
    return acc, relaxed


def _search(state, g, params):
    """relax_subspace once per layer, each with that layer's grad_threshold (as the code)."""
    new = state
    for name, thr in GRAD_THRESHOLDS.items():
        other = [k for k in GRAD_THRESHOLDS if k != name]
        searched = relax_subspace(new, g, params, relax_threshold=0.9, grad_threshold=thr,
                                  specs=SPECS)
        # keep only this layer's result, the others keep their own threshold's result
        new = new._replace(
            relax={**searched.relax, **{k: new.relax[k] for k in other}},
            relax_rank={**searched.relax_rank, **{k: new.relax_rank[k] for k in other}},
            anchor={**searched.anchor, **{k: new.anchor[k] for k in other}})
    return new


def _extend(state, name, reps):
    return add_task_subspace(state, {name: jnp.asarray(reps)}, GPM_THRESHOLDS[name])


def metrics(acc):
    t = len(acc)
    final = acc[-1].mean()
    bwt = np.mean([acc[-1, j] - acc[j, j] for j in range(t - 1)])
    omega = np.mean(np.diag(acc))
    fwt = np.mean([acc[j - 1, j] - 1.0 / CLASSES for j in range(1, t)])
    return final, bwt, omega, fwt


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="out")
    args = parser.parse_args()

    start = time.time()
    methods = ("sgd", "gpm", "rogo", "rogo_const")
    results = {m: [] for m in methods}
    accs = {m: [] for m in methods}
    relaxed = []
    for seed in range(args.seeds):
        tasks = make_tasks(args.tasks, seed)
        for m in methods:
            acc, rel = run(m, tasks, args.epochs, seed)
            results[m].append(metrics(acc))
            accs[m].append(acc)
            if m == "rogo":
                relaxed.append(rel)
    print(f"{args.tasks} tasks, {args.epochs} epochs/task, {args.seeds} seeds "
          f"(mean ± std over seeds), test accuracy in %")
    print(f"{'method':10s} {'final avg acc':>15s} {'BWT':>13s} {'Omega_new':>13s} {'FWT':>13s}")
    for m in methods:
        r = np.asarray(results[m]) * 100
        cells = [f"{r[:, i].mean():6.1f} ± {r[:, i].std():4.1f}" for i in range(4)]
        print(f"{m:10s} {cells[0]:>15s} {cells[1]:>13s} {cells[2]:>13s} {cells[3]:>13s}")
    print("ROGO relaxed directions per task (both layers, per seed):", relaxed)
    for m in methods:
        print(f"accuracy matrix, {m}, seed 0 (row i: after task i):")
        print(np.array2string(accs[m][0] * 100, precision=1, suppress_small=True))
    print(f"[{time.time() - start:.0f} s]")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = ("final avg acc", "BWT", "Omega_new", "FWT")
    width = 0.2
    for i, m in enumerate(methods):
        r = np.asarray(results[m]) * 100
        axes[0].bar(np.arange(4) + (i - 1.5) * width, r.mean(0), width, yerr=r.std(0), label=m)
    axes[0].set_xticks(np.arange(4), labels)
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].set_ylabel("%")
    axes[0].legend()
    for m in methods:
        curve = np.mean([[a[i, : i + 1].mean() for i in range(args.tasks)]
                         for a in accs[m]], 0)
        axes[1].plot(np.arange(1, args.tasks + 1), curve * 100, marker="o", label=m)
    axes[1].set_xlabel("tasks learned")
    axes[1].set_ylabel("mean accuracy on tasks so far (%)")
    axes[1].legend()
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "contrib_rogo.png")
    fig.savefig(path, dpi=120)
    print("saved", path)


if __name__ == "__main__":
    main()
