"""Update-scale conventions: a per-matrix factor of the matrix shape. See :func:`scale_by_shape`.
"""

from __future__ import annotations

import math
from typing import Any

import optax

from optorth.matrices._resolve import Specs, resolve_specs
from optorth.matrices._specs import map_matrices

SCALE_CONVENTIONS = ("keller", "consistent_rms", "spectral")


def shape_scale(convention: str, fan_in: int, fan_out: int, rms_factor: Any = 0.2):
    """The per-matrix factor of :func:`scale_by_shape` for an ``fan_in × fan_out`` matrix."""
    if convention == "keller":
        return math.sqrt(max(1.0, fan_out / fan_in))
    if convention == "consistent_rms":
        return rms_factor * math.sqrt(max(fan_in, fan_out))
    if convention == "spectral":
        return math.sqrt(fan_out / fan_in)
    raise ValueError(f"Unknown scale convention {convention!r}; expected one of "
                     f"{SCALE_CONVENTIONS}.")


def scale_by_shape(convention: str = "keller", *, rms_factor: float = 0.2,
                   specs: Specs = None) -> optax.GradientTransformation:
    """Scales each matrix by a factor of its shape (fan-in m, fan-out n), per matrix.

    - ``"keller"``: sqrt(max(1, n/m)) (Muon reference; lr ≈ 0.02).
    - ``"consistent_rms"``: rms_factor · sqrt(max(m, n)) (Moonlight; an orthogonal update
      then has RMS ≈ rms_factor, so AdamW's learning rate and weight decay transfer).
    - ``"spectral"``: sqrt(n/m) (spectral-norm scaling, Bernstein et al.).

    Args:
      convention: one of the three names above.
      rms_factor: the target RMS of ``"consistent_rms"``.
      specs: how leaves become matrices (see the module docstring).

    References:
      Liu et al., "Muon is Scalable for LLM Training" (arXiv 2502.16982).
      Yang, Simon & Bernstein, "A Spectral Condition for Feature Learning" (arXiv 2310.17813).
    """
    shape_scale(convention, 1, 1, rms_factor)  # validates the name early

    def scale(mats):
        if mats.size == 0:  # a zero-sized axis: nothing to scale (and no fan-in to divide by)
            return mats
        factor = shape_scale(convention, mats.shape[-2], mats.shape[-1], rms_factor)
        return (mats * factor).astype(mats.dtype)

    def update_fn(updates, state, params=None):
        del params
        return map_matrices(scale, updates, resolve_specs(specs, updates)), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
