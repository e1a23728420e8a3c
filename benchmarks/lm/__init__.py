"""The main job: train a small character-level transformer LM with several optimizers.

    pip install -e ".[bench]" && python benchmarks/train_lm.py

Trains the Flax NNX decoder-only transformer of ``model.py`` on Python standard-library
source read from the running interpreter (``data.py``; nothing is downloaded), once per
optimizer, with the same initial weights, batches and learning-rate shape, by the runner's
one loop (`benchmarks.runner.train` with `LMTask`). ``cli`` prints the table of validation
loss at every quarter of the run and the mean step time, and writes ``train_lm.png``,
``train_lm.json`` and ``train_lm.csv`` (``report``). Importable::

    from benchmarks.lm import Config, LMTask
    from benchmarks.runner import registry, train
    cfg = Config(steps=100)
    history = train(LMTask(cfg), registry.build("muon", cfg))
"""

from .config import Config, make_model
from .data import Corpus, load_corpus
from .task import LMTask

__all__ = ["Config", "Corpus", "LMTask", "load_corpus", "make_model"]
