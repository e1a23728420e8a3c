"""What defines a run of the main job: `Config` and the run's model."""

from __future__ import annotations

import dataclasses

from . import model as lm_model


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(lm_model.ModelShape):
    """Everything that defines a run: the model's shape (the fields of
    `ModelShape`), data, schedule and evaluation.

    The defaults are the README run: 4 optimizers finish in well under 10 minutes on a
    2-core CPU. ``Config.quick()`` is the tiny setting used by the tests.
    """

    steps: int = 300
    batch_size: int = 16
    seed: int = 0
    eval_every: int = 25
    eval_batches: int = 4
    corpus_chars: int = 2_000_000
    warmup_frac: float = 0.05
    final_lr_frac: float = 0.1
    weight_decay: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        for field in ("steps", "batch_size", "eval_every", "eval_batches", "corpus_chars"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")

    @classmethod
    def quick(cls, **changes) -> Config:
        """Tiny settings for tests (a few seconds of compute per optimizer)."""
        base = dict(
            steps=24,
            batch_size=8,
            seq_len=32,
            d_model=32,
            layers=1,
            heads=2,
            eval_every=6,
            eval_batches=2,
            corpus_chars=200_000,
        )
        return cls(**{**base, **changes})

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def model_config(self, vocab_size: int) -> lm_model.ModelConfig:
        return lm_model.ModelConfig(vocab_size=vocab_size, **self.shape())

    def table_steps(self) -> tuple[int, ...]:
        """The steps reported in the table: every quarter of the run."""
        return tuple(sorted({max(1, round(self.steps * k / 4)) for k in range(1, 5)}))

    def eval_steps(self) -> tuple[int, ...]:
        """Steps after which validation loss is measured (0 = before training)."""
        regular = set(range(0, self.steps + 1, self.eval_every))
        return tuple(sorted(regular | set(self.table_steps()) | {0, self.steps}))


def make_model(cfg: Config, vocab_size: int) -> lm_model.TransformerLM:
    """The run's model, initialised from ``cfg.seed`` (identical for every optimizer)."""
    return lm_model.make_model(cfg.model_config(vocab_size), seed=cfg.seed)
