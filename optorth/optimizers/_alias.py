"""Ready optimizers: each a short chain of optorth/optax blocks plus ``optax.partition``.

Every optimizer here routes each leaf with :func:`optorth.route` (``rules`` override the
defaults; print :func:`optorth.describe_routing` to see the decisions). Matrix leaves take

    momentum → [soft threshold] → dualize (per matrix) → [scale_by_shape]
             → add_decayed_weights(weight_decay) → scale_by_learning_rate

and every other leaf (embeddings, output heads, biases, norm gains) takes ``fallback``: by
default a true AdamW (``optax.adamw`` without Nesterov, with its own learning rate, betas,
eps and weight decay; set ``adam_nesterov=True`` for optax.contrib.muon's NAdamW).

Common arguments:
  learning_rate: float or schedule for the matrix path (η, the trust-region radius).
  beta: momentum coefficient. nesterov / momentum_convention / bias_correction: see
    :func:`optorth.scale_by_momentum`.
  weight_decay, weight_decay_mask: decoupled weight decay p ← p − lr·wd·p on the matrix path
    (Kovalev's centre shrink); the mask (a bool pytree or callable) applies on both paths.
  scale, rms_factor: update-scale convention (``"keller"``, ``"consistent_rms"``,
    ``"spectral"`` or ``None``), see :func:`optorth.scale_by_shape`.
  rules: routing rules, see :func:`optorth.route`.
  mu_dtype: dtype in which the optimizer state is kept and the update computed (e.g.
    ``"float32"`` for bf16 parameters; every moment, AdamW's included, stays in it). ``None``:
    the parameters' dtype. Updates always come back in the gradients' dtype.
  adam_*: the fallback AdamW's learning rate, b1, b2, eps, eps_root, weight decay, Nesterov.
  fallback: any ``optax.GradientTransformation`` to use instead of AdamW.

Under ``optax.inject_hyperparams`` every float argument is injectable (learning rates,
weight decays, betas, eps); structure stays static (strings, rules, ``MatrixSpec``,
``optorth.Schedule``). Pass dtypes as strings (``mu_dtype="float32"``), and list callable
weight-decay masks in ``static_args`` (inject_hyperparams takes every callable for a
schedule — the trap of optax.contrib.muon's callable dimension numbers, REFERENCE §6.4).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optorth.blocks._dualize import dualize
from optorth.blocks._momentum import scale_by_momentum
from optorth.blocks._orthogonalize import orthogonalize
from optorth.blocks._shape_scale import scale_by_shape
from optorth.blocks._soft_threshold import soft_threshold
from optorth.matrices._paths import dtype_of, flatten_with_paths, shape_of
from optorth.matrices._resolve import route_specs
from optorth.matrices._routing import route
from optorth.matrices._specs import MatrixSpec

MATRIX, FALLBACK = "matrix", "fallback"


def _cast_floats(tree, dtype):
    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, tree)


def check_updates_match_params(updates, params) -> None:
    """Raises ``ValueError`` naming the first leaf where ``updates`` and ``params`` disagree.

    Checked at trace time (paths and shapes), so a gradient tree of another model or a
    transposed gradient fails with its path instead of a broadcasting error deep inside.
    """
    u_items, _ = flatten_with_paths(updates)
    p_items, _ = flatten_with_paths(params)
    u_paths, p_paths = [p for p, _ in u_items], [p for p, _ in p_items]
    if u_paths != p_paths:
        extra = sorted(set(u_paths) - set(p_paths))[:5]
        missing = sorted(set(p_paths) - set(u_paths))[:5]
        raise ValueError(
            f"The updates and the params have different trees: leaves only in the updates "
            f"{extra}, only in the params {missing}. Pass gradients of the parameter tree the "
            f"optimizer was initialized with (same keys, same order).")
    for (path, u), (_, p) in zip(u_items, p_items, strict=True):
        if shape_of(u) != shape_of(p):
            raise ValueError(
                f"The update of leaf {path!r} has shape {shape_of(u)} but the parameter has "
                f"shape {shape_of(p)}. Pass gradients with the parameters' shapes (a transposed "
                f"or reshaped gradient is not accepted).")


def with_compute_dtype(inner: optax.GradientTransformation,
                       dtype: Any = None) -> optax.GradientTransformation:
    """Runs ``inner`` in ``dtype`` (state included) and returns updates in the input dtypes.

    With ``dtype=None`` only the output cast applies, so bf16 gradients give bf16 updates.
    State leaves keep the dtypes ``init`` gave them (e.g. optax's AdamW moments would otherwise
    turn float32 under ``inject_hyperparams(hyperparam_dtype=jnp.float32)`` with bf16 params).
    """
    dtype = None if dtype is None else jnp.dtype(dtype)

    def init_fn(params):
        return inner.init(params if dtype is None else _cast_floats(params, dtype))

    def update_fn(updates, state, params=None):
        if params is not None:
            check_updates_match_params(updates, params)
        if dtype is not None:
            inner_updates = _cast_floats(updates, dtype)
            params = None if params is None else _cast_floats(params, dtype)
        else:
            inner_updates = updates
        out, new_state = inner.update(inner_updates, state, params)
        new_state = jax.tree.map(lambda n, o: n.astype(o.dtype) if hasattr(o, "dtype") else n,
                                 new_state, state)
        return jax.tree.map(lambda o, u: o.astype(u.dtype), out, updates), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def _labels(rules):
    def labels(tree):
        targets = route(tree, rules)
        return jax.tree.map(lambda t: MATRIX if isinstance(t, MatrixSpec) else FALLBACK, targets)

    return labels


def _reject_float16(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner`` whose ``init`` refuses float16 leaves (AdamW's moments and eps in float16)."""

    def init_fn(params):
        for path, leaf in flatten_with_paths(params)[0]:
            if dtype_of(leaf) == jnp.float16:
                raise ValueError(
                    f"Leaf {path!r} of shape {shape_of(leaf)} is float16 and takes the AdamW "
                    f"fallback, whose state and arithmetic would be float16: eps=1e-10 "
                    f"underflows to 0 (NaN updates for gradients below ~1e-4) and g² overflows "
                    f"beyond |g| ≈ 256. Pass mu_dtype='float32' (state in float32, updates in "
                    f"float16), or your own fallback=.")
        return inner.init(params)

    return optax.GradientTransformation(init_fn, inner.update)


