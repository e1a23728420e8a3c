"""`RunSpec`: everything that defines one training run, and the hash that keys its record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def _frozen(items) -> tuple[tuple[str, Any], ...]:
    """A mapping (or pairs) as sorted ``(key, value)`` pairs, lists made tuples."""
    pairs = dict(items).items()
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in pairs))


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: experiment, task settings, optimizer, peak learning rate, seed, options.

    Two specs with equal fields have equal `key`s, so a finished run is found again in the
    record store whatever process wrote it; any change of the task's settings is another key.

    Attributes:
      experiment: the experiment the run belongs to (``"sweep"``, ``"defaults"``, ...).
      task: ``"lm"`` or ``"cnn"``.
      config: the task's settings except the seed, as ``(field, value)`` pairs (a dict is
        accepted and sorted).
      optimizer: a registry name (`benchmarks.runner.registry`).
      lr: peak learning rate of the main path; ``None``: the optimizer's default.
      seed: seed of the initial weights and of the data order.
      options: anything else that changes the run (``{"build": "defaults"}``, a fallback, a
        QK-clip threshold), as sorted pairs.

    Example:
      >>> a = RunSpec("sweep", "cnn", {"steps": 12}, "muon", 0.02, 0)
      >>> a.key == RunSpec("sweep", "cnn", {"steps": 12}, "muon", 0.02, 0).key
      True
      >>> a.key == a.replace(seed=1).key
      False
    """

    experiment: str
    task: str
    config: tuple = ()
    optimizer: str = ""
    lr: float | None = None
    seed: int = 0
    options: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "config", _frozen(self.config))
        object.__setattr__(self, "options", _frozen(self.options))
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"RunSpec: lr must be positive or None, got {self.lr}")

    @property
    def key(self) -> str:
        """16 hex digits of the SHA-256 of the spec's JSON (sorted keys)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def option(self, name: str, default=None):
        return dict(self.options).get(name, default)

    def replace(self, **changes) -> RunSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["config"], out["options"] = dict(self.config), dict(self.options)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> RunSpec:
        return cls(**data)
