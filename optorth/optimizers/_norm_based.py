"""Optimizers that are one norm's trust-region step: AuON, normalized SGD, Signum, and the
general `trust_region` under any `optorth.norms.Norm`.

Matrix leaves take ``momentum → dualize(norm) → scale_by_shape(norm.scale) → weight decay
→ learning rate``; every other leaf takes the fallback (see ``_assemble``).
"""

from __future__ import annotations

from typing import Any

import optax

from optorth._checks import check_decay
from optorth.blocks._dualize import dualize
from optorth.blocks._momentum import scale_by_momentum
from optorth.blocks._weight_decay import WeightDecay
from optorth.matrices._resolve import route_specs
from optorth.norms._objects import AuON, Frobenius, HybridAuON, Norm, Sign, Spectral, as_norm
from optorth.optimizers._assemble import assemble


def _norm_step(name, norm: Norm, momentum, *, adaptive=False, **assembly):
    """momentum → dualize(norm) → the norm's scale, assembled as the ready optimizer ``name``."""
    blocks = [momentum, dualize(norm, adaptive=adaptive, specs=route_specs(assembly["rules"]))]
    return assemble(name, blocks, scale=norm.scale, **assembly)


def auon(
    learning_rate: Any = 0.03,
    beta: float = 0.95,
    *,
    nesterov: bool = True,
    weight_decay: float | WeightDecay = 0.0,
    weight_decay_mask: Any = None,
    norm: AuON = AuON(scale="keller"),
    rules: Any = None,
    mu_dtype: Any = None,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    """AuON: Nesterov EMA momentum, then X = M/‖M‖_F divided by sqrt(mean(cosh²(γX))).

    Linear time. Honest note: since ‖X‖_F = 1 the cosh factor r satisfies
    r − 1 ≤ sinh²(γ)/(2N) for N entries (≈2e-6 at 512×512), so AuON is, to that accuracy,
    Frobenius-normalized momentum SGD (`normalized_sgdm` with Nesterov and Keller
    scaling); in its own tables it trails AdamW and Muon. β 0.95, γ 1 and Keller scaling are
    from its training script; its lr 0.24 was 8x too large in a learning-rate sweep of a
    small transformer (``benchmarks/sweep.py``), whose best, 0.03, is the default.

    Args:
      learning_rate: step size of the matrix path (a float or an optax schedule).
      beta: momentum coefficient, in [0, 1).
      nesterov: apply the momentum with the Nesterov look-ahead.
      weight_decay: decoupled weight decay on the matrix path (or an `optorth.WeightDecay`).
      weight_decay_mask: where weight decay applies (a bool pytree or a callable).
      norm: an `optorth.norms.AuON` (its ``gamma``, ``eps`` and shape ``scale``);
        `optorth.norms.HybridAuON` gives `hybrid_auon`.
      rules: routing rules (`optorth.route`).
      mu_dtype: dtype of the optimizer state and arithmetic.
      fallback: optimizer of the non-matrix leaves (``None``: the default AdamW).

    Example:
      >>> import optorth
      >>> tx = optorth.auon(norm=optorth.norms.AuON(gamma=1.0, scale="keller"))

    References:
      Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates"
      (arXiv 2509.24320).
    """
    if not isinstance(norm, AuON):
        raise ValueError(f"optorth.auon: norm must be an optorth.norms.AuON (or HybridAuON); "
                         f"got {norm!r}. For other norms use optorth.trust_region(norm=...).")
    check_decay("optorth.auon", "beta", beta)
    return _norm_step("auon", norm, scale_by_momentum(beta, nesterov=nesterov),
                      learning_rate=learning_rate, weight_decay=weight_decay,
                      weight_decay_mask=weight_decay_mask, rules=rules, mu_dtype=mu_dtype,
                      fallback=fallback)


def hybrid_auon(
    learning_rate: Any = 0.03,
    beta: float = 0.95,
    *,
    nesterov: bool = True,
    weight_decay: float | WeightDecay = 0.0,
    weight_decay_mask: Any = None,
    norm: HybridAuON = HybridAuON(scale="keller"),
    rules: Any = None,
    mu_dtype: Any = None,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    """Hybrid-AuON: one Newton–Schulz step (Jordan's coefficients) before AuON's scaling.

    Follows the paper's description ("applies a single Newton–Schulz iteration"): the
    direction is AuON's scaling of one Frobenius-normalized Jordan step of the momentum. It
    is a feasible point of the Frobenius ball, not the lmo of a norm. Default lr 0.03: the
    best of a learning-rate sweep of a small transformer (``benchmarks/sweep.py``).

    Args:
      learning_rate: step size of the matrix path (a float or an optax schedule).
      beta: momentum coefficient, in [0, 1).
      nesterov: apply the momentum with the Nesterov look-ahead.
      weight_decay: decoupled weight decay on the matrix path (or an `optorth.WeightDecay`).
      weight_decay_mask: where weight decay applies (a bool pytree or a callable).
      norm: an `optorth.norms.HybridAuON` (``gamma``, ``eps``, shape ``scale``).
      rules: routing rules (`optorth.route`).
      mu_dtype: dtype of the optimizer state and arithmetic.
      fallback: optimizer of the non-matrix leaves (``None``: the default AdamW).

    Example:
      >>> import optorth
      >>> tx = optorth.hybrid_auon(learning_rate=0.03)

    References:
      Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates"
      (arXiv 2509.24320).
    """
    if not isinstance(norm, HybridAuON):
        raise ValueError(f"optorth.hybrid_auon: norm must be an optorth.norms.HybridAuON; got "
                         f"{norm!r}.")
    check_decay("optorth.hybrid_auon", "beta", beta)
    return _norm_step("hybrid_auon", norm, scale_by_momentum(beta, nesterov=nesterov),
                      learning_rate=learning_rate, weight_decay=weight_decay,
                      weight_decay_mask=weight_decay_mask, rules=rules, mu_dtype=mu_dtype,
                      fallback=fallback)


def normalized_sgdm(
    learning_rate: Any = 0.03,
    beta: float = 0.9,
    *,
    nesterov: bool = False,
    weight_decay: float | WeightDecay = 0.0,
    weight_decay_mask: Any = None,
    norm: Frobenius = Frobenius(),
    rules: Any = None,
    mu_dtype: Any = None,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    """Normalized SGD with momentum: p ← p − lr·M/‖M‖_F per matrix (Frobenius lmo).

    Each matrix step has Frobenius norm ``lr`` (RMS lr/sqrt(mn)), so the learning rate is not
    comparable with Muon's and grows with the matrix size. No published default; 0.03 is the
    best of a learning-rate sweep of a small transformer (``benchmarks/sweep.py``).

    Args:
      learning_rate: step size of the matrix path (a float or an optax schedule).
      beta: momentum coefficient, in [0, 1).
      nesterov: apply the momentum with the Nesterov look-ahead.
      weight_decay: decoupled weight decay on the matrix path (or an `optorth.WeightDecay`).
      weight_decay_mask: where weight decay applies (a bool pytree or a callable).
      norm: an `optorth.norms.Frobenius` (its shape ``scale``; none by default).
      rules: routing rules (`optorth.route`).
      mu_dtype: dtype of the optimizer state and arithmetic.
      fallback: optimizer of the non-matrix leaves (``None``: the default AdamW).

    Example:
      >>> import optorth
      >>> tx = optorth.normalized_sgdm(learning_rate=0.03)

    References:
      Cutkosky & Mehta, "Momentum Improves Normalized SGD" (arXiv 2002.03305).
    """
    if not isinstance(norm, Frobenius):
        raise ValueError(f"optorth.normalized_sgdm: norm must be an optorth.norms.Frobenius; "
                         f"got {norm!r}. For other norms use optorth.trust_region(norm=...).")
    check_decay("optorth.normalized_sgdm", "beta", beta)
    return _norm_step("normalized_sgdm", norm, scale_by_momentum(beta, nesterov=nesterov),
                      learning_rate=learning_rate, weight_decay=weight_decay,
                      weight_decay_mask=weight_decay_mask, rules=rules, mu_dtype=mu_dtype,
                      fallback=fallback)


def signum(
    learning_rate: Any = 2.5e-4,
    beta: float = 0.9,
    *,
    nesterov: bool = False,
    weight_decay: float | WeightDecay = 0.0,
    weight_decay_mask: Any = None,
    norm: Sign = Sign(),
    rules: Any = None,
    mu_dtype: Any = None,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    """Signum: p ← p − lr·sign(m), m the EMA of gradients (lmo of the entrywise max norm).

    The update has RMS 1 per entry, like Adam's. No published default learning rate; 2.5e-4
    is the best of a learning-rate sweep of a small transformer (``benchmarks/sweep.py``;
    a small CNN preferred 4e-3, so tune it per task).

    Args:
      learning_rate: step size of the matrix path (a float or an optax schedule).
      beta: momentum coefficient, in [0, 1).
      nesterov: apply the momentum with the Nesterov look-ahead.
      weight_decay: decoupled weight decay on the matrix path (or an `optorth.WeightDecay`).
      weight_decay_mask: where weight decay applies (a bool pytree or a callable).
      norm: an `optorth.norms.Sign` (its shape ``scale``; none by default).
      rules: routing rules (`optorth.route`).
      mu_dtype: dtype of the optimizer state and arithmetic.
      fallback: optimizer of the non-matrix leaves (``None``: the default AdamW).

    Example:
      >>> import optorth
      >>> tx = optorth.signum(learning_rate=2.5e-4)

    References:
      Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems"
      (arXiv 1802.04434).
    """
    if not isinstance(norm, Sign):
        raise ValueError(f"optorth.signum: norm must be an optorth.norms.Sign; got {norm!r}. "
                         f"For other norms use optorth.trust_region(norm=...).")
    check_decay("optorth.signum", "beta", beta)
    return _norm_step("signum", norm, scale_by_momentum(beta, nesterov=nesterov),
                      learning_rate=learning_rate, weight_decay=weight_decay,
                      weight_decay_mask=weight_decay_mask, rules=rules, mu_dtype=mu_dtype,
                      fallback=fallback)


def trust_region(
    learning_rate: Any = 0.025,
    *,
    norm: Norm | str = Spectral(),
    beta: float = 0.95,
    warm_start: bool = True,
    adaptive: bool = False,
    weight_decay: float | WeightDecay = 0.0,
    weight_decay_mask: Any = None,
    rules: Any = None,
    mu_dtype: Any = None,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    """Kovalev's non-Euclidean trust-region method under ``norm``, with a centre shrink.

    M_k = β M_{k−1} + (1−β) G_k (M_0 = G_0 with ``warm_start``; no Nesterov), then

        X_{k+1} = argmin_{‖X − (1−ηλ)X_k‖ ≤ η} ⟨M_k, X⟩ = (1−ηλ) X_k − η·lmo(M_k)

    with η = ``learning_rate`` and λ = ``weight_decay`` (decoupled weight decay shrinks the
    trust-region centre; the iterates then stay in the ball ‖X‖ ≤ 1/λ). The norm's shape
    ``scale`` is applied after the lmo (``None`` by default: the pure method). Default radius
    0.025: the best of a learning-rate sweep of a small transformer (``benchmarks/sweep.py``).

    Args:
      learning_rate: the trust-region radius η (a float or an optax schedule).
      norm: an `optorth.norms.Norm` (``Spectral(ns)`` with its ``NewtonSchulz``,
        ``Frobenius()``, ``Sign()``, ``Row()``, ``Column()``, ``AuON()``, ``HybridAuON()``)
        or its name.
      beta: momentum coefficient β = 1 − α, in [0, 1).
      warm_start: M_0 = G_0 as in the paper (instead of an EMA from zero).
      adaptive: multiply each matrix's direction by the dual norm ⟨M, lmo(M)⟩.
      weight_decay: λ, the centre shrink (or an `optorth.WeightDecay`).
      weight_decay_mask: where weight decay applies (a bool pytree or a callable).
      rules: routing rules (`optorth.route`).
      mu_dtype: dtype of the optimizer state and arithmetic.
      fallback: optimizer of the non-matrix leaves (``None``: the default AdamW).

    Example:
      >>> import optorth
      >>> tx = optorth.trust_region(0.025, norm=optorth.norms.Spectral(scale="spectral"))

    References:
      Kovalev, "Understanding Gradient Orthogonalization for Deep Learning via Non-Euclidean
      Trust-Region Optimization" (arXiv 2503.12645).
    """
    check_decay("optorth.trust_region", "beta", beta)
    momentum = scale_by_momentum(beta, nesterov=False, warm_start=warm_start)
    return _norm_step("trust_region", as_norm(norm), momentum, adaptive=adaptive,
                      learning_rate=learning_rate, weight_decay=weight_decay,
                      weight_decay_mask=weight_decay_mask, rules=rules, mu_dtype=mu_dtype,
                      fallback=fallback)
