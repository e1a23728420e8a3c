"""One norm's trust-region step: `trust_region` under any `optorth.norms.Norm`, and its
presets AuON, Hybrid-AuON, normalized SGD and Signum (one signature, other defaults).

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
from optorth.optimizers._preset import Preset, make_optimizer


def _signature(
    learning_rate: optax.ScalarOrSchedule = 0.025,
    beta: float = 0.95,
    *,
    norm: Norm | str = Spectral(),
    nesterov: bool = False,
    warm_start: bool = False,
    adaptive: bool = False,
    weight_decay: float | WeightDecay = 0.0,
    weight_decay_mask: Any = None,
    rules: Any = None,
    mu_dtype: Any = None,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    """The signature of every optimizer of this module (never called)."""
    raise NotImplementedError


_ARGS = {
    "learning_rate": "step size η of the matrix path, the trust-region radius (a float or an "
                     "optax schedule).",
    "beta": "momentum coefficient β = 1 − α, in [0, 1).",
    "norm": "an `optorth.norms.Norm` whose lmo is the step (with its shape ``scale``), or its "
            "name.",
    "nesterov": "apply the momentum with the Nesterov look-ahead.",
    "warm_start": "M_0 = G_0 as in Kovalev's method (instead of an EMA from zero).",
    "adaptive": "multiply each matrix's direction by the dual norm ⟨M, lmo(M)⟩.",
    "weight_decay": "decoupled weight decay λ on the matrix path, which shrinks the "
                    "trust-region centre (or an `optorth.WeightDecay`).",
    "weight_decay_mask": "where weight decay applies (a bool pytree or a callable).",
    "rules": "routing rules (`optorth.route`).",
    "mu_dtype": "dtype of the optimizer state and arithmetic.",
    "fallback": "optimizer of the non-matrix leaves (``None``: the default AdamW).",
}

_AUON_PAPER = ('Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates" '
               "(arXiv 2509.24320).")

_PRESETS = (
    Preset(
        name="trust_region",
        defaults=dict(warm_start=True),
        summary="Kovalev's non-Euclidean trust-region method under ``norm``, with a centre "
                "shrink.",
        body="""
            M_k = β M_{k−1} + (1−β) G_k (M_0 = G_0 with ``warm_start``), then

                X_{k+1} = argmin_{‖X − (1−ηλ)X_k‖ ≤ η} ⟨M_k, X⟩ = (1−ηλ) X_k − η·lmo(M_k)

            with η = ``learning_rate`` and λ = ``weight_decay`` (decoupled weight decay shrinks
            the trust-region centre; the iterates then stay in the ball ‖X‖ ≤ 1/λ). The norm's
            shape ``scale`` is applied after the lmo (``None`` by default: the pure method).
            `normalized_sgdm`, `signum`, `auon` and `hybrid_auon` are this method under one
            norm, with their own defaults. Default radius 0.025: the best of a learning-rate
            sweep of a small transformer (``benchmarks/sweep.py``).
            """,
        args=dict(norm="an `optorth.norms.Norm` (``Spectral(ns)`` with its ``NewtonSchulz``, "
                       "``Frobenius()``, ``Sign()``, ``Row()``, ``Column()``, ``AuON()``, "
                       "``HybridAuON()``) or its name."),
        example="""
            >>> import optorth
            >>> tx = optorth.trust_region(0.02, norm=optorth.norms.Spectral(scale="spectral"))
            """,
        references='Kovalev, "Understanding Gradient Orthogonalization for Deep Learning via '
                   'Non-Euclidean Trust-Region Optimization" (arXiv 2503.12645).'),
    Preset(
        name="normalized_sgdm",
        defaults=dict(learning_rate=0.03, beta=0.9, norm=Frobenius()),
        summary="Normalized SGD with momentum: p ← p − lr·M/‖M‖_F per matrix (Frobenius lmo).",
        body="""
            `trust_region` under `optorth.norms.Frobenius`. Each matrix step has Frobenius
            norm ``lr`` (RMS lr/sqrt(mn)), so the learning rate is not comparable with Muon's
            and grows with the matrix size. No published default; 0.03 is the best of a
            learning-rate sweep of a small transformer (``benchmarks/sweep.py``).
            """,
        args=dict(norm="an `optorth.norms.Frobenius` (its shape ``scale``; none by default)."),
        example="""
            >>> import optorth
            >>> tx = optorth.normalized_sgdm(learning_rate=0.1)
            """,
        references='Cutkosky & Mehta, "Momentum Improves Normalized SGD" (arXiv 2002.03305).'),
    Preset(
        name="signum",
        defaults=dict(learning_rate=2.5e-4, beta=0.9, norm=Sign()),
        summary="Signum: p ← p − lr·sign(m), m the EMA of gradients (lmo of the entrywise max "
                "norm).",
        body="""
            `trust_region` under `optorth.norms.Sign`. The update has RMS 1 per entry, like
            Adam's. No published default learning rate; 2.5e-4 is the best of a learning-rate
            sweep of a small transformer (``benchmarks/sweep.py``; a small CNN preferred 4e-3,
            so tune it per task).
            """,
        args=dict(norm="an `optorth.norms.Sign` (its shape ``scale``; none by default)."),
        example="""
            >>> import optorth
            >>> tx = optorth.signum(learning_rate=1e-3)
            """,
        references='Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex '
                   'Problems" (arXiv 1802.04434).'),
    Preset(
        name="auon",
        defaults=dict(learning_rate=0.03, nesterov=True, norm=AuON(scale="keller")),
        summary="AuON: Nesterov EMA momentum, then X = M/‖M‖_F divided by "
                "sqrt(mean(cosh²(γX))).",
        body="""
            `trust_region` under `optorth.norms.AuON`; linear time. Honest note: since
            ‖X‖_F = 1 the cosh factor r satisfies r − 1 ≤ sinh²(γ)/(2N) for N entries (≈2e-6
            at 512×512), so AuON is, to that accuracy, Frobenius-normalized momentum SGD
            (`normalized_sgdm` with Nesterov and Keller scaling); in its own tables it trails
            AdamW and Muon. β 0.95, γ 1 and Keller scaling are from its training script; its
            lr 0.24 was 8x too large in a learning-rate sweep of a small transformer
            (``benchmarks/sweep.py``), whose best, 0.03, is the default.
            """,
        args=dict(norm="an `optorth.norms.AuON` (its ``gamma``, ``eps`` and shape ``scale``); "
                       "`optorth.norms.HybridAuON` gives `hybrid_auon`."),
        example="""
            >>> import optorth
            >>> tx = optorth.auon(norm=optorth.norms.AuON(gamma=1.0, scale="keller"))
            """,
        references=_AUON_PAPER),
    Preset(
        name="hybrid_auon",
        defaults=dict(learning_rate=0.03, nesterov=True, norm=HybridAuON(scale="keller")),
        summary="Hybrid-AuON: one Newton–Schulz step (Jordan's coefficients) before AuON's "
                "scaling.",
        body="""
            `trust_region` under `optorth.norms.HybridAuON`. Follows the paper's description
            ("applies a single Newton–Schulz iteration"): the direction is AuON's scaling of
            one Frobenius-normalized Jordan step of the momentum. It is a feasible point of
            the Frobenius ball, not the lmo of a norm. Default lr 0.03: the best of a
            learning-rate sweep of a small transformer (``benchmarks/sweep.py``).
            """,
        args=dict(norm="an `optorth.norms.HybridAuON` (``gamma``, ``eps``, shape ``scale``)."),
        example="""
            >>> import optorth
            >>> tx = optorth.hybrid_auon(learning_rate=0.03)
            """,
        references=_AUON_PAPER),
)

#: The norm each preset requires (`trust_region` takes any).
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


def _build(name: str, *, learning_rate, beta, norm, nesterov, warm_start, adaptive,
           **assembly) -> optax.GradientTransformation:
    """momentum → dualize(norm) → the norm's scale, assembled as the ready optimizer ``name``."""
    norm = _check_norm(name, norm)
    check_decay(f"optorth.{name}", "beta", beta)
    momentum = scale_by_momentum(beta, nesterov=nesterov, warm_start=warm_start)
    blocks = [momentum, dualize(norm, adaptive=adaptive, specs=route_specs(assembly["rules"]))]
    return assemble(name, blocks, learning_rate=learning_rate, scale=norm.scale, **assembly)


(trust_region, normalized_sgdm, signum, auon, hybrid_auon) = (
    make_optimizer(preset, _signature, _ARGS, _build, __name__) for preset in _PRESETS)
