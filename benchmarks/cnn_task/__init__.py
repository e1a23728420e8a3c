"""A small CNN on generated images: the second task of the ``sweep`` experiment.

Ten classes of procedurally drawn 16x16 colour images (oriented gratings, disks, rings,
squares, crosses, checkerboards, triangles; random position, size, rotation, colours and
noise), generated deterministically (``data``); a four-layer CNN whose conv kernels take
optorth's matrix path (``model``); a training loop with validation loss and accuracy
(``task``, for the runner's one loop). Importable as ``benchmarks.cnn_task``::

    from benchmarks.cnn_task import CNNConfig, CNNTask
    from benchmarks.runner import train
    history = train(CNNTask(CNNConfig(steps=100)), optax.adam(1e-3))
"""

from .config import CNNConfig
from .data import CLASSES, ImageData, batch_indices, make_data
from .model import CNN, loss_and_accuracy, make_model
from .task import CNNTask

__all__ = [
    "CLASSES",
    "CNN",
    "CNNConfig",
    "CNNTask",
    "ImageData",
    "batch_indices",
    "loss_and_accuracy",
    "make_data",
    "make_model",
]
