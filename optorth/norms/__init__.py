"""Norms as objects: the dualizer (lmo), dual and primal norm, and shape scale of each.

A trust-region step under a norm is X ← X − η·lmo(M), lmo(M) = argmax_{‖D‖ ≤ 1} ⟨M, D⟩
(Kovalev, arXiv 2503.12645). Pass a norm to `optorth.dualize` or
`optorth.trust_region`; its ``scale`` (a `ShapeScale`) sets what the learning
rate means per matrix shape.

| norm            | lmo(M)                               | dual ‖M‖_*           |
|-----------------|--------------------------------------|----------------------|
| `Spectral` (holds a ``NewtonSchulz``) | U Vᵀ (polar factor) | nuclear norm Σσ_i |
| `Frobenius` | M / ‖M‖_F                         | ‖M‖_F                |
| `Sign`   | sign(M)                              | ℓ1 norm Σ abs(M_ij)   |
| `Row`    | each row / its ℓ2 norm               | Σ_i ‖M_i,:‖₂         |
| `Column` | each column / its ℓ2 norm            | Σ_j ‖M_:,j‖₂         |
| `AuON`, `HybridAuON` | AuON's cosh-scaled direction | ⟨M, lmo(M)⟩ |

Names in `NORMS` (``"spectral"``, ``"sign"``, ...) are accepted as shorthand for the
default object; `SCALE_CONVENTIONS` lists the names of the shape-scale conventions.

Example:
  >>> import optorth, jax.numpy as jnp
  >>> float(optorth.norms.Frobenius().dual(jnp.array([[3.0, 4.0]])))
  5.0
"""

import warnings

from optorth.norms._objects import NORMS as NORMS
from optorth.norms._objects import AuON as AuON
from optorth.norms._objects import Column as Column
from optorth.norms._objects import Frobenius as Frobenius
from optorth.norms._objects import HybridAuON as HybridAuON
from optorth.norms._objects import Norm as Norm
from optorth.norms._objects import Row as Row
from optorth.norms._objects import Sign as Sign
from optorth.norms._objects import Spectral as Spectral
from optorth.norms._objects import as_norm as as_norm
from optorth.norms._shape_scale import SCALE_CONVENTIONS as SCALE_CONVENTIONS
from optorth.norms._shape_scale import ShapeScale as ShapeScale

__all__ = ["NORMS", "SCALE_CONVENTIONS", "AuON", "Column", "Frobenius", "HybridAuON", "Norm",
           "Row", "ShapeScale", "Sign", "Spectral", "as_norm"]


def __getattr__(name: str):
    """``CONVENTIONS``, the former name of `SCALE_CONVENTIONS` (a ``DeprecationWarning``):
    ``optorth.scale_by_momentum`` has conventions too ("ema", "sgd")."""
    if name == "CONVENTIONS":
        warnings.warn("optorth.norms.CONVENTIONS is deprecated; use "
                      "optorth.norms.SCALE_CONVENTIONS (the same tuple).", DeprecationWarning,
                      stacklevel=2)
        return SCALE_CONVENTIONS
    raise AttributeError(f"module 'optorth.norms' has no attribute {name!r}")
