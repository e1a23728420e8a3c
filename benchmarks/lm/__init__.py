"""The main job: train a small character-level transformer LM with several optimizers.

    pip install -e ".[bench]" && python benchmarks/train_lm.py

Trains the Flax NNX decoder-only transformer of ``lm/model.py`` on Python standard-library
source read from the running interpreter (``lm/data.py``; nothing is downloaded), once per
optimizer, with the same initial weights, the same batches in the same order and the same
learning-rate shape (linear warmup, then cosine decay to 10% of the peak). It prints a table of
validation loss (nats per character) at every quarter of the run and the mean wall time per
training step (compilation excluded, evaluation excluded), and writes to ``--out``:

* ``train_lm.png``  training (smoothed) and validation loss curves;
* ``train_lm.json`` the configuration, environment, corpus, per-optimizer histories, table;
* ``train_lm.csv``  one row per (optimizer, split, step, loss).

Optimizers come from `registry.REGISTRY` (``--help`` lists them and which are
available in the installed optorth). ``name@schedule`` runs an optorth spectral optimizer with
another Newton–Schulz schedule (a preset name, a shipped fitted schedule or a Schedule JSON
file), e.g. ``--optimizers muon,muon@polar_express``.

Importable API (for tests, notebooks and other benchmarks): this package, ``benchmarks.lm``
from the repository root (``lm`` from a script in ``benchmarks/``)::

    from benchmarks.lm import Config, train, make_model, load_corpus
    history = train("muon", Config(steps=100), callback=lambda info: ...)

Modules: ``config`` (`Config`, the lr shape), ``registry`` (every optimizer
construction), ``loop`` (`train`), ``report`` (table, plot, files), ``cli`` (``main``),
``model`` and ``data``.

The callback receives a `StepInfo` after every step; ``info.opt_state`` is the optax
state (plain arrays, optax's own structure) and ``info.params`` the parameters.
"""

from .cli import main
from .config import Config, lr_schedule, make_model
from .data import Corpus, load_corpus
from .loop import History, StepInfo, train
from .registry import (
    DEFAULT_OPTIMIZERS,
    REGISTRY,
    OptimizerEntry,
    available_optimizers,
    build_optimizer,
    register_optimizer,
)
from .report import plot_curves, results_table, save_results

__all__ = [
    "DEFAULT_OPTIMIZERS",
    "REGISTRY",
    "Config",
    "Corpus",
    "History",
    "OptimizerEntry",
    "StepInfo",
    "available_optimizers",
    "build_optimizer",
    "load_corpus",
    "lr_schedule",
    "main",
    "make_model",
    "plot_curves",
    "register_optimizer",
    "results_table",
    "save_results",
    "train",
]
