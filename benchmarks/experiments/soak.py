"""Soak test: long runs of the main job's model in bfloat16, every ready optimizer.

    python -m benchmarks run soak                       # 3,000 steps x every optimizer
    python -m benchmarks run soak --set batch_size=8    # the same model, half the tokens
    python -m benchmarks run soak --set steps=500 --set optimizers=muon,adafactor
    python -m benchmarks run soak --set optimizers=muon --set batch_size=8 \
        --set seeds=0,1,2 --set method=auto,standard   # seeds x Newton–Schulz methods
    python -m benchmarks report soak

Not part of CI (hours on a CPU). Trains the main job's transformer (same corpus, batches and
warmup-cosine lr shape) with ``bf16=True`` parameters and activations and optimizer state in
the parameters' dtype (``mu_dtype=float32`` for float32 state). Every ``check_every`` steps
and at the end every parameter and optimizer-state leaf is checked for non-finite values;
a run stops at the first non-finite loss, parameter or state value, and the table names the
step and the leaf. Each optimizer runs with its own defaults (adafactor at its recommended
lr), the lr shaped like the main job's; the routed ones get the main job's AdamW fallback
(3e-3). ``muon_online`` is ``muon`` learning its coefficients every 250 steps.
``seeds`` repeats each run with other initial weights and data orders; ``method`` replaces
the Newton–Schulz ``method`` of the optimizers that take an ``ns`` (each value a run beside
the others, seed by seed).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.runner import StopTraining, registry, train
from benchmarks.runner.experiment import config_items, make_task, task_config
from benchmarks.runner.loop import outcome
from benchmarks.runner.spec import RunSpec


@dataclasses.dataclass(frozen=True)
class Grid:
    steps: int = 3000
    optimizers: tuple[str, ...] = ()  # () = READY and muon_online
    batch_size: int = 0  # 0 = the main job's 16
    check_every: int = 100
    mu_dtype: str = ""  # "" = the parameters' bfloat16
    quick: bool = False
    seeds: tuple[int, ...] = (0,)
    method: tuple[str, ...] = ()  # () = each optimizer's default Newton–Schulz method

    def __post_init__(self):
        for method in self.method:
            if method not in METHODS:
                raise ValueError(f"soak: method {method!r} is not one of {', '.join(METHODS)}")
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise ValueError(f"soak: seeds must be non-negative integers, got {self.seeds}")

    @classmethod
    def smoke(cls) -> Grid:
        return cls(steps=4, optimizers=("muon", "adafactor"), check_every=2, quick=True)

    def names(self) -> tuple[str, ...]:
        return self.optimizers or registry.ready() + ("muon_online",)

    def methods(self, name: str) -> tuple[str, ...]:
        """The Newton–Schulz methods ``name`` runs with (``""``: its default)."""
        return self.method if self.method and _takes_ns(name) else ("",)

    def runs(self) -> list[tuple[str, int, str]]:
        """``(optimizer, seed, method)`` of every run, each seed's methods side by side."""
        return [(name, seed, method) for name in self.names() for seed in self.seeds
                for method in self.methods(name)]


#: Newton–Schulz methods the grid's ``method`` may name.
METHODS = ("auto", "standard", "gram")


def _factory(name: str) -> str:
    return "muon" if name == "muon_online" else name


def _takes_ns(name: str) -> bool:
    import optorth

    return "ns" in inspect.signature(getattr(optorth, _factory(name))).parameters


