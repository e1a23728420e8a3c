"""One norm's trust-region step: `trust_region` under any `optorth.norms.Norm`, and its
presets normalized SGD, Signum, AuON and Hybrid-AuON (the same parameters, other defaults).

Matrix leaves take ``momentum → dualize(norm) → scale_by_shape(norm.scale) → weight decay
→ learning rate``; every other leaf takes the fallback (see ``_assemble``).
"""

from __future__ import annotations

import optax

from optorth._checks import check_decay
from optorth.blocks._dualize import dualize
from optorth.blocks._momentum import scale_by_momentum
from optorth.matrices._resolve import RoutingOnce
from optorth.norms._objects import AuON, Frobenius, HybridAuON, Norm, Sign, as_norm
from optorth.optimizers._assemble import assemble
from optorth.optimizers._preset import Preset, make_optimizer

#: The norm each preset requires (`trust_region` takes any, or its name).
_NORM_TYPES = {"auon": AuON, "hybrid_auon": HybridAuON, "normalized_sgdm": Frobenius,
               "signum": Sign}


def _check_norm(name: str, norm) -> Norm:
    required = _NORM_TYPES.get(name)
    if required is not None and not isinstance(norm, required):
        also = " (or HybridAuON)" if required is AuON else ""
        raise ValueError(f"optorth.{name}: norm must be an optorth.norms.{required.__name__}"
                         f"{also}; got {norm!r}. For other norms use "
                         f"optorth.trust_region(norm=...).")
    return as_norm(norm)


def _build(name: str, *, learning_rate, beta, norm, nesterov, warm_start, adaptive, rules,
           **assembly) -> optax.GradientTransformation:
    """momentum → dualize(norm) → the norm's scale, assembled as the ready optimizer ``name``."""
    norm = _check_norm(name, norm)
    check_decay(f"optorth.{name}", "beta", beta)
    momentum = scale_by_momentum(beta, nesterov=nesterov, warm_start=warm_start)
    routing = RoutingOnce(rules)
    blocks = [momentum, dualize(norm, adaptive=adaptive, specs=routing)]
    return assemble(name, blocks, learning_rate=learning_rate, routing=routing,
                    scale=norm.scale, **assembly)


_TAKES = ("norm", "nesterov", "warm_start", "adaptive")
_AUON_PAPER = ('Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates" '
               "(arXiv 2509.24320).")

TRUST_REGION = Preset("trust_region", _build, _TAKES, dict(
    learning_rate=0.025, nesterov=False, warm_start=True), doc="""
    Kovalev's non-Euclidean trust-region method under ``norm``, with a centre shrink.

    M_k = β M_{k−1} + (1−β) G_k (M_0 = G_0 with ``warm_start``), then

        X_{k+1} = argmin_{‖X − (1−ηλ)X_k‖ ≤ η} ⟨M_k, X⟩ = (1−ηλ) X_k − η·lmo(M_k)

    with η = ``learning_rate`` and λ = ``weight_decay`` (decoupled weight decay shrinks the
    trust-region centre; the iterates then stay in the ball ‖X‖ ≤ 1/λ). The norm's shape
    ``scale`` is applied after the lmo (``None`` by default: the pure method).
    `normalized_sgdm`, `signum`, `auon` and `hybrid_auon` are this method under one norm,
    with their own defaults. Default radius 0.025: the best of a learning-rate sweep of a
    small transformer (``benchmarks/sweep.py``).

    Args:

    Example:
      >>> import optorth
      >>> tx = optorth.trust_region(0.025, norm=optorth.norms.Spectral(scale="spectral"))

    References:
      Kovalev, "Understanding Gradient Orthogonalization for Deep Learning via Non-Euclidean
      Trust-Region Optimization" (arXiv 2503.12645).
    """, args=dict(
    learning_rate="the trust-region radius η (a float or an optax schedule).",
    beta="momentum coefficient β = 1 − α, in [0, 1).",
    norm="an `optorth.norms.Norm` (``Spectral(ns)`` with its ``NewtonSchulz``, "
         "``Frobenius()``, ``Sign()``, ``Row()``, ``Column()``, ``AuON()``, ``HybridAuON()``) "
         "or its name.",
    weight_decay="λ, the centre shrink (or an `optorth.WeightDecay`)."))

