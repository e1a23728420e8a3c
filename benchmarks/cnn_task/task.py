"""The CNN on generated images as a `benchmarks.runner.loop.Task` (nats per image, top-1
accuracy as a further metric)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from .config import CNNConfig
from .data import ImageData, batch_indices, make_data
from .model import loss_and_accuracy, loss_fn, make_model


def _loss(model, images, labels):
    return loss_fn(model, images, labels), {}


@functools.partial(jax.jit, static_argnums=0)
def _evaluate(graphdef, model_state, images, labels):
    return loss_and_accuracy(nnx.merge(graphdef, model_state), images, labels)


class _Batches:
    def __init__(self, data: ImageData, indices):
        self.data, self.indices = data, indices

    def __getitem__(self, step):
        batch = self.indices[step]
        return self.data.train_x[batch], self.data.train_y[batch]


class CNNTask:
    """The CNN of `CNNConfig` on its generated images."""

    name = "cnn"
    wrt = nnx.Param
    loss = staticmethod(_loss)
    extras = None

    def __init__(self, cfg: CNNConfig | None = None, data: ImageData | None = None):
        self.cfg = CNNConfig() if cfg is None else cfg
        self._data = data

    @property
    def data(self) -> ImageData:
        if self._data is None:
            self._data = make_data(self.cfg)
        return self._data

    def init(self, seed: int):
        return make_model(self.cfg.replace(seed=seed), self.data.num_classes)

    def batches(self, seed: int) -> _Batches:
        return _Batches(self.data, batch_indices(self.cfg.replace(seed=seed)))

    def evaluate(self, graphdef, state) -> dict[str, float]:
        loss, accuracy = _evaluate(graphdef, state, jnp.asarray(self.data.val_x),
                                   jnp.asarray(self.data.val_y))
        return {"loss": float(loss), "accuracy": float(accuracy)}

    def replace(self, **changes) -> CNNTask:
        cfg = self.cfg.replace(**changes)
        same = all(getattr(cfg, f) == getattr(self.cfg, f) for f in
                   ("image_size", "channels", "train_size", "val_size", "noise", "data_seed"))
        return CNNTask(cfg, self._data if same else None)
