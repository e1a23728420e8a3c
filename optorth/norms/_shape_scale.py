"""Update-scale conventions: the per-matrix factor a norm's step is multiplied by.

The lmo of a norm has unit norm; how large a step of learning rate η is in RMS terms depends
on the matrix shape. A convention fixes what the learning rate means:

- ``"keller"``: sqrt(max(1, fan_out/fan_in)) (Muon reference; lr ≈ 0.02).
- ``"consistent_rms"``: rms · sqrt(max(fan_in, fan_out)) (Moonlight: an orthogonal update
  then has RMS ≈ ``rms``, so AdamW's learning rate and weight decay transfer).
- ``"spectral"``: sqrt(fan_out/fan_in) (the spectral condition for feature learning).

References:
  Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024).
  Liu et al., "Muon is Scalable for LLM Training" (arXiv 2502.16982).
  Yang, Simon & Bernstein, "A Spectral Condition for Feature Learning" (arXiv 2310.17813).
"""

from __future__ import annotations

import dataclasses
import math

from optorth._checks import check_choice, check_positive

SCALE_CONVENTIONS = ("keller", "consistent_rms", "spectral")


@dataclasses.dataclass(frozen=True)
class ShapeScale:
    """A shape-scale convention (see the module docstring), frozen and validated.

    Attributes:
      convention: ``"keller"``, ``"consistent_rms"`` or ``"spectral"``.
      rms: the target update RMS of ``"consistent_rms"`` (ignored by the others).

    Example:
      >>> from optorth.norms import ShapeScale
      >>> ShapeScale("consistent_rms", rms=0.2).factor(fan_in=256, fan_out=1024)
      6.4
    """

    convention: str = "keller"
    rms: float = 0.2

    def __post_init__(self):
        check_choice("ShapeScale", "convention", self.convention, SCALE_CONVENTIONS)
        object.__setattr__(self, "rms", float(check_positive("ShapeScale", "rms", self.rms)))

    def factor(self, fan_in: int, fan_out: int) -> float:
        """The factor for a ``fan_in × fan_out`` matrix (Flax layout ``y = x @ W``); 1 for an
        empty matrix (no entries to scale).

        Raises:
          ValueError: for a negative or non-integer size.
        """
        for name, size in (("fan_in", fan_in), ("fan_out", fan_out)):
            if isinstance(size, bool) or not float(size).is_integer() or size < 0:
                raise ValueError(f"ShapeScale.factor: {name}={size!r} must be a matrix size, "
                                 f"an integer >= 0.")
        if fan_in == 0 or fan_out == 0:
            return 1.0
        if self.convention == "keller":
            return math.sqrt(max(1.0, fan_out / fan_in))
        if self.convention == "consistent_rms":
            return self.rms * math.sqrt(max(fan_in, fan_out))
        return math.sqrt(fan_out / fan_in)


def as_shape_scale(scale) -> ShapeScale | None:
    """``None``, a `ShapeScale`, or a convention name as shorthand for one."""
    if scale is None or isinstance(scale, ShapeScale):
        return scale
    if isinstance(scale, str):
        return ShapeScale(scale)
    raise ValueError(f"scale must be None, a convention name {SCALE_CONVENTIONS} or an "
                     f"optorth.norms.ShapeScale; got {scale!r}.")
