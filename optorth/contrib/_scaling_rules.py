"""The square-root scaling rule for adaptive methods (Malladi, Lyu, Panigrahi, Arora, 2022).

When the batch size is multiplied by κ, Adam's (and RMSprop's) hyperparameters that keep the
same stochastic differential equation, hence approximately the same trajectory as a function
of samples seen, are:

    η → √κ · η,    1 − β₁ → κ (1 − β₁),    1 − β₂ → κ (1 − β₂),    ε → ε / √κ.

Why there is no Muon counterpart here: the derivation needs the update to be a smooth map of
the gradient, preconditioned by a second moment v that tracks the gradient noise; the SDE then
follows from the drift and the noise covariance σ²/B. Muon's update is msign(momentum) = U Vᵀ,
a non-smooth, scale-free map whose expectation under noise depends on the whole singular
spectrum of signal plus noise, with no closed form; no SDE limit or scaling rule for it has been
derived in that paper (nor is one derived here). Scaling the momentum horizon
(1 − β → κ (1 − β), the same averaging window in samples) and re-tuning η is a heuristic, not
a consequence of the analysis, so it is not offered as a function.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import optax

from optorth._checks import check_decay, check_learning_rate, check_nonnegative, check_positive

_WHO = "sqrt_scaling_rule"


class ScaledHyperparams(NamedTuple):
    """Adam's hyperparameters after a scaling rule (pass them to ``optax.adam(**h._asdict())``)."""

    learning_rate: optax.ScalarOrSchedule
    b1: float
    b2: float
    eps: float


def _scale_beta(kappa: float, name: str, beta: float, b1: float, b2: float) -> float:
    scaled = 1.0 - kappa * (1.0 - beta)
    if abs(scaled) < 1e-12:  # κ = 1/(1 − β) exactly, up to rounding: β → 0
        scaled = 0.0
    if scaled < 0.0:
        largest = min(1.0 / (1.0 - b1), 1.0 / (1.0 - b2))
        raise ValueError(
            f"{_WHO}: kappa={kappa!r} sends {name}={beta!r} to 1 − κ(1 − {name}) = {scaled:.6g} "
            f"< 0; the largest admissible kappa for b1={b1!r}, b2={b2!r} is {largest:.6g} "
            f"(= 1/(1 − min(b1, b2))). Beyond it the rule has no valid decay; use a smaller "
            f"kappa or start from larger b1, b2.")
    return scaled


def sqrt_scaling_rule(
    kappa: float,
    *,
    learning_rate: optax.ScalarOrSchedule,
    b1: float,
    b2: float,
    eps: float,
) -> ScaledHyperparams:
    r"""Adam's hyperparameters for batch size × κ by the square-root scaling rule.

    From hyperparameters (η, β₁, β₂, ε) tuned at batch size B, the rule gives, for batch κB:

        η' = √κ · η,   β₁' = 1 − κ (1 − β₁),   β₂' = 1 − κ (1 − β₂),   ε' = ε / √κ

    so that Adam at κB follows the same SDE as at B, with time measured in samples (κ times
    fewer steps). β' must stay in [0, 1), so κ ≤ min(1/(1 − β₁), 1/(1 − β₂)); a larger κ
    raises ``ValueError`` naming that bound. κ < 1
    (a smaller batch) is allowed. A schedule ``learning_rate`` is scaled pointwise,
    ``count -> √κ · schedule(count)`` (re-index it by steps if the step count changes).

    ``b1``, ``b2``, ``eps`` are optax's Adam names. The rule is derived for Adam and RMSprop
    only; for Muon-family optimizers no analogue is derived (the module docstring says why).
    The naive linear rule η' = κη with unchanged β's, ε is what the benchmark compares it with.

    Args:
      kappa: κ > 0, the factor of the batch size.
      learning_rate: η ≥ 0 at the original batch size, a number or an optax schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε ≥ 0.

    Returns:
      `ScaledHyperparams` ``(learning_rate, b1, b2, eps)`` for batch size κB.

    Example:
      >>> from optorth.contrib import sqrt_scaling_rule
      >>> h = sqrt_scaling_rule(4, learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8)
      >>> round(h.learning_rate, 6), round(h.b1, 6), round(h.b2, 6), h.eps
      (0.002, 0.6, 0.996, 5e-09)
      >>> import optax
      >>> tx = optax.adam(**h._asdict())

    References:
      Malladi, Lyu, Panigrahi, Arora, "On the SDEs and Scaling Rules for Adaptive Gradient
      Algorithms", NeurIPS 2022, arXiv 2205.10287.
    """
    kappa = float(check_positive(_WHO, "kappa", kappa))
    check_learning_rate(_WHO, learning_rate)
    b1 = float(check_decay(_WHO, "b1", b1))
    b2 = float(check_decay(_WHO, "b2", b2))
    eps = float(check_nonnegative(_WHO, "eps", eps))
    root = math.sqrt(kappa)
    if callable(learning_rate) and not hasattr(learning_rate, "dtype"):
        schedule = learning_rate

        def scaled_lr(count):
            return root * schedule(count)
    else:
        scaled_lr = root * learning_rate
    return ScaledHyperparams(scaled_lr, _scale_beta(kappa, "b1", b1, b1, b2),
                             _scale_beta(kappa, "b2", b2, b1, b2), eps / root)
