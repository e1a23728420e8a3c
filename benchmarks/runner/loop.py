"""The one training loop: `train(task, tx, spec, callbacks) -> History`, for every task.

A task (the `Task` protocol: the character LM of ``benchmarks/lm``, the CNN of
``benchmarks/cnn_task``, the fine-tuning task of ``benchmarks/finetune_lm``) supplies the
model, the batches, the loss and the evaluation; the loop compiles one step, runs it, measures
it, evaluates at the task's evaluation steps and stops at the first non-finite loss.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .spec import RunSpec


class Task(Protocol):
    """What the loop needs of a task.

    Attributes:
      name: ``"lm"``, ``"cnn"``, ...
      cfg: the settings; ``cfg.steps``, ``cfg.seed`` and ``cfg.eval_steps()`` are read.
      loss: ``loss(model, *batch) -> (scalar, aux)``, a module-level function (it keys the
        compiled step); ``aux`` is recorded per step (e.g. attention maxima).
      extras: ``extras(loss, aux) -> dict`` of keyword arguments for ``tx.update`` (e.g.
        ``max_logits``), a module-level function, or ``None``.
      wrt: the ``nnx`` filter of the trained variables (``nnx.Param``).

    A task may also define ``setup(optimizer)``, called once on the fresh ``nnx.Optimizer``
    (e.g. to set an injected hyperparameter, so that runs share one compiled step).
    """

    name: str
    cfg: Any
    loss: Callable
    extras: Callable | None
    wrt: Any

    def init(self, seed: int) -> nnx.Module: ...

    def batches(self, seed: int) -> Sequence: ...

    def evaluate(self, graphdef, state) -> dict[str, float]: ...


class StopTraining(Exception):
    """Raised by a callback to end a run early; ``args[0]`` says why (kept in the history)."""


def _unwrap(tree):
    """Replace NNX variables by their values, keeping optax's own state structure."""
    return jax.tree.map(lambda v: v.get_value() if isinstance(v, nnx.Variable) else v, tree,
                        is_leaf=lambda v: isinstance(v, nnx.Variable))


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


class StepInfo:
    """What a callback sees after a step; the NNX objects are rebuilt only when asked for.

    Attributes:
      step: completed training steps (1 after the first update).
      loss: training loss of that step.
      aux: the task loss's auxiliary output of that step.
    """

    def __init__(self, step: int, loss: float, aux, graphdef, state):
        self.step, self.loss, self.aux = step, loss, aux
        self._graphdef, self._state = graphdef, state

    @functools.cached_property
    def _merged(self):
        return nnx.merge(self._graphdef, self._state)

    @property
    def model(self) -> nnx.Module:
        return self._merged[0]

    @property
    def optimizer(self) -> nnx.Optimizer:
        return self._merged[1]

    @property
    def opt_state(self):
        """The optax state after this step, plain arrays in optax's own structure."""
        return _unwrap(self.optimizer.opt_state)

    @property
    def params(self) -> nnx.State:
        """The parameters after this step (``nnx.State`` of plain arrays)."""
        return nnx.state(self.model, nnx.Param)

    def state_matrices(self) -> dict[str, jax.Array]:
        """Floating optimizer-state leaves of rank ≥ 2 (e.g. momenta), by ``/``-joined path."""
        flat, _ = jax.tree_util.tree_flatten_with_path(self.opt_state)
        return {"/".join(_key_name(k) for k in path): leaf for path, leaf in flat
                if getattr(leaf, "ndim", 0) >= 2 and jnp.issubdtype(leaf.dtype, jnp.floating)}


@dataclasses.dataclass
class History:
    """The record of one run. ``metrics`` holds further evaluation series (``accuracy``),
    ``aux`` the per-step auxiliary outputs that are not empty."""

    name: str
    train_loss: list[float] = dataclasses.field(default_factory=list)
    eval_steps: list[int] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    step_seconds: list[float] = dataclasses.field(default_factory=list)
    compile_seconds: float = float("nan")
    eval_seconds: float = 0.0
    nonfinite_step: int | None = None
    stopped: str | None = None
    metrics: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    aux: list = dataclasses.field(default_factory=list, repr=False)
    state: Any = dataclasses.field(default=None, repr=False)  # (graphdef, state) at the end

    @property
    def finite(self) -> bool:
        return self.nonfinite_step is None

    def mean_step_seconds(self) -> float:
        """Mean wall time of a training step, the first (compiling) step excluded."""
        timed = self.step_seconds[1:]
        return float(np.mean(timed)) if timed else float("nan")

    def val_at(self, step: int) -> float:
        """Validation loss measured after ``step`` steps (NaN if not measured)."""
        if step in self.eval_steps:
            return self.val_loss[self.eval_steps.index(step)]
        return float("nan")

    def final_model(self) -> nnx.Module:
        """The model after the last step."""
        return nnx.merge(*self.state)[0]

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("aux", "state")}
        out["mean_step_seconds"] = self.mean_step_seconds()
        return out


