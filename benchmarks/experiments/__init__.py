"""The experiments: each a grid of runs and a report (``python -m benchmarks list``)."""

NAMES = ("sweep", "defaults", "fallback_sweep", "steps_to_target", "width_transfer", "soak",
         "options_to_target")
