"""Orthogonalized updates normalized by second moments: NorMuon, AdaMuon, factored Muon.

Each is `optorth.muon`'s chain with one normalization inserted after the dualizer:

    momentum → orthogonalize (per matrix) → second-moment normalization → [scale_by_shape]
             → add_decayed_weights → scale_by_learning_rate          (matrix leaves)
    fallback optimizer                                               (every other leaf)

| optimizer       | normalization of O (m × n, m fan-in)                  | extra state / matrix |
|-----------------|-------------------------------------------------------|----------------------|
| normuon         | per output neuron: O / √v_col, back to ‖O‖_F            | n                    |
| adamuon         | element-wise: O / √v̂, then RMS 0.2                     | m·n                  |
| factored_muon   | Adafactor rows × columns: O / √(R Cᵀ/mean R), ‖O‖_F     | m + n                |

(plus the momentum buffer, m·n in ``mu_dtype``, common to all). Statistics are float32.

``factored_muon`` is new: NorMuon's per-neuron statistic is the column factor C of
Adafactor's factored estimate; adding the row factor R normalizes fan-in rows too, still
with O(m + n) memory. No published method uses it; treat it as an experiment.

Arguments shared with `optorth.muon` (``beta``, ``nesterov``, ``ns``, weight decay,
``scale``, ``rules``, ``mu_dtype``, ``fallback``) mean the same here.
"""

from __future__ import annotations

from optorth._checks import check_decay, check_positive
from optorth.blocks._factored import scale_by_factored_rms
from optorth.blocks._momentum import scale_by_momentum
from optorth.blocks._orthogonalize import orthogonalize
from optorth.blocks._second_moments import (
    keep_matrix_norm,
    scale_by_elementwise_rms,
    scale_by_neuron_rms,
    scale_to_rms,
)
from optorth.matrices._resolve import RoutingOnce
from optorth.optimizers._adafactor import adafactor
from optorth.optimizers._assemble import assemble
from optorth.optimizers._fallback_lr import fallback_learning_rate
from optorth.optimizers._preset import Preset, make_optimizer


def _check(name, *, beta, beta2, eps, rms=1.0):
    """Refuses, where they enter, the values that can only give NaN or frozen updates."""
    who = f"optorth.{name}"
    check_decay(who, "beta", beta)
    check_decay(who, "beta2", beta2)
    check_positive(who, "eps", eps)
    check_positive(who, "rms", rms)


def _normuon(name, *, learning_rate, beta, beta2, eps, nesterov, ns, rules, **assembly):
    """momentum → orthogonalize → per-neuron RMS at the same Frobenius norm → shape scale."""
    _check(name, beta=beta, beta2=beta2, eps=eps)
    specs = RoutingOnce(rules)
    normalize = scale_by_neuron_rms(beta2, eps, specs=specs)
    blocks = [scale_by_momentum(beta, nesterov=nesterov), orthogonalize(ns, specs=specs),
              keep_matrix_norm(normalize, eps=1e-10, specs=specs)]
    return assemble(name, blocks, learning_rate=learning_rate, routing=specs, **assembly)


def _adamuon(name, *, learning_rate, beta, beta2, eps, rms, nesterov, ns, rules, **assembly):
    """momentum → orthogonalize → element-wise RMS → RMS ``rms`` (no shape scale)."""
    _check(name, beta=beta, beta2=beta2, eps=eps, rms=rms)
    specs = RoutingOnce(rules)
    blocks = [scale_by_momentum(beta, nesterov=nesterov), orthogonalize(ns, specs=specs),
              scale_by_elementwise_rms(beta2, eps, specs=specs),
              scale_to_rms(rms, eps=1e-8, specs=specs)]
    return assemble(name, blocks, learning_rate=learning_rate, routing=specs, **assembly)


def _factored_muon(name, *, learning_rate, beta, beta2, eps, nesterov, ns, rules, fallback,
                   **assembly):
    """momentum → orthogonalize → factored RMS at the same Frobenius norm → shape scale."""
    _check(name, beta=beta, beta2=beta2, eps=eps)
    specs = RoutingOnce(rules)
    factored = scale_by_factored_rms(decay_rate=0.8, eps=eps, beta2=beta2, specs=specs)
    blocks = [scale_by_momentum(beta, nesterov=nesterov), orthogonalize(ns, specs=specs),
              keep_matrix_norm(factored, eps=1e-10, specs=specs)]
    fallback = fallback or adafactor(
        fallback_learning_rate(f"optorth.{name}", learning_rate, 3e-3),
        multiply_by_parameter_scale=False, rules=rules)
    return assemble(name, blocks, learning_rate=learning_rate, routing=specs, fallback=fallback,
                    **assembly)


NORMUON = Preset("normuon", _normuon, ("beta2", "eps", "nesterov", "ns", "scale"), {}, doc="""
    NorMuon: Muon whose orthogonalized update is normalized per output neuron.

    Per matrix (m × n, n output neurons):

        O = NS(Nesterov momentum);  v ← β2 v + (1 − β2) mean_fan-in(O²)      (n values)
        Ô = O / (√v + 1e-10);  Ô ← Ô · ‖O‖_F / (‖Ô‖_F + 1e-10)
        p ← p − lr·(sqrt(max(1, n/m))·Ô + wd·p)

    Defaults follow the reference code (lr 0.02, β 0.95, β2 0.95, ε 1e-10, Keller scaling; AdamW for
    embeddings, heads, biases and gains).

    State: per m × n matrix, m·n momentum values (``mu_dtype``) + n float32; the AdamW
    fallback keeps 2 values per element.

    Args:

    Example:
      >>> import jax.numpy as jnp, optorth
      >>> params = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> state = optorth.normuon(learning_rate=0.02).init(params)

    References:
      Li et al., "NorMuon: Making Muon more efficient and scalable" (arXiv 2510.05491).
    """, args=dict(
    beta2="decay of the per-neuron EMA of O², in [0, 1).",
    eps="ε added to √v (> 0)."))

