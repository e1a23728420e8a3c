"""Benchmarks of optorth, run from the repository root.

* ``python benchmarks/train_lm.py``: the main job (``benchmarks/lm``), several optimizers on
  a character-level transformer, with a printed table and a plot.
* ``python -m benchmarks run|report <experiment> [--smoke]``: the experiments
  (``benchmarks/experiments``: sweep, defaults, fallback_sweep, steps_to_target,
  width_transfer, soak, options_to_target), each a grid of runs recorded in
  ``benchmarks/results/<experiment>.jsonl`` and a report rendered to
  ``benchmarks/results/<experiment>_cpu.md`` and ``docs/results.md``.
* ``python -m benchmarks.micro.<name>``: micro-benchmarks of one update, kernel or layer.

``benchmarks/runner`` holds what they share: `RunSpec`, the record `Store`, the one training
loop over the LM, CNN (``benchmarks/cnn_task``) and fine-tuning (``benchmarks/finetune_lm``)
tasks, and the optimizer registry.
"""
