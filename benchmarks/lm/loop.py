"""The training loop: one optimizer, one run, a `History`."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from . import data as lm_data
from . import model as lm_model
from .config import Config, make_model
from .data import load_corpus
from .registry import build_optimizer


def _unwrap(tree):
    """Replace NNX variables by their values, keeping optax's own state structure."""
    return jax.tree.map(
        lambda v: v.get_value() if isinstance(v, nnx.Variable) else v,
        tree,
        is_leaf=lambda v: isinstance(v, nnx.Variable),
    )


class StepInfo:
    """What a per-step callback sees; the NNX objects are rebuilt only when asked for.

    Attributes:
      step: number of completed training steps (1 after the first update).
      loss: training loss of that step (nats per character).
    """

    def __init__(self, step: int, loss: float, graphdef, state):
        self.step, self.loss = step, loss
        self._graphdef, self._state = graphdef, state

    @functools.cached_property
    def _merged(self):
        return nnx.merge(self._graphdef, self._state)

    @property
    def model(self) -> lm_model.TransformerLM:
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
        """Floating optimizer-state leaves of rank ≥ 2 (e.g. momentum matrices), by path.

        Paths are optax's state structure joined by ``/``, e.g.
        ``.../inner_states/matrix/.../mu/blocks/0/mlp/fc/kernel``. Fallback-path leaves of
        embeddings and the head are included too; filter by path as needed.
        """
        flat, _ = jax.tree_util.tree_flatten_with_path(self.opt_state)
        out = {}
        for path, leaf in flat:
            if getattr(leaf, "ndim", 0) >= 2 and jnp.issubdtype(leaf.dtype, jnp.floating):
                out["/".join(_key_name(k) for k in path)] = leaf
        return out


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


@dataclasses.dataclass
class History:
    """The record of one training run."""

    name: str
    train_loss: list[float] = dataclasses.field(default_factory=list)
    eval_steps: list[int] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    step_seconds: list[float] = dataclasses.field(default_factory=list)
    compile_seconds: float = float("nan")
    eval_seconds: float = 0.0
    nonfinite_step: int | None = None

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

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["mean_step_seconds"] = self.mean_step_seconds()
        return out


def _train_step(graphdef, state, inputs, targets):
    model, optimizer = nnx.merge(graphdef, state)
    loss, grads = nnx.value_and_grad(lm_model.loss_fn)(model, inputs, targets)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss


_jit_train_step = jax.jit(_train_step, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _eval_loss(model_graphdef, model_state, inputs, targets):
    model = nnx.merge(model_graphdef, model_state)
    losses = jax.lax.map(lambda xy: lm_model.loss_fn(model, *xy), (inputs, targets))
    return losses.mean()


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"{desc:>14}", dynamic_ncols=True, leave=True)


def train(
    optimizer: str | optax.GradientTransformation,
    config: Config | None = None,
    *,
    corpus: lm_data.Corpus | None = None,
    callback: Callable[[StepInfo], Any] | None = None,
    progress: bool = True,
    name: str | None = None,
    lr: float | None = None,
    fallback_lr: float | None = None,
) -> History:
    """Train the model of ``config`` with one optimizer and return its `History`.

    Args:
      optimizer: a registry name (``"muon"``, ``"muon@polar_express"``) or any
        ``optax.GradientTransformation`` (its learning rate is then the caller's business).
      config: the run; defaults to ``Config()``.
      corpus: a pre-loaded corpus (default: ``load_corpus(config.corpus_chars)``).
      callback: called as ``callback(info)`` after every step with a `StepInfo`.
      progress: show a tqdm progress bar.
      name: label of the run (default: the registry name, or ``"custom"``).
      lr, fallback_lr: override the registry's peak learning rates.

    Returns:
      The `History`: training loss per step, validation loss at ``config.eval_steps()``,
      wall time per step, compile time, and the first non-finite step (training stops there).
    """
    cfg = Config() if config is None else config
    corpus = load_corpus(cfg.corpus_chars) if corpus is None else corpus
    if isinstance(optimizer, str):
        tx = build_optimizer(optimizer, cfg, lr=lr, fallback_lr=fallback_lr)
        name = optimizer if name is None else name
    else:
        tx, name = optimizer, (name or "custom")

    model = make_model(cfg, corpus.vocab_size)
    model_graphdef, _ = nnx.split(model)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    del model, opt

    batches = lm_data.Batches(corpus.train, cfg.steps, cfg.batch_size, cfg.seq_len, cfg.seed)
    val_x, val_y = (jnp.asarray(a) for a in lm_data.eval_windows(
        corpus.val, cfg.eval_batches, cfg.batch_size, cfg.seq_len))
    eval_steps = set(cfg.eval_steps())
    history = History(name=name)

    def evaluate(step):
        start = time.perf_counter()
        loss = float(_eval_loss(model_graphdef, state[0], val_x, val_y))
        history.eval_seconds += time.perf_counter() - start
        history.eval_steps.append(step)
        history.val_loss.append(loss)
        return loss

    bar = _progress(cfg.steps, name, progress)
    val = evaluate(0)
    for step in range(cfg.steps):
        inputs, targets = batches[step]
        start = time.perf_counter()
        state, loss = _jit_train_step(graphdef, state, inputs, targets)
        loss = float(loss)
        elapsed = time.perf_counter() - start
        if step == 0:
            history.compile_seconds = elapsed
        history.step_seconds.append(elapsed)
        history.train_loss.append(loss)
        if not math.isfinite(loss):
            history.nonfinite_step = step + 1
            break
        if callback is not None:
            callback(StepInfo(step + 1, loss, graphdef, state))
        if step + 1 in eval_steps:
            val = evaluate(step + 1)
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.3f}", val=f"{val:.3f}", refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    return history