NORMALIZED_SGDM = Preset("normalized_sgdm", _build, _TAKES, dict(
    learning_rate=0.03, beta=0.9, norm=Frobenius(), nesterov=False), doc="""
    Normalized SGD with momentum: p ← p − lr·M/‖M‖_F per matrix (Frobenius lmo).

    `trust_region` under `optorth.norms.Frobenius`. Each matrix step has Frobenius norm
    ``lr`` (RMS lr/sqrt(mn)), so the learning rate is not comparable with Muon's and grows
    with the matrix size. No published default; 0.03 is the best of a learning-rate sweep of
    a small transformer (``benchmarks/sweep.py``).

    Args:

    Example:
      >>> import optorth
      >>> tx = optorth.normalized_sgdm(learning_rate=0.03)

    References:
      Cutkosky & Mehta, "Momentum Improves Normalized SGD" (arXiv 2002.03305).
    """, args=dict(norm="an `optorth.norms.Frobenius` (its shape ``scale``; none by default)."))

SIGNUM = Preset("signum", _build, _TAKES, dict(
    learning_rate=2.5e-4, beta=0.9, norm=Sign(), nesterov=False), doc="""
    Signum: p ← p − lr·sign(m), m the EMA of gradients (lmo of the entrywise max norm).

    `trust_region` under `optorth.norms.Sign`. The update has RMS 1 per entry, like Adam's.
    No published default learning rate; 2.5e-4 is the best of a learning-rate sweep of a
    small transformer (``benchmarks/sweep.py``; a small CNN preferred 4e-3, so tune it per
    task).

    Args:

    Example:
      >>> import optorth
      >>> tx = optorth.signum(learning_rate=2.5e-4)

    References:
      Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems"
      (arXiv 1802.04434).
    """, args=dict(norm="an `optorth.norms.Sign` (its shape ``scale``; none by default)."))

AUON = Preset("auon", _build, _TAKES, dict(
    learning_rate=0.03, norm=AuON(scale="keller")), doc=f"""
    AuON: Nesterov EMA momentum, then X = M/‖M‖_F divided by sqrt(mean(cosh²(γX))).

    `trust_region` under `optorth.norms.AuON`; linear time. Honest note: since ‖X‖_F = 1
    the cosh factor r satisfies r − 1 ≤ sinh²(γ)/(2N) for N entries (≈2e-6 at 512×512), so
    AuON is, to that accuracy, Frobenius-normalized momentum SGD (`normalized_sgdm` with
    Nesterov and Keller scaling); in its own tables it trails AdamW and Muon. β 0.95, γ 1 and
    Keller scaling are from its training script; its lr 0.24 was 8x too large in a
    learning-rate sweep of a small transformer (``benchmarks/sweep.py``), whose best, 0.03,
    is the default.

    Args:

    Example:
      >>> import optorth
      >>> tx = optorth.auon(norm=optorth.norms.AuON(gamma=1.0, scale="keller"))

    References:
      {_AUON_PAPER}
    """, args=dict(norm="an `optorth.norms.AuON` (its ``gamma``, ``eps`` and shape ``scale``); "
                        "`optorth.norms.HybridAuON` gives `hybrid_auon`."))

HYBRID_AUON = Preset("hybrid_auon", _build, _TAKES, dict(
    learning_rate=0.03, norm=HybridAuON(scale="keller")), doc=f"""
    Hybrid-AuON: one Newton–Schulz step (Jordan's coefficients) before AuON's scaling.

    `trust_region` under `optorth.norms.HybridAuON`. Follows the paper's description
    ("applies a single Newton–Schulz iteration"): the direction is AuON's scaling of one
    Frobenius-normalized Jordan step of the momentum. It is a feasible point of the Frobenius
    ball, not the lmo of a norm. Default lr 0.03: the best of a learning-rate sweep of a small
    transformer (``benchmarks/sweep.py``).

    Args:

    Example:
      >>> import optorth
      >>> tx = optorth.hybrid_auon(learning_rate=0.03)

    References:
      {_AUON_PAPER}
    """, args=dict(norm="an `optorth.norms.HybridAuON` (``gamma``, ``eps``, shape ``scale``)."))

trust_region = make_optimizer(TRUST_REGION, __name__)
normalized_sgdm = make_optimizer(NORMALIZED_SGDM, __name__)
signum = make_optimizer(SIGNUM, __name__)
auon = make_optimizer(AUON, __name__)
hybrid_auon = make_optimizer(HYBRID_AUON, __name__)
