"""Norms as objects: each carries its dualizer (lmo), dual and primal norm, and shape scale.

A trust-region step of radius η under a norm ‖·‖ is X ← X − η·lmo(M) with
lmo(M) = argmax_{‖D‖ ≤ 1} ⟨M, D⟩ and ⟨M, lmo(M)⟩ = ‖M‖_* (Kovalev, "Understanding Gradient
Orthogonalization for Deep Learning via Non-Euclidean Trust-Region Optimization",
arXiv 2503.12645). `optorth.dualize` applies ``norm.lmo`` per matrix and
`optorth.scale_by_shape` applies ``norm.scale``. All methods take ``(..., m, n)``
arrays and work per matrix; norms return float32 of shape ``(...)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax

from optorth._checks import check_positive
from optorth.norms import _functions as fn
from optorth.norms._shape_scale import ShapeScale, as_shape_scale
from optorth.ns._config import NewtonSchulz, as_newton_schulz


def _abstract(norm, method: str) -> str:
    return (f"{type(norm).__name__} does not define {method}(); subclass optorth.norms.Norm "
            f"with lmo, dual and primal, or use one of {tuple(NORMS)}.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Norm:
    """Base class: a norm on m×n matrices with its lmo and an update-scale convention.

    Attributes:
      scale: the shape-scale convention applied after the lmo (``None``: none), a
        `ShapeScale` or a convention name (``"keller"``, ``"consistent_rms"``,
        ``"spectral"``); keyword-only in every norm.
    """

    scale: ShapeScale | str | None = None
    #: True when the lmo multiplies whole matrices (and commutes with transposition), so the
    #: matrices are grouped by shape and distributed across devices like Newton–Schulz.
    whole_matrix: ClassVar[bool] = False

    def __post_init__(self):
        object.__setattr__(self, "scale", as_shape_scale(self.scale))

    def lmo(self, mats) -> jax.Array:
        """lmo(M) per matrix, in the input dtype."""
        raise NotImplementedError(_abstract(self, "lmo"))

    def dual(self, mats) -> jax.Array:
        """The dual norm ‖M‖_* = ⟨M, lmo(M)⟩ per matrix."""
        raise NotImplementedError(_abstract(self, "dual"))

    def primal(self, mats) -> jax.Array:
        """The norm ‖M‖ itself per matrix."""
        raise NotImplementedError(_abstract(self, "primal"))


@dataclasses.dataclass(frozen=True)
class Spectral(Norm):
    """The spectral norm σ_max: lmo(M) = U Vᵀ (Newton–Schulz with ``ns``), dual = nuclear.

    Attributes:
      ns: the `optorth.NewtonSchulz` that approximates the polar factor.

    Example:
      >>> import optorth, jax.numpy as jnp
      >>> norm = optorth.norms.Spectral(optorth.NewtonSchulz("polar_express5"), scale="keller")
      >>> norm.lmo(jnp.eye(4, 8)).shape
      (4, 8)
    """

    ns: NewtonSchulz = NewtonSchulz()
    whole_matrix: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "ns", as_newton_schulz(self.ns))

    def lmo(self, mats):
        return fn.lmo_spectral(mats, self.ns)

    def dual(self, mats):
        return fn.dual_norm_spectral(mats)

    def primal(self, mats):
        return fn.primal_norm_spectral(mats)


@dataclasses.dataclass(frozen=True)
class Frobenius(Norm):
    """‖D‖_F: lmo(M) = M/‖M‖_F (normalized SGD); self-dual."""

    def lmo(self, mats):
        return fn.lmo_frobenius(mats)

    def dual(self, mats):
        return fn.dual_norm_frobenius(mats)

    def primal(self, mats):
        return fn.primal_norm_frobenius(mats)


@dataclasses.dataclass(frozen=True)
class Sign(Norm):
    """The entrywise max norm: lmo(M) = sign(M) (Signum); dual = Σ|M_ij|."""

    def lmo(self, mats):
        return fn.lmo_sign(mats)

    def dual(self, mats):
        return fn.dual_norm_sign(mats)

    def primal(self, mats):
        return fn.primal_norm_sign(mats)


@dataclasses.dataclass(frozen=True)
class Row(Norm):
    """The ℓ1→ℓ2 operator norm max_i ‖D_i,:‖₂: each row divided by its ℓ2 norm."""

    def lmo(self, mats):
        return fn.lmo_row(mats)

    def dual(self, mats):
        return fn.dual_norm_row(mats)

    def primal(self, mats):
        return fn.primal_norm_row(mats)


@dataclasses.dataclass(frozen=True)
class Column(Norm):
    """The ℓ2→ℓ∞ operator norm max_j ‖D_:,j‖₂: each column divided by its ℓ2 norm."""

    def lmo(self, mats):
        return fn.lmo_column(mats)

    def dual(self, mats):
        return fn.dual_norm_column(mats)

    def primal(self, mats):
        return fn.primal_norm_column(mats)


@dataclasses.dataclass(frozen=True)
class AuON(Norm):
    """AuON's direction X/sqrt(mean(cosh²(γX))), X = M/‖M‖_F: a point of the Frobenius ball.

    Honest note: since ‖X‖_F = 1 the cosh factor r satisfies r − 1 ≤ sinh²(γ)/(2N) for N
    entries (≈2e-6 at 512×512), so AuON is, to that accuracy, `Frobenius`. Its "dual"
    is the value it attains, ⟨M, lmo(M)⟩.

    Attributes:
      gamma: the cosh scale γ (> 0).
      eps: added to ‖M‖_F (> 0).

    References:
      Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates"
      (arXiv 2509.24320).
    """

    gamma: float = 1.0
    eps: float = 1e-7

    def __post_init__(self):
        super().__post_init__()
        check_positive(type(self).__name__, "gamma", self.gamma)
        check_positive(type(self).__name__, "eps", self.eps)

    def lmo(self, mats):
        return fn.lmo_auon(mats, gamma=self.gamma, eps=self.eps)

    def dual(self, mats):
        return fn.dual_norm_auon(mats, gamma=self.gamma, eps=self.eps)

    def primal(self, mats):
        return fn.primal_norm_frobenius(mats)


@dataclasses.dataclass(frozen=True)
class HybridAuON(AuON):
    """Hybrid-AuON: one Newton–Schulz step (Jordan's coefficients) before AuON's scaling.

    The step turns the direction away from M, so it is a feasible point of the Frobenius
    ball (value ≤ ‖M‖_F), not a maximizer.

    References:
      Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates"
      (arXiv 2509.24320).
    """

    whole_matrix: ClassVar[bool] = True

    def lmo(self, mats):
        return fn.lmo_hybrid_auon(mats, gamma=self.gamma, eps=self.eps)

    def dual(self, mats):
        return fn.dual_norm_hybrid_auon(mats, gamma=self.gamma, eps=self.eps)


#: Names accepted wherever a norm is expected, as shorthand for the default object.
NORMS: dict[str, type[Norm]] = {
    "spectral": Spectral, "frobenius": Frobenius, "sign": Sign, "row": Row,
    "column": Column, "auon": AuON, "hybrid_auon": HybridAuON,
}


def as_norm(norm: Any) -> Norm:
    """A `Norm` from itself or a name in `NORMS`."""
    if isinstance(norm, Norm):
        if type(norm).lmo is Norm.lmo:
            raise ValueError(f"{type(norm).__name__}() defines no lmo: optorth.norms.Norm is the "
                             f"base class. Use one of {tuple(NORMS)} (e.g. "
                             f"optorth.norms.Spectral()) or a subclass with lmo, dual and "
                             f"primal.")
        return norm
    if isinstance(norm, str) and norm in NORMS:
        return NORMS[norm]()
    raise ValueError(f"Expected an optorth.norms.Norm (e.g. optorth.norms.Spectral()) or one of "
                     f"the names {tuple(NORMS)}; got {norm!r}.")
