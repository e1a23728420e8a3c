"""The experiment runner: `RunSpec`, the record `Store`, the one training loop `train`, the
optimizer registry, and the command line ``python -m benchmarks run|report <experiment>``."""

from .loop import History, StepInfo, StopTraining, Task, outcome, train
from .spec import RunSpec
from .store import Store

__all__ = ["History", "RunSpec", "StepInfo", "StopTraining", "Store", "Task", "outcome",
           "train"]