def _adamw(adam_learning_rate, adam_b1, adam_b2, adam_eps, adam_eps_root, adam_weight_decay,
           adam_nesterov, weight_decay_mask):
    return _reject_float16(optax.adamw(
        learning_rate=adam_learning_rate, b1=adam_b1, b2=adam_b2, eps=adam_eps,
        eps_root=adam_eps_root, weight_decay=adam_weight_decay, mask=weight_decay_mask,
        nesterov=adam_nesterov))


def _assemble(direction_blocks, *, learning_rate, weight_decay, weight_decay_mask, scale,
              rms_factor, rules, mu_dtype, fallback, adam):
    """momentum/direction blocks → scale → weight decay → lr, partitioned with the fallback."""
    blocks = list(direction_blocks)
    if scale is not None:
        blocks.append(scale_by_shape(scale, rms_factor=rms_factor, specs=route_specs(rules)))
    matrix = optax.chain(*blocks, optax.add_decayed_weights(weight_decay, weight_decay_mask),
                         optax.scale_by_learning_rate(learning_rate))
    fallback = _adamw(*adam, weight_decay_mask) if fallback is None else fallback
    partition = optax.partition({MATRIX: matrix, FALLBACK: fallback}, _labels(rules))
    return with_compute_dtype(partition, mu_dtype)


def _momentum(beta, nesterov, momentum_convention, bias_correction, warm_start=False):
    return scale_by_momentum(beta, nesterov=nesterov, convention=momentum_convention,
                             bias_correction=bias_correction, warm_start=warm_start)


