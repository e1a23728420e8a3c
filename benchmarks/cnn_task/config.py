"""What defines a CNN run: `CNNConfig` (data, model widths, schedule, evaluation)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class CNNConfig:
    """Everything that defines one run of the CNN task.

    The learning-rate shape fields (``steps``, ``warmup_frac``, ``final_lr_frac``) and
    ``weight_decay`` have the meaning of the LM job's `Config`, so the
    same optimizer builders and `lr_schedule` serve both tasks.

    Attributes:
      image_size: side of the square images, in pixels.
      channels: colour channels of the images (1 or 3).
      train_size, val_size: images in the training and validation splits.
      noise: standard deviation of the additive Gaussian pixel noise.
      data_seed: seed of the generated data set (fixed across runs and optimizers).
      widths: output channels of the four 3x3 convolutions (the 2nd and 4th have stride 2).
      steps, batch_size: training steps and images per step.
      seed: seed of the initial weights and of the order of the training images.
      eval_every: steps between validation measurements.
      warmup_frac, final_lr_frac, weight_decay: the learning-rate shape and weight decay.
    """

    image_size: int = 16
    channels: int = 3
    train_size: int = 8192
    val_size: int = 1024
    noise: float = 0.35
    data_seed: int = 0
    widths: tuple[int, int, int, int] = (16, 32, 32, 64)
    steps: int = 300
    batch_size: int = 64
    seed: int = 0
    eval_every: int = 25
    warmup_frac: float = 0.05
    final_lr_frac: float = 0.1
    weight_decay: float = 0.0

    def __post_init__(self):
        for field in ("image_size", "train_size", "val_size", "steps", "batch_size",
                      "eval_every"):
            if getattr(self, field) < 1:
                raise ValueError(f"CNNConfig: {field} must be positive, got "
                                 f"{getattr(self, field)}")
        if self.image_size < 8:
            raise ValueError(f"CNNConfig: image_size={self.image_size} is too small for the "
                             "shapes; use 8 or more")
        if self.channels not in (1, 3):
            raise ValueError(f"CNNConfig: channels must be 1 or 3, got {self.channels}")
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise ValueError(f"CNNConfig: widths must be 4 positive channel counts, got "
                             f"{self.widths}")
        if self.noise < 0:
            raise ValueError(f"CNNConfig: noise must be >= 0, got {self.noise}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"CNNConfig: warmup_frac must be in [0, 1), got {self.warmup_frac}")

    @classmethod
    def quick(cls, **changes) -> CNNConfig:
        """Tiny settings for tests and smoke runs (a second or two of compute per run, most
        of it compilation; enough steps to leave chance level)."""
        base = dict(train_size=1024, val_size=256, widths=(8, 16, 16, 32), steps=120,
                    batch_size=32, eval_every=30)
        return cls(**{**base, **changes})

    def replace(self, **changes) -> CNNConfig:
        return dataclasses.replace(self, **changes)

    def eval_steps(self) -> tuple[int, ...]:
        """Steps after which validation is measured (0 = before training, always the last)."""
        return tuple(sorted(set(range(0, self.steps + 1, self.eval_every)) | {self.steps}))
