"""A small CNN on generated images: the second task of ``benchmarks/sweep.py``.

Ten classes of procedurally drawn 16x16 colour images (oriented gratings, disks, rings,
squares, crosses, checkerboards, triangles; random position, size, rotation, colours and
noise), generated deterministically (``data``); a four-layer CNN whose conv kernels take
optorth's matrix path (``model``); a training loop with validation loss and accuracy
(``loop``). Importable as ``benchmarks.cnn_task``::

    from benchmarks.cnn_task import CNNConfig, make_data, train
    history = train(optax.adam(1e-3), CNNConfig(steps=100))
"""

from .config import CNNConfig
from .data import CLASSES, ImageData, batch_indices, make_data
from .loop import CNNHistory, train
from .model import CNN, loss_and_accuracy, make_model

__all__ = [
    "CLASSES",
    "CNN",
    "CNNConfig",
    "CNNHistory",
    "ImageData",
    "batch_indices",
    "loss_and_accuracy",
    "make_data",
    "make_model",
    "train",
]