def muon(
    learning_rate: Any = 0.02,
    beta: float = 0.95,
    *,
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
    adaptive: bool = False,
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
    """Muon: momentum orthogonalized by Newton–Schulz, AdamW for the rest.

    Matrix path (Muon reference, KellerJordan/Muon)::

        m ← β m + (1−β) g;  u = (1−β) g + β m;  O = NS(u) per matrix
        p ← p − lr·(sqrt(max(1, fan_out/fan_in))·O + wd·p)

    Defaults follow the reference: lr 0.02, β 0.95, Nesterov, Jordan's 5-step table, Keller
    scaling; AdamW lr 3e-4, betas (0.9, 0.95), eps 1e-10. ``ns_dtype=jnp.bfloat16`` runs the
    iteration in bf16 as the reference does on accelerators (normalization stays float32).
    To reproduce ``optax.contrib.muon``: ``bias_correction=True, eps=1e-8,
    adam_nesterov=True, adam_eps=1e-8, adam_b2=0.999, adam_learning_rate=learning_rate``
    and the same routing. The spectral-case arguments ``schedule, steps, precondition,
    method, ns_dtype, eps, adaptive, learn`` are those of :func:`optorth.orthogonalize`
    (``learn=optorth.OnlineLearning(every=100)`` learns the table online); the others are
    described in the module docstring.

    Example:
      >>> import optorth, jax.numpy as jnp
      >>> params = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> tx = optorth.muon(learning_rate=0.02, weight_decay=0.01)
      >>> state = tx.init(params)

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024).
      Liu et al., "Muon is Scalable for LLM Training" (arXiv 2502.16982).
    """
    blocks = [
        _momentum(beta, nesterov, momentum_convention, bias_correction),
        orthogonalize(schedule, steps=steps, precondition=precondition, method=method,
                      dtype=ns_dtype, eps=eps, specs=route_specs(rules), adaptive=adaptive,
                      learn=learn),
    ]
    return _assemble(blocks, learning_rate=learning_rate, weight_decay=weight_decay,
                     weight_decay_mask=weight_decay_mask, scale=scale, rms_factor=rms_factor,
                     rules=rules, mu_dtype=mu_dtype, fallback=fallback,
                     adam=(adam_learning_rate, adam_b1, adam_b2, adam_eps, adam_eps_root,
                           adam_weight_decay, adam_nesterov))


def turbo_muon(
    learning_rate: Any = 0.02,
    beta: float = 0.95,
    *,
    nesterov: bool = True,
    momentum_convention: str = "ema",
    bias_correction: bool = False,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    schedule: Any = "turbo",
    steps: int | None = None,
    precondition: str | None = None,
    method: str = "standard",
    ns_dtype: Any = None,
    eps: float = 1e-7,
    adaptive: bool = False,
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
    """Turbo-Muon: :func:`muon` with AOL preconditioning and one step fewer.

    The ``"turbo"`` schedule: AOL row scaling s_i = (Σ_j |(XXᵀ)_ij|)^{-1/2} reusing XXᵀ in the
    first step, then the 4 last rows of You's table (REFERENCE §2). Reported: k AOL steps ≈
    k+1 plain steps in final loss. All arguments as in :func:`muon`.

    References:
      Boissin et al., "Turbo-Muon: Accelerating Orthogonality-Based Optimization with
      Pre-Conditioning" (arXiv 2512.04632).
    """
    return muon(**locals())


def root(
    learning_rate: Any = 1e-3,
    beta: float = 0.95,
    *,
    nesterov: bool = True,
    momentum_convention: str = "sgd",
    bias_correction: bool = False,
    quantile: float = 0.9,
    weight_decay: float = 0.1,
    weight_decay_mask: Any = None,
    schedule: Any = "root",
    steps: int | None = None,
    precondition: str | None = None,
    method: str = "standard",
    ns_dtype: Any = None,
    eps: float = 1e-7,
    adaptive: bool = False,
    learn: Any = None,
    scale: str | None = "consistent_rms",
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
    """ROOT: SGD-style Nesterov momentum, outliers dropped, per-shape Newton–Schulz.

    Matrix path: u = g + β m (m ← β m + g); B = clip(u, −ε, ε) with ε the ``quantile`` of |u|
    per matrix (:func:`optorth.soft_threshold`); O = NS(B) with ROOT's per-shape table
    (Jordan's for shapes it does not list); Moonlight scaling 0.2·sqrt(max(m, n)); lr 1e-3,
    wd 0.1. Other arguments as in :func:`muon`.

    References:
      "ROOT: Robust Orthogonalized Optimizer for Neural Network Training" (arXiv 2511.20626).
    """
    specs = route_specs(rules)
    blocks = [
        _momentum(beta, nesterov, momentum_convention, bias_correction),
        soft_threshold(quantile, specs=specs),
        orthogonalize(schedule, steps=steps, precondition=precondition, method=method,
                      dtype=ns_dtype, eps=eps, specs=specs, adaptive=adaptive, learn=learn),
    ]
    return _assemble(blocks, learning_rate=learning_rate, weight_decay=weight_decay,
                     weight_decay_mask=weight_decay_mask, scale=scale, rms_factor=rms_factor,
                     rules=rules, mu_dtype=mu_dtype, fallback=fallback,
                     adam=(adam_learning_rate, adam_b1, adam_b2, adam_eps, adam_eps_root,
                           adam_weight_decay, adam_nesterov))


def _norm_optimizer(norm, norm_options, *, beta, nesterov, momentum_convention,
                    bias_correction, warm_start, adaptive, rules, **assemble):
    blocks = [
        _momentum(beta, nesterov, momentum_convention, bias_correction, warm_start),
        dualize(norm, adaptive=adaptive, specs=route_specs(rules), **norm_options),
    ]
    return _assemble(blocks, rules=rules, **assemble)


def auon(
    learning_rate: Any = 0.24,
    beta: float = 0.95,
    *,
    nesterov: bool = True,
    momentum_convention: str = "ema",
    bias_correction: bool = False,
    gamma: float = 1.0,
    eps: float = 1e-7,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    adaptive: bool = False,
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
    """AuON: Nesterov EMA momentum, then X = M/‖M‖_F divided by sqrt(mean(cosh²(γX))).

    Linear time. Honest note: since ‖X‖_F = 1 the cosh factor r satisfies
    r − 1 ≤ sinh²(γ)/(2N) for N entries (≈2e-6 at 512×512), so AuON is, to that accuracy,
    Frobenius-normalized momentum SGD (:func:`normalized_sgdm` with Nesterov and Keller
    scaling); in its own tables it trails AdamW and Muon. Defaults from its training script
    (lr 0.24, β 0.95, Keller scaling). Other arguments as in :func:`muon`.

    References:
      Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates"
      (arXiv 2509.24320).
    """
    return _norm_optimizer(
        "auon", {"gamma": gamma, "eps": eps}, beta=beta, nesterov=nesterov,
        momentum_convention=momentum_convention, bias_correction=bias_correction,
        warm_start=False, adaptive=adaptive, rules=rules, learning_rate=learning_rate,
        weight_decay=weight_decay, weight_decay_mask=weight_decay_mask, scale=scale,
        rms_factor=rms_factor, mu_dtype=mu_dtype, fallback=fallback,
        adam=(adam_learning_rate, adam_b1, adam_b2, adam_eps, adam_eps_root, adam_weight_decay,
              adam_nesterov))


def hybrid_auon(
    learning_rate: Any = 0.24,
    beta: float = 0.95,
    *,
    nesterov: bool = True,
    momentum_convention: str = "ema",
    bias_correction: bool = False,
    gamma: float = 1.0,
    eps: float = 1e-7,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    adaptive: bool = False,
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
    """Hybrid-AuON: one Newton–Schulz step (Jordan's coefficients) before AuON's scaling.

    Follows the paper's v1–v2 description ("applies a single Newton–Schulz iteration"): the
    direction is AuON's scaling of one Frobenius-normalized Jordan step of the momentum. It is
    not the lmo of a norm (see ``optorth.norms._functions``). Arguments as in :func:`auon`.

    References:
      Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates"
      (arXiv 2509.24320).
    """
    return _norm_optimizer(
        "hybrid_auon", {"gamma": gamma, "eps": eps}, beta=beta, nesterov=nesterov,
        momentum_convention=momentum_convention, bias_correction=bias_correction,
        warm_start=False, adaptive=adaptive, rules=rules, learning_rate=learning_rate,
        weight_decay=weight_decay, weight_decay_mask=weight_decay_mask, scale=scale,
        rms_factor=rms_factor, mu_dtype=mu_dtype, fallback=fallback,
        adam=(adam_learning_rate, adam_b1, adam_b2, adam_eps, adam_eps_root, adam_weight_decay,
              adam_nesterov))


def normalized_sgdm(
    learning_rate: Any,
    beta: float = 0.9,
    *,
    nesterov: bool = False,
    momentum_convention: str = "ema",
    bias_correction: bool = False,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    adaptive: bool = False,
    scale: str | None = None,
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
    """Normalized SGD with momentum: p ← p − lr·M/‖M‖_F per matrix (Frobenius lmo).

    Each matrix step has Frobenius norm ``lr`` (RMS lr/sqrt(mn)), so the learning rate is not
    comparable with Muon's; no published default, hence required. Other arguments as in
    :func:`muon`.

    References:
      Cutkosky & Mehta, "Momentum Improves Normalized SGD" (arXiv 2002.03305).
    """
    return _norm_optimizer(
        "frobenius", {}, beta=beta, nesterov=nesterov, momentum_convention=momentum_convention,
        bias_correction=bias_correction, warm_start=False, adaptive=adaptive, rules=rules,
        learning_rate=learning_rate, weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask, scale=scale, rms_factor=rms_factor,
        mu_dtype=mu_dtype, fallback=fallback,
        adam=(adam_learning_rate, adam_b1, adam_b2, adam_eps, adam_eps_root, adam_weight_decay,
              adam_nesterov))


def signum(
    learning_rate: Any,
    beta: float = 0.9,
    *,
    nesterov: bool = False,
    momentum_convention: str = "ema",
    bias_correction: bool = False,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    adaptive: bool = False,
    scale: str | None = None,
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
    """Signum: p ← p − lr·sign(m), m the EMA of gradients (lmo of the entrywise max norm).

    The update has RMS 1 per entry, like Adam's; no published default learning rate, hence
    required. Other arguments as in :func:`muon`.

    References:
      Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems"
      (arXiv 1802.04434).
    """
    return _norm_optimizer(
        "sign", {}, beta=beta, nesterov=nesterov, momentum_convention=momentum_convention,
        bias_correction=bias_correction, warm_start=False, adaptive=adaptive, rules=rules,
        learning_rate=learning_rate, weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask, scale=scale, rms_factor=rms_factor,
        mu_dtype=mu_dtype, fallback=fallback,
        adam=(adam_learning_rate, adam_b1, adam_b2, adam_eps, adam_eps_root, adam_weight_decay,
              adam_nesterov))


def trust_region(
    learning_rate: Any,
    norm: str = "spectral",
    beta: float = 0.95,
    *,
    nesterov: bool = False,
    momentum_convention: str = "ema",
    warm_start: bool = True,
    adaptive: bool = False,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    schedule: Any = "jordan",
    steps: int | None = None,
    precondition: str | None = None,
    method: str = "standard",
    ns_dtype: Any = None,
    eps: float = 1e-7,
    norm_options: dict | None = None,
    scale: str | None = None,
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
    """Kovalev's non-Euclidean trust-region method under ``norm``, with a centre shrink.

    M_k = β M_{k−1} + (1−β) G_k (M_0 = G_0 with ``warm_start``; no Nesterov), then

        X_{k+1} = argmin_{‖X − (1−ηλ)X_k‖ ≤ η} ⟨M_k, X⟩ = (1−ηλ) X_k − η·lmo(M_k)

    with η = ``learning_rate`` and λ = ``weight_decay`` (decoupled weight decay shrinks the
    trust-region centre; the iterates then stay in the ball ‖X‖ ≤ 1/λ). ``adaptive`` scales
    by the dual norm ⟨M, lmo(M)⟩ per matrix. ``norm`` is any name of
    :func:`optorth.dualize`; the spectral case takes ``schedule, steps, precondition,
    method, ns_dtype, eps``, the others ``norm_options`` (e.g. ``{"gamma": 1.0}`` for auon).
    No update-scale convention by default (the pure method). Other arguments as in
    :func:`muon`.

    References:
      Kovalev, "Understanding Gradient Orthogonalization for Deep Learning via Non-Euclidean
      Trust-Region Optimization" (arXiv 2503.12645).
    """
    if norm == "spectral":
        options = dict(schedule=schedule, steps=steps, precondition=precondition,
                       method=method, dtype=ns_dtype, eps=eps, **(norm_options or {}))
    else:
        options = dict(norm_options or {})
    return _norm_optimizer(
        norm, options, beta=beta, nesterov=nesterov, momentum_convention=momentum_convention,
        bias_correction=False, warm_start=warm_start, adaptive=adaptive, rules=rules,
        learning_rate=learning_rate, weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask, scale=scale, rms_factor=rms_factor,
        mu_dtype=mu_dtype, fallback=fallback,
        adam=(adam_learning_rate, adam_b1, adam_b2, adam_eps, adam_eps_root, adam_weight_decay,
              adam_nesterov))
