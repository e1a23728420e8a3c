"""The Muon family: momentum orthogonalized by Newton–Schulz (Muon, Turbo-Muon, ROOT).

Matrix leaves take ``momentum → [soft threshold] → orthogonalize → scale_by_shape →
weight decay → learning rate``; every other leaf takes the fallback
(`optorth.optimizers.default_fallback`). See `optorth.optimizers._assemble`.
"""

from __future__ import annotations

import optax

from optorth._checks import check_decay
from optorth.blocks._momentum import scale_by_momentum
from optorth.blocks._orthogonalize import orthogonalize
from optorth.blocks._soft_threshold import soft_threshold
from optorth.matrices._resolve import RoutingOnce
from optorth.ns._config import NewtonSchulz
from optorth.optimizers._assemble import assemble
from optorth.optimizers._preset import Preset, make_optimizer


def _build_muon(name: str, *, learning_rate, beta, nesterov, bias_correction, ns, rules,
                qk_clip, **assembly) -> optax.GradientTransformation:
    """momentum → orthogonalize(ns) → shape scale, assembled as the ready optimizer ``name``."""
    check_decay(f"optorth.{name}", "beta", beta)
    momentum = scale_by_momentum(beta, nesterov=nesterov, bias_correction=bias_correction)
    routing = RoutingOnce(rules)
    blocks = [momentum, orthogonalize(ns, specs=routing)]
    return assemble(name, blocks, learning_rate=learning_rate, routing=routing, clip=qk_clip,
                    **assembly)


def _build_root(name: str, *, learning_rate, beta, nesterov, quantile, ns, rules,
                **assembly) -> optax.GradientTransformation:
    """SGD-style momentum → soft threshold → orthogonalize(ns) → shape scale."""
    check_decay(f"optorth.{name}", "beta", beta)
    routing = RoutingOnce(rules)
    blocks = [scale_by_momentum(beta, nesterov=nesterov, convention="sgd"),
              soft_threshold(quantile, specs=routing), orthogonalize(ns, specs=routing)]
    return assemble(name, blocks, learning_rate=learning_rate, routing=routing, **assembly)


_MUON_TAKES = ("nesterov", "bias_correction", "ns", "scale", "qk_clip")

MUON = Preset("muon", _build_muon, _MUON_TAKES, {}, doc="""
    Muon: momentum orthogonalized by Newton–Schulz for hidden matrices, AdamW for the rest.

    Matrix path (Muon reference, KellerJordan/Muon):

        m ← β m + (1−β) g;  u = (1−β) g + β m;  O = NS(u) per matrix
        p ← p − lr·(sqrt(max(1, fan_out/fan_in))·O + wd·p)

    Defaults follow the reference (lr 0.02, β 0.95, Nesterov, Jordan's 5-step table, Keller
    scaling) with the fast iteration (``method="auto"``: the Gram form for aspect ratios ≥ 2,
    the same map of singular values). To reproduce ``optax.contrib.muon``:
    ``bias_correction=True, ns=optorth.NewtonSchulz(eps=1e-8),
    fallback=optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, nesterov=True)`` and routing rules
    that send the same leaves to the matrix path.

    Args:

    Example:
      >>> import optorth, jax.numpy as jnp
      >>> params = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> tx = optorth.muon(learning_rate=0.02, weight_decay=0.01)
      >>> updates, state = tx.update(params, tx.init(params), params)

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024).
      Liu et al., "Muon is Scalable for LLM Training" (arXiv 2502.16982).
    """)

TURBO_MUON = Preset("turbo_muon", _build_muon, _MUON_TAKES, dict(
    ns=NewtonSchulz("turbo")), doc="""
    Turbo-Muon: `muon` with AOL preconditioning and one step fewer.

    The ``"turbo"`` schedule: AOL row scaling s_i = (Σ_j |(XXᵀ)_ij|)^{-1/2} reusing XXᵀ in
    the first step, then the last 4 rows of You's 5-step table. Reported: k AOL steps ≈ k+1
    plain steps in final loss.

    Args:

    Example:
      >>> import optorth
      >>> tx = optorth.turbo_muon(learning_rate=0.02)

    References:
      Boissin et al., "Turbo-Muon: Accelerating Orthogonality-Based Optimization with
      Pre-Conditioning" (arXiv 2512.04632).
    """, args=dict(ns="the `optorth.NewtonSchulz` configuration (default: the ``\"turbo\"`` "
                      "table)."))

ROOT = Preset("root", _build_root, ("nesterov", "quantile", "ns", "scale"), dict(
    learning_rate=0.016, weight_decay=0.1, ns=NewtonSchulz("root"),
    scale="consistent_rms"), doc="""
    ROOT: SGD-style Nesterov momentum, outliers dropped, per-shape Newton–Schulz.

    Matrix path: u = g + β m (m ← β m + g); B = clip(u, −ε, ε) with ε the ``quantile`` of
    |u| per matrix (`optorth.soft_threshold`); O = NS(B) with ROOT's per-shape table
    (Jordan's for shapes it does not list); Moonlight scaling 0.2·sqrt(max(m, n)).
    ROOT's published table for 2048×2048 matrices escapes past its repelling fixed point;
    ``init`` refuses it with a ``ValueError`` (pass ``ns=optorth.NewtonSchulz("jordan")``).
    Default lr 0.016: the best of a learning-rate sweep of a small transformer
    (``benchmarks/sweep.py``), 16x the paper's 1e-3 for billion-parameter pretraining.

    Args:

    Example:
      >>> import optorth
      >>> tx = optorth.root(learning_rate=0.016)

    References:
      "ROOT: Robust Orthogonalized Optimizer for Neural Network Training" (arXiv 2511.20626).
    """, args=dict(ns="the `optorth.NewtonSchulz` configuration (default: ROOT's per-shape "
                      "tables)."))

muon = make_optimizer(MUON, __name__)
turbo_muon = make_optimizer(TURBO_MUON, __name__)
root = make_optimizer(ROOT, __name__)