ADAMUON = Preset("adamuon", _adamuon, ("beta2", "eps", "rms", "nesterov", "ns"), dict(
    learning_rate=0.01, beta2=0.999, eps=1e-8, weight_decay=0.1), doc="""
    AdaMuon: Muon with Adam's element-wise second moment on the orthogonalized update.

    Per matrix (m × n):

        O = NS(Nesterov momentum);  v ← β2 v + (1 − β2) O²;  v̂ = v / (1 − β2^t)
        Ô = O / (√v̂ + 1e-8);  Ô ← 0.2·sqrt(mn)·Ô / (‖Ô‖_F + 1e-8)        (RMS 0.2)
        p ← p − lr·(Ô + wd·p)

    The RMS alignment makes the learning rate and weight decay AdamW's: wd 0.1 is the
    authors' GPT-2-small configuration (lr 6e-4 there); β 0.95, β2 0.999, ε 1e-8 those of
    their optimizer code. Default lr 0.01: the best of a learning-rate sweep of a small
    transformer (``benchmarks/sweep.py``). There is no separate shape scale (``rms`` sets it).

    State: per m × n matrix, m·n momentum values (``mu_dtype``) + m·n float32 + a count; the
    AdamW fallback keeps 2 values per element.

    Args:

    Example:
      >>> import jax.numpy as jnp, optorth
      >>> params = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> tx = optorth.adamuon(learning_rate=0.01, rms=0.2)  # AdamW's update RMS
      >>> updates, state = tx.update(params, tx.init(params), params)

    References:
      Si, Zhang & Shen, "AdaMuon: Adaptive Muon Optimizer" (arXiv 2507.11005).
    """, args=dict(
    beta2="decay of the element-wise EMA of O², in [0, 1).",
    eps="ε added to √v̂ (> 0)."))

FACTORED_MUON = Preset("factored_muon", _factored_muon, (
    "beta2", "eps", "nesterov", "ns", "scale"), dict(eps=1e-30), doc="""
    Muon whose orthogonalized update is normalized by Adafactor's factored statistics.

    Per matrix (m × n), with β̂2_t = min(β2, 1 − t^(−0.8)):

        O = NS(Nesterov momentum)
        R ← β̂2 R + (1 − β̂2) rowmean(O² + ε1)    (m values)
        C ← β̂2 C + (1 − β̂2) colmean(O² + ε1)    (n values)
        Ô = O / sqrt(R Cᵀ / mean(R));  Ô ← Ô · ‖O‖_F / (‖Ô‖_F + 1e-10)
        p ← p − lr·(sqrt(max(1, n/m))·Ô + wd·p)

    Drop-in for `optorth.muon` and `normuon` (same lr and scale conventions);
    with only the column factor C it would be NorMuon. Not a published method.

    Fallback: by default ``optorth.adafactor(3e-3, multiply_by_parameter_scale=False)``
    (absolute steps, no momentum) for embeddings, output heads, biases and gains, so that no
    leaf keeps a full-size second moment. On a small transformer
    (``benchmarks/fallback_sweep.py``: 300 steps, 2 seeds) it ended at 1.818 nats/char,
    against 1.840 with AdamW 3e-3 and 1.872 with ``adafactor(0.03)`` (steps relative to each
    leaf's RMS). Pass any optax transformation as ``fallback=`` to change it; an AdamW
    fallback adds 2 values per embedding entry (≈ 0.64 of GPT-2 small's parameters).

    State: per m × n matrix, m·n momentum values (``mu_dtype``) + (m + n) float32; fallback
    matrices m + n float32, fallback vectors one float32 per element. On GPT-2 small about
    0.69 × the parameter bytes with float32 momentum, 0.35 with ``mu_dtype="bfloat16"``
    (``benchmarks/memory.py``).

    Args:

    Example:
      >>> import jax.numpy as jnp, optorth
      >>> params = {"embed": jnp.ones((10, 4)), "w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> tx = optorth.factored_muon(learning_rate=0.02, mu_dtype="bfloat16")
      >>> state = tx.init(params)

    References:
      Shazeer & Stern, "Adafactor" (arXiv 1804.04235); Li et al., "NorMuon"
      (arXiv 2510.05491); Jordan et al., "Muon" (2024).
    """, args=dict(
    beta2="cap on Adafactor's β̂2_t = 1 − t^(−0.8) (NorMuon's β2), in [0, 1).",
    eps="ε1 added to O² (> 0).",
    fallback="optimizer of the non-matrix leaves (``None``: ``optorth.adafactor(3e-3, "
             "multiply_by_parameter_scale=False)``)."))

normuon = make_optimizer(NORMUON, __name__)
adamuon = make_optimizer(ADAMUON, __name__)
factored_muon = make_optimizer(FACTORED_MUON, __name__)
