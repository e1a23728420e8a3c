"""The CNN task's model: four 3x3 convolutions, global average pooling and a dense head.

    x → conv1 → relu → conv2 (stride 2) → relu → conv3 → relu → conv4 (stride 2) → relu
      → mean over pixels → head (logits)

Conv kernels ``(3, 3, cin, cout)`` take optorth's matrix path (default routing:
``MatrixSpec.conv()``, fan-in ``9·cin``); the ``head`` kernel and every bias take the
fallback path (``optorth.describe_routing(nnx.state(model, nnx.Param))`` prints it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from .config import CNNConfig


class CNN(nnx.Module):
    """Small all-convolutional classifier; ``model(images) -> logits`` (float32)."""

    def __init__(self, cfg: CNNConfig, num_classes: int, *, rngs: nnx.Rngs):
        c1, c2, c3, c4 = cfg.widths
        conv = lambda cin, cout, stride: nnx.Conv(  # noqa: E731
            cin, cout, kernel_size=(3, 3), strides=stride, padding="SAME", rngs=rngs)
        self.conv1 = conv(cfg.channels, c1, 1)
        self.conv2 = conv(c1, c2, 2)
        self.conv3 = conv(c2, c3, 1)
        self.conv4 = conv(c3, c4, 2)
        self.head = nnx.Linear(c4, num_classes, rngs=rngs)

    def __call__(self, images):
        x = images
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = jax.nn.relu(conv(x))
        return self.head(x.mean(axis=(1, 2))).astype(jnp.float32)


def make_model(cfg: CNNConfig, num_classes: int) -> CNN:
    """A freshly initialised `CNN` from ``cfg.seed`` (identical for every optimizer)."""
    return CNN(cfg, num_classes, rngs=nnx.Rngs(params=cfg.seed))


def loss_and_accuracy(model: CNN, images, labels):
    """Mean cross-entropy (nats) and the fraction of correct top-1 predictions."""
    logits = model(images)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits.argmax(-1) == labels).mean()


def loss_fn(model: CNN, images, labels):
    return loss_and_accuracy(model, images, labels)[0]
