"""The Muon family: momentum orthogonalized by Newton–Schulz (Muon, Turbo-Muon, ROOT).

Matrix leaves take ``momentum → [soft threshold] → orthogonalize → scale_by_shape →
weight decay → learning rate``; every other leaf takes the fallback
(`optorth.optimizers.default_fallback`). See `optorth.optimizers._assemble`.
"""

from __future__ import annotations

from typing import Any

import optax

from optorth._checks import check_decay
from optorth.blocks._momentum import scale_by_momentum
from optorth.blocks._orthogonalize import orthogonalize
from optorth.blocks._qk_clip import QKClip
from optorth.blocks._soft_threshold import soft_threshold
from optorth.blocks._weight_decay import WeightDecay
from optorth.matrices._resolve import route_specs
from optorth.norms._shape_scale import ShapeScale
from optorth.ns._config import NewtonSchulz
from optorth.optimizers._assemble import assemble
from optorth.optimizers._preset import Preset, make_optimizer


def _signature(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    beta: float = 0.95,
    *,
    nesterov: bool = True,
    bias_correction: bool = False,
    weight_decay: float | WeightDecay = 0.0,
    weight_decay_mask: Any = None,
    ns: NewtonSchulz | str = NewtonSchulz(),
    scale: ShapeScale | str | None = "keller",
    rules: Any = None,
    mu_dtype: Any = None,
    fallback: optax.GradientTransformation | None = None,
    qk_clip: QKClip | None = None,
) -> optax.GradientTransformation:
    """The signature of `muon` and `turbo_muon` (never called)."""
    raise NotImplementedError


_ARGS = {
    "learning_rate": "step size of the matrix path (a float or an optax schedule).",
    "beta": "momentum coefficient, in [0, 1).",
    "nesterov": "apply the momentum with the Nesterov look-ahead.",
    "bias_correction": "debias the momentum as optax/NAdam do.",
    "weight_decay": "decoupled weight decay on the matrix path, p ← p − lr·wd·p; an "
                    "`optorth.WeightDecay` picks cautious or learning-rate-independent decay.",
    "weight_decay_mask": "where weight decay applies (a bool pytree or a callable).",
    "ns": "the `optorth.NewtonSchulz` configuration (schedule, steps, dtype, learning).",
    "scale": "update-scale convention (`optorth.norms.ShapeScale` or its name).",
    "rules": "routing rules ``(regex, MatrixSpec | \"fallback\")`` (`optorth.route`).",
    "mu_dtype": "dtype of the optimizer state and arithmetic (``None``: the parameters').",
    "fallback": "optimizer of the non-matrix leaves (``None``: the default AdamW).",
    "qk_clip": "an `optorth.QKClip` to rescale attention heads whose maximum logit exceeds its "
               "threshold after each step (MuonClip); ``update`` then takes ``max_logits=`` "
               "(`optorth.nn.capture_max_logits`).",
}

_PRESETS = (
    Preset(
        name="muon",
        defaults={},
        summary="Muon: momentum orthogonalized by Newton–Schulz for hidden matrices, AdamW for "
                "the rest.",
        body="""
            Matrix path (Muon reference, KellerJordan/Muon)::

                m ← β m + (1−β) g;  u = (1−β) g + β m;  O = NS(u) per matrix
                p ← p − lr·(sqrt(max(1, fan_out/fan_in))·O + wd·p)

            Defaults follow the reference (lr 0.02, β 0.95, Nesterov, Jordan's 5-step table,
            Keller scaling) with the fast iteration (``method="auto"``: the Gram form for
            aspect ratios ≥ 2, the same map of singular values). To reproduce
            ``optax.contrib.muon``: ``bias_correction=True, ns=optorth.NewtonSchulz(eps=1e-8),
            fallback=optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, nesterov=True)`` and routing
            rules that send the same leaves to the matrix path.
            """,
        args={},
        example="""
            >>> import optorth, jax.numpy as jnp
            >>> params = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
            >>> tx = optorth.muon(learning_rate=0.02, weight_decay=0.01)
            >>> updates, state = tx.update(params, tx.init(params), params)
            """,
        references="""
            Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024).
            Liu et al., "Muon is Scalable for LLM Training" (arXiv 2502.16982).
            """),
    Preset(
        name="turbo_muon",
        defaults=dict(ns=NewtonSchulz("turbo")),
        summary="Turbo-Muon: `muon` with AOL preconditioning and one step fewer.",
        body="""
            The ``"turbo"`` schedule: AOL row scaling s_i = (Σ_j |(XXᵀ)_ij|)^{-1/2} reusing XXᵀ
            in the first step, then the last 4 rows of You's 5-step table. Reported: k AOL
            steps ≈ k+1 plain steps in final loss.
            """,
        args=dict(ns="the `optorth.NewtonSchulz` configuration (default: the ``\"turbo\"`` "
                     "table)."),
        example="""
            >>> import optorth
            >>> tx = optorth.turbo_muon(learning_rate=0.02)
            """,
        references='Boissin et al., "Turbo-Muon: Accelerating Orthogonality-Based '
                   'Optimization with Pre-Conditioning" (arXiv 2512.04632).'),
)


