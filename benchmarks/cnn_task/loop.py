"""The CNN task's training loop: one optimizer, one run, a `CNNHistory`."""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ..lm.loop import History
from .config import CNNConfig
from .data import ImageData, batch_indices, make_data
from .model import loss_and_accuracy, loss_fn, make_model


@dataclasses.dataclass
class CNNHistory(History):
    """The record of one run (`benchmarks.lm.loop.History`) plus validation accuracy."""

    val_accuracy: list[float] = dataclasses.field(default_factory=list)


@functools.partial(jax.jit, static_argnums=0)
def _train_step(graphdef, state, images, labels):
    model, optimizer = nnx.merge(graphdef, state)
    loss, grads = nnx.value_and_grad(loss_fn)(model, images, labels)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss



@functools.partial(jax.jit, static_argnums=0)
def _evaluate(graphdef, model_state, images, labels):
    return loss_and_accuracy(nnx.merge(graphdef, model_state), images, labels)



def train(tx: optax.GradientTransformation, cfg: CNNConfig, *, data: ImageData | None = None,
          name: str = "custom") -> CNNHistory:
    """Train the CNN of ``cfg`` with ``tx``; stop at the first non-finite training loss.

    Args:
      tx: the optimizer (its learning-rate schedule is the caller's business).
      cfg: the run (model widths, steps, batch size, seed of the weights and data order).
      data: the generated images (default: ``make_data(cfg)``).
      name: label of the run.

    Returns:
      The `CNNHistory` (validation measured at ``cfg.eval_steps()``).
    """
    data = make_data(cfg) if data is None else data
    model = make_model(cfg, data.num_classes)
    model_graphdef, _ = nnx.split(model)
    graphdef, state = nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))
    del model
    val_x, val_y = jnp.asarray(data.val_x), jnp.asarray(data.val_y)
    indices = batch_indices(cfg)
    eval_steps = set(cfg.eval_steps())
    history = CNNHistory(name=name)

    def evaluate(step):
        loss, accuracy = _evaluate(model_graphdef, state[0], val_x, val_y)
        history.eval_steps.append(step)
        history.val_loss.append(float(loss))
        history.val_accuracy.append(float(accuracy))

    evaluate(0)
    for step in range(cfg.steps):
        batch = indices[step]
        start = time.perf_counter()
        state, loss = _train_step(graphdef, state, data.train_x[batch], data.train_y[batch])
        loss = float(loss)
        history.step_seconds.append(time.perf_counter() - start)
        history.train_loss.append(loss)
        if not math.isfinite(loss):
            history.nonfinite_step = step + 1
            break
        if step + 1 in eval_steps:
            evaluate(step + 1)
    return history
