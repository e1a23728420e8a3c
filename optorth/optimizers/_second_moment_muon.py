"""Orthogonalized updates normalized by second moments: NorMuon, AdaMuon, factored Muon.

Each is :func:`optorth.muon`'s chain with one normalization inserted after the dualizer::

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

Arguments shared with :func:`optorth.muon` (momentum, Newton–Schulz, weight decay, scale,
``rules``, ``mu_dtype``, ``adam_*``, ``fallback``) mean the same here; see ``optorth.optimizers._alias``.
"""

from __future__ import annotations

from typing import Any

import optax

from optorth.blocks._factored import scale_by_factored_rms
from optorth.blocks._orthogonalize import orthogonalize
from optorth.blocks._second_moments import (
    keep_matrix_norm,
    scale_by_elementwise_rms,
    scale_by_neuron_rms,
    scale_to_rms,
)
from optorth.matrices._resolve import route_specs
from optorth.optimizers._adafactor import adafactor
from optorth.optimizers._alias import _assemble, _momentum


def _orthogonalize(schedule, steps, precondition, method, ns_dtype, eps, specs, learn):
    return orthogonalize(
        schedule,
        steps=steps,
        precondition=precondition,
        method=method,
        dtype=ns_dtype,
        eps=eps,
        specs=specs,
        learn=learn,
    )


