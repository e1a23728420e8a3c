"""What the experiments share: tasks from specs, one run of a spec, grids, tables.

An experiment (a module of ``benchmarks/experiments/``) is a frozen ``Grid`` dataclass of
its settings (``Grid.smoke()`` the tiny ones), ``plan(grid, store) -> [RunSpec]`` (the runs
it needs now; it may read the store, e.g. to go past the edge of a sweep), optionally
``execute(spec) -> result`` (default: `run_spec`), and ``report(grid, store) -> str``
(its Markdown tables). ``python -m benchmarks run|report <experiment>`` drives them.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax

from . import registry
from .loop import outcome, train
from .spec import RunSpec

_TASKS: dict = {}


def task_config(task: str, *, quick: bool = False, **changes):
    """The settings of ``task`` (``"lm"``, ``"cnn"``): defaults, or the quick ones."""
    if task == "lm":
        from benchmarks.lm import Config as cls
    elif task == "cnn":
        from benchmarks.cnn_task import CNNConfig as cls
    else:
        raise ValueError(f"unknown task {task!r}; choose from lm, cnn")
    cfg = cls.quick() if quick else cls()
    return cfg.replace(**changes)


def config_items(cfg) -> dict:
    """A task config's fields except the seed (what a `RunSpec` records)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "seed"}


def make_task(spec: RunSpec, **flags):
    """The task of ``spec`` (cached per settings, so the corpus or images load once)."""
    key = (spec.task, spec.config, tuple(sorted(flags.items())))
    if key not in _TASKS:
        config = dict(spec.config)
        if spec.task == "lm":
            from benchmarks.lm import Config, LMTask

            _TASKS[key] = LMTask(Config(**config), _shared_corpus(config), **flags)
        else:
            from benchmarks.cnn_task import CNNConfig, CNNTask

            _TASKS[key] = CNNTask(CNNConfig(**config))
    return _TASKS[key]


def _shared_corpus(config: dict):
    chars = config["corpus_chars"]
    for (task, _, _), known in _TASKS.items():
        if task == "lm" and known.cfg.corpus_chars == chars and known._corpus is not None:
            return known._corpus
    return None


def build_tx(spec: RunSpec, cfg):
    """The optimizer of ``spec``: the registry's construction at ``spec.lr``, or with
    ``options["build"] == "defaults"`` every optorth default."""
    options = dict(spec.options)
    defaults = options.pop("build", None) == "defaults"
    fallback_lr = options.pop("fallback_lr", None)
    return registry.build(spec.optimizer, cfg, spec.lr, fallback_lr=fallback_lr,
                          defaults=defaults, **options)


def run_spec(spec: RunSpec, tx=None, task=None) -> dict:
    """Train ``spec`` once and return its result (``inf`` loss for a diverged run)."""
    start = time.perf_counter()
    task = make_task(spec) if task is None else task
    tx = build_tx(spec, task.cfg) if tx is None else tx
    try:
        result = outcome(train(task, tx, spec))
    except FloatingPointError as err:  # jax_debug_nans or a checked non-finite value
        result = {"final_val_loss": math.inf, "best_val_loss": math.inf, "finite": False,
                  "nonfinite_step": None, "error": str(err)[:200]}
    jax.clear_caches()  # every run compiles its own step; keep the process small
    return {**result, "seconds": time.perf_counter() - start}


def canonical_lr(lr: float) -> float:
    """``lr`` rounded to 4 significant digits, so grids from different runs line up."""
    return float(f"{lr:.4g}")


def lr_grid(centre: float, points: int, spacing: float) -> list[float]:
    """``points`` learning rates ``centre · spacing^k`` around ``centre`` (k from −⌊(p−1)/2⌋).

    Example:
      >>> lr_grid(0.02, 4, 2.0)
      [0.01, 0.02, 0.04, 0.08]
    """
    first = -((points - 1) // 2)
    return [canonical_lr(centre * spacing ** k) for k in range(first, first + points)]


def steps_to(target: float, steps: list[int], losses: list[float]) -> float | None:
    """First step at which the curve reaches ``target``, linear between evaluations.

    Example:
      >>> steps_to(2.5, [0, 10, 20], [4.0, 3.0, 2.0])
      15.0
    """
    for i, (step, loss) in enumerate(zip(steps, losses, strict=True)):
        if loss <= target:
            if i == 0:
                return float(step)
            s0, l0 = steps[i - 1], losses[i - 1]
            return s0 + (step - s0) * (l0 - target) / (l0 - loss)
    return None


def markdown(header: list[str], rows: list[list], padded: bool = False) -> str:
    """A Markdown table; ``padded``: each column as wide as its widest cell."""
    rows = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(map(len, col)) if padded else 0 for col in zip(*rows, strict=True)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]
    sep = "|" + "|".join("-" * (w + 2) if padded else "---" for w in widths) + "|"
    return "\n".join([lines[0], sep] + lines[1:])
