"""Orthogonal fine-tuning benchmark on the main job's character-level transformer.

    python benchmarks/finetune.py | tee benchmarks/results/finetune_cpu.log
    python benchmarks/finetune.py --quick            # ~1 minute smoke run

Pretrains the model of ``benchmarks/lm`` on Python standard-library source (source A), then
fine-tunes it on English prose from CPython's ``pydoc_data/topics.py`` (source B) with full
fine-tuning, LoRA, OFTv2, HRA and Givens (strict and quasi) adapters on the hidden dense layers,
at matched trainable-parameter budgets where the method has a knob, each at the best of three
learning rates. Reports target loss, forgetting on source A, step time and memory relative to
full fine-tuning, and checks that merged models match the adapted ones.

Modules: ``data`` (the two sources), ``lora`` (the LoRA baseline adapter), ``methods``
(hyperparameters, rates, parameter matching), ``loop`` (pretraining, fine-tuning, timing),
``report`` (tables, plot, JSON), ``cli`` (``main``).
"""

from .cli import main

__all__ = ["main"]