def spec(grid: Grid, name: str, seed: int = 0, method: str = "") -> RunSpec:
    changes = {"batch_size": grid.batch_size} if grid.batch_size else {}
    cfg = task_config("lm", quick=grid.quick, steps=grid.steps, bf16=True,
                      eval_every=max(1, grid.steps // 10), **changes)
    options = {"mu_dtype": grid.mu_dtype or None, "check_every": grid.check_every}
    if method:
        options["method"] = method
    return RunSpec("soak", "lm", config_items(cfg), name,
                   registry.default_learning_rate(_factory(name)), seed, options)


def plan(grid: Grid, store) -> list[RunSpec]:
    return [spec(grid, *run) for run in grid.runs()]


def _ns(spec: RunSpec):
    """The optimizer's default `optorth.NewtonSchulz` with the spec's method and learning."""
    import optorth

    changes = {}
    if spec.optimizer == "muon_online":
        changes["learn"] = optorth.OnlineLearning(every=250)
    if spec.option("method"):
        changes["method"] = spec.option("method")
    if not changes:
        return None
    default = inspect.signature(getattr(optorth, _factory(spec.optimizer))).parameters["ns"]
    return dataclasses.replace(default.default, **changes)


def build(spec: RunSpec, cfg):
    """``optorth.<name>`` at its defaults (the spec's Newton–Schulz method if it names one),
    state in ``mu_dtype``, the AdamW fallback."""
    kwargs = {"mu_dtype": spec.option("mu_dtype")}
    ns = _ns(spec)
    if ns is not None:
        kwargs["ns"] = ns
    if spec.optimizer != "adafactor":
        kwargs["fallback"] = registry.fallback_adamw(
            cfg, registry.lr_schedule(registry.FALLBACK_LR, cfg))
    return registry.build(_factory(spec.optimizer), cfg, spec.lr, defaults=True, **kwargs)


@jax.jit
def _finite_flags(leaves):
    return jnp.stack([jnp.all(jnp.isfinite(x.astype(jnp.float32))) for x in leaves]) if leaves \
        else jnp.ones((0,), bool)


def first_nonfinite(tree, prefix: str) -> str | None:
    """Path of the first floating leaf of ``tree`` holding a NaN or Inf, or ``None``."""
    flat = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]
    flags = np.asarray(_finite_flags([x for _, x in flat]))
    for (path, _), ok in zip(flat, flags, strict=True):
        if not ok:
            return prefix + jax.tree_util.keystr(path)
    return None


def execute(spec: RunSpec) -> dict:
    task = make_task(spec)
    every, steps = spec.option("check_every"), task.cfg.steps
    found = {}

    def check(info):
        if info.step % every and info.step != steps:
            return
        where = first_nonfinite(info.params, "params") or first_nonfinite(info.opt_state,
                                                                          "opt_state")
        if where is not None:
            found["nonfinite"] = {"step": info.step, "where": where}
            raise StopTraining(where)

    start = time.perf_counter()
    history = train(task, build(spec, task.cfg), spec, [check], progress=True)
    jax.clear_caches()
    if history.nonfinite_step is not None:
        found["nonfinite"] = {"step": history.nonfinite_step, "where": "loss"}
    losses = history.train_loss
    return {**outcome(history), "steps_run": len(losses),
            "final_train": float(np.mean(losses[-100:])) if losses else math.nan,
            "nonfinite": found.get("nonfinite"), "seconds": time.perf_counter() - start}


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "```\n" + "\n".join(lines) + "\n```"


def _final_val(record: dict) -> float:
    return record["val_losses"][-1] if record["val_losses"] else math.nan


def report(grid: Grid, store) -> str:
    """One row per finished run; with several seeds, each optimizer and method's mean ± sample
    standard deviation over its finished seeds."""
    header = ("optimizer", "NS method", "seed", "peak lr", "steps", "non-finite",
              "final train", "final val", "ms/step")
    rows, finished = [header], {}
    for name, seed, method in grid.runs():
        s = spec(grid, name, seed, method)
        r = store.get(s)
        if r is None:
            continue
        bad = r["nonfinite"]
        finished.setdefault((name, method or "default"), []).append(r)
        rows.append((name, method or "default", str(seed), f"{s.lr:g}", str(r["steps_run"]),
                     "none" if bad is None else f"step {bad['step']}: {bad['where']}",
                     f"{r['final_train']:.4f}", f"{_final_val(r):.4f}",
                     f"{r['ms_per_step']:.0f}"))
    text = _table(rows)
    if len(grid.seeds) < 2:
        return text
    summary = [("optimizer", "NS method", "seeds", "final train", "final val")]
    for (name, method), records in finished.items():
        train_, val = ([r["final_train"] for r in records],
                       [_final_val(r) for r in records])
        summary.append((name, method, str(len(records)), _mean_sd(train_), _mean_sd(val)))
    text += "\n\nMean ± sample standard deviation over seeds:\n\n" + _table(summary)
    if len(grid.method) == 2:
        text += "\n\n" + _paired(grid, store)
    return text


def _paired(grid: Grid, store) -> str:
    """Per seed, the first method's final losses minus the second's, and their mean ± sd."""
    first, second = grid.method
    rows = [("optimizer", "seed", f"val {first} − {second}", f"train {first} − {second}")]
    for name in grid.names():
        if not _takes_ns(name):
            continue
        diffs = []
        for seed in grid.seeds:
            a, b = (store.get(spec(grid, name, seed, m)) for m in grid.method)
            if a is None or b is None:
                continue
            diffs.append((_final_val(a) - _final_val(b), a["final_train"] - b["final_train"]))
            rows.append((name, str(seed), f"{diffs[-1][0]:+.4f}", f"{diffs[-1][1]:+.4f}"))
        if len(diffs) > 1:
            rows.append((name, "mean", _mean_sd([d[0] for d in diffs]),
                         _mean_sd([d[1] for d in diffs])))
    return "Paired differences (same seed):\n\n" + _table(rows)


def _mean_sd(values: list[float]) -> str:
    spread = f" ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else ""
    return f"{np.mean(values):.4f}{spread}"