def normuon(
    learning_rate: Any = 0.02,
    beta: float = 0.95,
    b2: float = 0.95,
    *,
    second_moment_eps: float = 1e-10,
    nesterov: bool = True,
    momentum_convention: str = "ema",
    bias_correction: bool = False,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    schedule: Any = "jordan",
    steps: int | None = None,
    precondition: str | None = None,
    method: str = "standard",
    ns_dtype: Any = None,
    eps: float = 1e-7,
    learn: Any = None,
    scale: str | None = "keller",
    rms_factor: float = 0.2,
    rules: Any = None,
    mu_dtype: Any = None,
    adam_learning_rate: Any = 3e-4,
    adam_b1: float = 0.9,
    adam_b2: float = 0.95,
    adam_eps: float = 1e-10,
    adam_eps_root: float = 0.0,
    adam_weight_decay: float = 0.0,
    adam_nesterov: bool = False,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    """NorMuon: Muon whose orthogonalized update is normalized per output neuron.

    Per matrix (m × n, n output neurons)::

        O = NS(Nesterov momentum);  v ← β2 v + (1 − β2) mean_fan-in(O²)      (n values)
        Ô = O / (√v + 1e-10);  Ô ← Ô · ‖O‖_F / (‖Ô‖_F + 1e-10)
        p ← p − lr·(sqrt(max(1, n/m))·Ô + wd·p)

    Defaults follow the reference code (lr 0.02, β 0.95, β2 0.95, Keller scaling; AdamW for
    embeddings, heads, biases and gains).

    State: per m × n matrix, m·n momentum values (``mu_dtype``) + n float32; the AdamW
    fallback keeps 2 values per element.

    Args:
      b2: β2 of the per-neuron EMA.
      second_moment_eps: ε added to √v.
      others: as in :func:`optorth.muon`.

    Example:
      >>> import jax.numpy as jnp, optorth
      >>> params = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> state = optorth.normuon(learning_rate=0.02).init(params)

    References:
      Li et al., "NorMuon: Making Muon more efficient and scalable" (arXiv 2510.05491).
    """
    specs = route_specs(rules)
    blocks = [
        _momentum(beta, nesterov, momentum_convention, bias_correction),
        _orthogonalize(schedule, steps, precondition, method, ns_dtype, eps, specs, learn),
        keep_matrix_norm(
            scale_by_neuron_rms(b2, second_moment_eps, specs=specs), eps=1e-10, specs=specs
        ),
    ]
    return _assemble(
        blocks,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask,
        scale=scale,
        rms_factor=rms_factor,
        rules=rules,
        mu_dtype=mu_dtype,
        fallback=fallback,
        adam=(
            adam_learning_rate,
            adam_b1,
            adam_b2,
            adam_eps,
            adam_eps_root,
            adam_weight_decay,
            adam_nesterov,
        ),
    )


def adamuon(
    learning_rate: Any = 6e-4,
    beta: float = 0.95,
    b2: float = 0.999,
    *,
    second_moment_eps: float = 1e-8,
    rms: float = 0.2,
    nesterov: bool = True,
    momentum_convention: str = "ema",
    bias_correction: bool = False,
    weight_decay: float = 0.1,
    weight_decay_mask: Any = None,
    schedule: Any = "jordan",
    steps: int | None = None,
    precondition: str | None = None,
    method: str = "standard",
    ns_dtype: Any = None,
    eps: float = 1e-7,
    learn: Any = None,
    rules: Any = None,
    mu_dtype: Any = None,
    adam_learning_rate: Any = 3e-4,
    adam_b1: float = 0.9,
    adam_b2: float = 0.95,
    adam_eps: float = 1e-10,
    adam_eps_root: float = 0.0,
    adam_weight_decay: float = 0.0,
    adam_nesterov: bool = False,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    """AdaMuon: Muon with Adam's element-wise second moment on the orthogonalized update.

    Per matrix (m × n)::

        O = NS(Nesterov momentum);  v ← β2 v + (1 − β2) O²;  v̂ = v / (1 − β2^t)
        Ô = O / (√v̂ + 1e-8);  Ô ← 0.2·sqrt(mn)·Ô / (‖Ô‖_F + 1e-8)        (RMS 0.2)
        p ← p − lr·(Ô + wd·p)

    The RMS alignment makes the learning rate and weight decay AdamW's: the defaults
    (lr 6e-4, wd 0.1) are those of the authors' GPT-2-small configuration; β 0.95, β2 0.999,
    ε 1e-8 those of their optimizer code. There is no separate shape scale (``rms`` sets it).

    State: per m × n matrix, m·n momentum values (``mu_dtype``) + m·n float32 + a count; the
    AdamW fallback keeps 2 values per element.

    Args:
      b2: β2 of the element-wise EMA.
      second_moment_eps: ε added to √v̂.
      rms: the RMS each matrix update is aligned to.
      others: as in :func:`optorth.muon`.

    Example:
      >>> import jax.numpy as jnp, optorth
      >>> params = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> state = optorth.adamuon(learning_rate=6e-4).init(params)

    References:
      Si, Zhang & Shen, "AdaMuon: Adaptive Muon Optimizer" (arXiv 2507.11005).
    """
    specs = route_specs(rules)
    blocks = [
        _momentum(beta, nesterov, momentum_convention, bias_correction),
        _orthogonalize(schedule, steps, precondition, method, ns_dtype, eps, specs, learn),
        scale_by_elementwise_rms(b2, second_moment_eps, specs=specs),
        scale_to_rms(rms, eps=1e-8, specs=specs),
    ]
    return _assemble(
        blocks,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask,
        scale=None,
        rms_factor=rms,
        rules=rules,
        mu_dtype=mu_dtype,
        fallback=fallback,
        adam=(
            adam_learning_rate,
            adam_b1,
            adam_b2,
            adam_eps,
            adam_eps_root,
            adam_weight_decay,
            adam_nesterov,
        ),
    )


def factored_muon(
    learning_rate: Any = 0.02,
    beta: float = 0.95,
    b2: float = 0.95,
    *,
    decay_rate: float = 0.8,
    epsilon1: float = 1e-30,
    nesterov: bool = True,
    momentum_convention: str = "ema",
    bias_correction: bool = False,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    schedule: Any = "jordan",
    steps: int | None = None,
    precondition: str | None = None,
    method: str = "standard",
    ns_dtype: Any = None,
    eps: float = 1e-7,
    learn: Any = None,
    scale: str | None = "keller",
    rms_factor: float = 0.2,
    rules: Any = None,
    mu_dtype: Any = None,
    adafactor_learning_rate: Any = None,
    adafactor_weight_decay: float | None = None,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    """Muon whose orthogonalized update is normalized by Adafactor's factored statistics.

    Per matrix (m × n), with β̂2_t = min(b2, 1 − t^(−decay_rate))::

        O = NS(Nesterov momentum)
        R ← β̂2 R + (1 − β̂2) rowmean(O² + ε1)    (m values)
        C ← β̂2 C + (1 − β̂2) colmean(O² + ε1)    (n values)
        Ô = O / sqrt(R Cᵀ / mean(R));  Ô ← Ô · ‖O‖_F / (‖Ô‖_F + 1e-10)
        p ← p − lr·(sqrt(max(1, n/m))·Ô + wd·p)

    Drop-in for :func:`optorth.muon` and :func:`normuon` (same lr and scale conventions);
    with only the column factor C it would be NorMuon. Not a published method.

    Fallback: by default ``optorth.adafactor`` (the paper's relative step, or
    ``adafactor_learning_rate``; weight decay ``adafactor_weight_decay`` with
    ``weight_decay_mask``) for embeddings, output heads, biases and gains, so that no leaf
    keeps a full-size second moment. An AdamW fallback would add 2 values per embedding
    entry (≈ 0.64 of GPT-2 small's parameters) and miss the memory target.

    State: per m × n matrix, m·n momentum values (``mu_dtype``) + (m + n) float32; fallback
    matrices m + n float32, fallback vectors one float32 per element. On GPT-2 small about
    0.69 × the parameter bytes with float32 momentum, 0.35 with ``mu_dtype="bfloat16"``
    (``benchmarks/memory.py``).

    Args:
      b2: cap on β̂2_t (NorMuon's β2).
      decay_rate: c of Adafactor's β̂2_t = 1 − t^(−c).
      epsilon1: ε1 added to O².
      adafactor_learning_rate: ρ of the Adafactor fallback (``None``: min(1e-2, 1/√t),
        relative to each parameter's RMS).
      adafactor_weight_decay: λ of the Adafactor fallback (``None``: none).
      fallback: any ``optax.GradientTransformation`` instead of Adafactor.
      others: as in :func:`optorth.muon`.

    Example:
      >>> import jax.numpy as jnp, optorth
      >>> params = {"embed": jnp.ones((10, 4)), "w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> tx = optorth.factored_muon(learning_rate=0.02, mu_dtype="bfloat16")
      >>> state = tx.init(params)

    References:
      Shazeer & Stern, "Adafactor" (arXiv 1804.04235); Li et al., "NorMuon"
      (arXiv 2510.05491); Jordan et al., "Muon" (2024).
    """
    specs = route_specs(rules)
    factored = scale_by_factored_rms(
        decay_rate=decay_rate, epsilon1=epsilon1, max_decay=b2, specs=specs
    )
    blocks = [
        _momentum(beta, nesterov, momentum_convention, bias_correction),
        _orthogonalize(schedule, steps, precondition, method, ns_dtype, eps, specs, learn),
        keep_matrix_norm(factored, eps=1e-10, specs=specs),
    ]
    if fallback is None:
        fallback = adafactor(
            adafactor_learning_rate,
            weight_decay=adafactor_weight_decay,
            weight_decay_mask=weight_decay_mask,
        )
    return _assemble(
        blocks,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask,
        scale=scale,
        rms_factor=rms_factor,
        rules=rules,
        mu_dtype=mu_dtype,
        fallback=fallback,
        adam=(),
    )