def outcome(history: History) -> dict:
    """The record of a finished run: final and best validation loss (``inf`` for a run that
    diverged), its curve (``eval_steps``, ``val_losses``), the other metrics' final values."""
    val_losses, nonfinite_step = history.val_loss, history.nonfinite_step
    measured = [v for v in val_losses if math.isfinite(v)]
    finite = nonfinite_step is None and bool(val_losses) and math.isfinite(val_losses[-1])
    out = {
        "final_val_loss": val_losses[-1] if finite else math.inf,
        "best_val_loss": min(measured) if measured else math.inf,
        "finite": finite,
        "nonfinite_step": nonfinite_step,
        "ms_per_step": 1e3 * history.mean_step_seconds(),
        "eval_steps": list(history.eval_steps),
        "val_losses": [float(v) for v in val_losses],
    }
    for name, values in history.metrics.items():
        out[f"final_val_{name}"] = values[-1] if finite else None
    return out


def _step(graphdef, loss_fn, extras_fn, wrt, state, batch):
    model, optimizer = nnx.merge(graphdef, state)
    grad_fn = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt), has_aux=True)
    (loss, aux), grads = grad_fn(model, *batch)
    optimizer.update(model, grads, **({} if extras_fn is None else extras_fn(loss, aux)))
    return nnx.state((model, optimizer)), loss, aux


_jit_step = jax.jit(_step, static_argnums=(0, 1, 2, 3))


def step_fn(task: Task, graphdef) -> Callable:
    """The loop's compiled step of ``task``: ``(state, batch) -> (state, loss, aux)``."""
    return functools.partial(_jit_step, graphdef, task.loss, task.extras, task.wrt)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"{desc:>14}", dynamic_ncols=True, leave=True)


def train(task: Task, tx: optax.GradientTransformation, spec: RunSpec | None = None,
          callbacks: Sequence[Callable[[StepInfo], Any]] = (), *, name: str | None = None,
          progress: bool = False, model: nnx.Module | None = None) -> History:
    """Train ``task``'s model with ``tx`` and return its `History`.

    Args:
      task: the `Task`.
      tx: the optimizer (its learning-rate schedule is the caller's business).
      spec: the run; its seed sets the initial weights and data order (default: the task's).
      callbacks: each called as ``callback(info)`` with a `StepInfo` after every step; one
        may raise `StopTraining` to end the run.
      name: label of the run (default: the spec's optimizer, else ``"custom"``).
      progress: show a tqdm progress bar.
      model: start from this model instead of ``task.init(seed)``.

    Returns:
      Training loss and wall time per step, validation loss (and the task's other metrics)
      at ``task.cfg.eval_steps()``, compile time, the first non-finite step.
    """
    seed = task.cfg.seed if spec is None else spec.seed
    name = name or (spec.optimizer if spec is not None else "custom")
    model = task.init(seed) if model is None else model
    model_graphdef = nnx.graphdef(model)
    optimizer = nnx.Optimizer(model, tx, wrt=task.wrt)
    if hasattr(task, "setup"):
        task.setup(optimizer)
    graphdef, state = nnx.split((model, optimizer))
    del model, optimizer
    batches, history = task.batches(seed), History(name=name)
    eval_steps = set(task.cfg.eval_steps())

    def evaluate(step):
        start = time.perf_counter()
        values = task.evaluate(model_graphdef, state[0])
        history.eval_seconds += time.perf_counter() - start
        history.eval_steps.append(step)
        history.val_loss.append(values.pop("loss"))
        for key, value in values.items():
            history.metrics.setdefault(key, []).append(value)

    bar = _progress(task.cfg.steps, name, progress)
    evaluate(0)
    try:
        for step in range(task.cfg.steps):
            start = time.perf_counter()
            state, loss, aux = step_fn(task, graphdef)(state, tuple(batches[step]))
            loss = float(loss)
            elapsed = time.perf_counter() - start
            if step == 0:
                history.compile_seconds = elapsed
            history.step_seconds.append(elapsed)
            history.train_loss.append(loss)
            if aux:
                history.aux.append(jax.device_get(aux))
            if not math.isfinite(loss):
                history.nonfinite_step = step + 1
                break
            for callback in callbacks:
                callback(StepInfo(step + 1, loss, aux, graphdef, state))
            if step + 1 in eval_steps:
                evaluate(step + 1)
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.3f}", val=f"{history.val_loss[-1]:.3f}",
                                refresh=False)
                bar.update(1)
    except StopTraining as stop:
        history.stopped = str(stop.args[0]) if stop.args else "stopped"
    finally:
        if bar is not None:
            bar.close()
    history.state = (graphdef, state)
    return history