def _build(name: str, *, learning_rate, beta, nesterov, bias_correction, ns, rules, qk_clip,
           **assembly) -> optax.GradientTransformation:
    """momentum → orthogonalize(ns) → shape scale, assembled as the ready optimizer ``name``."""
    check_decay(f"optorth.{name}", "beta", beta)
    momentum = scale_by_momentum(beta, nesterov=nesterov, bias_correction=bias_correction)
    blocks = [momentum, orthogonalize(ns, specs=route_specs(rules))]
    return assemble(name, blocks, learning_rate=learning_rate, rules=rules, clip=qk_clip,
                    **assembly)


muon, turbo_muon = (make_optimizer(preset, _signature, _ARGS, _build, __name__)
                    for preset in _PRESETS)


def root(
    learning_rate: optax.ScalarOrSchedule = 0.016,
    beta: float = 0.95,
    *,
    nesterov: bool = True,
    quantile: float = 0.9,
    weight_decay: float | WeightDecay = 0.1,
    weight_decay_mask: Any = None,
    ns: NewtonSchulz | str = NewtonSchulz("root"),
    scale: ShapeScale | str | None = "consistent_rms",
    rules: Any = None,
    mu_dtype: Any = None,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    """ROOT: SGD-style Nesterov momentum, outliers dropped, per-shape Newton–Schulz.

    Matrix path: u = g + β m (m ← β m + g); B = clip(u, −ε, ε) with ε the ``quantile`` of
    |u| per matrix (`optorth.soft_threshold`); O = NS(B) with ROOT's per-shape table
    (Jordan's for shapes it does not list); Moonlight scaling 0.2·sqrt(max(m, n)).
    ROOT's published table for 2048×2048 matrices escapes past its repelling fixed point;
    ``init`` refuses it with a ``ValueError`` (pass ``ns=optorth.NewtonSchulz("jordan")``).
    Default lr 0.016: the best of a learning-rate sweep of a small transformer
    (``benchmarks/sweep.py``), 16x the paper's 1e-3 for billion-parameter pretraining.

    Args:
      learning_rate: step size of the matrix path (a float or an optax schedule).
      beta: momentum coefficient, in [0, 1).
      nesterov: apply the momentum with the Nesterov look-ahead.
      quantile: the quantile of |u| per matrix above which entries are clipped, in [0, 1].
      weight_decay: decoupled weight decay on the matrix path (or an `optorth.WeightDecay`).
      weight_decay_mask: where weight decay applies (a bool pytree or a callable).
      ns: the `optorth.NewtonSchulz` configuration (default: ROOT's per-shape tables).
      scale: update-scale convention (`optorth.norms.ShapeScale` or its name).
      rules: routing rules (`optorth.route`).
      mu_dtype: dtype of the optimizer state and arithmetic.
      fallback: optimizer of the non-matrix leaves (``None``: the default AdamW).

    Example:
      >>> import optorth
      >>> tx = optorth.root(learning_rate=1e-3)

    References:
      "ROOT: Robust Orthogonalized Optimizer for Neural Network Training" (arXiv 2511.20626).
    """
    check_decay("optorth.root", "beta", beta)
    specs = route_specs(rules)
    blocks = [scale_by_momentum(beta, nesterov=nesterov, convention="sgd"),
              soft_threshold(quantile, specs=specs), orthogonalize(ns, specs=specs)]
    return assemble("root", blocks, learning_rate=learning_rate, weight_decay=weight_decay,
                    weight_decay_mask=weight_decay_mask, scale=scale, rules=rules,
                    mu_dtype=mu_dtype, fallback=fallback)
