"""QK-clip (MuonClip): rescale each attention head's query and key weights after the step.

For every head h whose maximum attention logit over the batch S_max^h exceeds τ:

    γ_h = min(1, τ / S_max^h)
    W_q^h ← √γ_h W_q^h,  W_k^h ← √γ_h W_k^h            (multi-head attention)
    W_qc^h, W_kc^h ← √γ_h ·;  W_qr^h ← γ_h W_qr^h;  W_kr untouched    (MLA)

so that logit q_hᵀk_h of the weights that produced S_max^h is multiplied by γ_h ≤ τ/S_max^h.
`qk_clip` returns updates whose application gives exactly these weights: for a leaf
coordinate with factor f = γ_h^p (p = ½, 1 or 0), u' = f·(x + u) − x.

Which coordinates of which leaves belong to which head is a `QKLeaf` per leaf name
relative to the attention layer's path (the keys of the ``max_logits`` tree, e.g.
``"blocks/0/attn"``); `QKClip` holds them with τ.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optorth.matrices._paths import flatten_with_paths, shape_of, unwrap

Part = tuple[Any, float]  # (size or None, power)


def _check_parts(segments) -> tuple[tuple[Part, ...], ...]:
    fix = ("segments is a tuple of per-head layouts, each a tuple of (size, power) parts, "
           "e.g. (((None, 0.5),),) for a query kernel with heads merged on its axis")
    try:
        out = tuple(tuple((size, float(power)) for size, power in seg) for seg in segments)
    except (TypeError, ValueError):
        raise ValueError(f"QKLeaf: {fix}; got {segments!r}.") from None
    for seg in out:
        for size, power in seg:
            bad_size = size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                             or size < 1)
            if bad_size or not (math.isfinite(power) and power >= 0) or not seg:
                raise ValueError(f"QKLeaf: sizes must be positive ints or None and powers "
                                 f"finite numbers >= 0; {fix}; got {segments!r}.")
    if not out:
        raise ValueError(f"QKLeaf: {fix}; got {segments!r}.")
    return out


@dataclasses.dataclass(frozen=True)
class QKLeaf:
    """How one parameter leaf's coordinates along ``axis`` belong to heads, and the power of
    γ_h that scales each.

    Along ``axis`` the leaf holds, for each segment in order, all heads one after another,
    each head being that segment's parts (``(size, power)``) in order: a separate query
    kernel ``(d, H·dh)`` is ``segments=(((None, 0.5),),)``; a fused ``[Q | K | V]`` kernel is
    three segments with powers ½, ½, 0; an MLA query ``(r, H·(dn + dr))`` is one segment
    ``((dn, 0.5), (dr, 1.0))``; an axis that *is* the heads (``(d, H, dh)``, axis −2) is
    ``(((1, 0.5),),)``. H is the length of the layer's ``max_logits`` record; a ``None`` size
    takes an equal share of what the explicit sizes leave of each head.

    Attributes:
      axis: the axis holding heads (negative counts from the end).
      segments: tuple of per-head layouts, each a tuple of ``(size | None, power)``.
      optional: skip the leaf when the parameters have none (e.g. a bias).

    Example:
      >>> QKLeaf(-1, (((64, 0.5), (32, 1.0)),))   # MLA query: 64 no-rope, 32 rope dims/head
      QKLeaf(axis=-1, segments=(((64, 0.5), (32, 1.0)),), optional=False)
    """

    axis: int = -1
    segments: tuple = (((None, 0.5),),)
    optional: bool = False

    def __post_init__(self):
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise ValueError(f"QKLeaf: axis must be an int; got {self.axis!r}.")
        object.__setattr__(self, "segments", _check_parts(self.segments))

    def factors_plan(self, shape, heads: int, path: str) -> tuple[np.ndarray, np.ndarray, int]:
        """``(head index, power, axis)`` per coordinate along the head axis of ``shape``."""
        if not -len(shape) <= self.axis < len(shape):
            raise ValueError(f"qk_clip: leaf {path!r} of shape {tuple(shape)} has no axis "
                             f"{self.axis}; fix the QKLeaf of this leaf name.")
        axis = self.axis % len(shape)
        length = shape[axis]
        if length % heads:
            raise ValueError(f"qk_clip: leaf {path!r} of shape {tuple(shape)}: axis {axis} "
                             f"(length {length}) does not split into {heads} heads (the "
                             f"length of its layer's max_logits). Check the QKLeaf or the "
                             f"recorded maxima.")
        per_head = length // heads
        parts = [p for seg in self.segments for p in seg]
        fixed = sum(size for size, _ in parts if size is not None)
        free = sum(size is None for size, _ in parts)
        share, rest = divmod(per_head - fixed, free) if free else (0, per_head - fixed)
        if rest or share < 0 or (free and share == 0):
            raise ValueError(f"qk_clip: leaf {path!r} of shape {tuple(shape)}: each of its "
                             f"{heads} heads has {per_head} coordinates on axis {axis}, which "
                             f"the parts {self.segments} do not fill exactly.")
        head_index, power = [], []
        for seg in self.segments:
            for h in range(heads):
                for size, p in seg:
                    n = share if size is None else size
                    head_index += [h] * n
                    power += [p] * n
        return np.asarray(head_index, np.int32), np.asarray(power, np.float32), axis


def _as_leaves(leaves) -> tuple[tuple[str, QKLeaf], ...]:
    items = leaves.items() if isinstance(leaves, dict) else leaves
    try:
        out = tuple((name, layout) for name, layout in items)
    except (TypeError, ValueError):
        out = ()
    if not out or not all(isinstance(n, str) and n and isinstance(q, QKLeaf) for n, q in out):
        raise ValueError(f"QKClip: leaves must map leaf names relative to the attention layer "
                         f"(e.g. 'query/kernel') to QKLeaf objects; got {leaves!r}.")
    return out


#: nnx.MultiHeadAttention: query/key kernels (d, H, dh) and biases (H, dh), heads on axis −2.
NNX_ATTENTION = (
    ("query/kernel", QKLeaf(-2, (((1, 0.5),),))),
    ("key/kernel", QKLeaf(-2, (((1, 0.5),),))),
    ("query/bias", QKLeaf(-2, (((1, 0.5),),), optional=True)),
    ("key/bias", QKLeaf(-2, (((1, 0.5),),), optional=True)),
)


@dataclasses.dataclass(frozen=True)
class QKClip:
    """QK-clip's threshold τ and the layout of the query/key leaves of an attention layer.

    Attributes:
      threshold: τ > 0; heads whose maximum logit exceeds it are rescaled.
      leaves: leaf names relative to the attention layer (the ``max_logits`` key) mapped to
        their `QKLeaf` (a dict or pairs). Default: ``nnx.MultiHeadAttention``
        (and ``nnx.LinearGeneral`` / ``DenseGeneral`` kernels ``(d, H, dh)``).

    Constructors for other layouts: `separate`, `fused`, `mla`.

    Example:
      >>> import optorth
      >>> clip = optorth.QKClip(100.0)                     # nnx.MultiHeadAttention
      >>> clip = optorth.QKClip.separate(50.0)             # query/kernel, key/kernel (d, H·dh)
      >>> clip = optorth.QKClip.fused(50.0, "qkv/kernel")  # [Q | K | V] on the last axis

    References:
      Kimi Team, "Kimi K2: Open Agentic Intelligence" (arXiv 2507.20534).
    """

    threshold: float = 100.0
    leaves: Any = NNX_ATTENTION

    def __post_init__(self):
        tau = self.threshold
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (
                math.isfinite(tau) and tau > 0):
            raise ValueError(f"QKClip: threshold must be a finite number > 0; got {tau!r}.")
        object.__setattr__(self, "threshold", float(tau))
        object.__setattr__(self, "leaves", _as_leaves(self.leaves))

    @classmethod
    def separate(cls, threshold: float = 100.0, query: str = "query/kernel",
                 key: str = "key/kernel", *, axis: int = -1) -> QKClip:
        """Separate query and key kernels with heads merged on ``axis`` (``(d, H·dh)``)."""
        merged = QKLeaf(axis, (((None, 0.5),),))
        return cls(threshold, ((query, merged), (key, merged)))

    @classmethod
    def fused(cls, threshold: float = 100.0, name: str = "qkv/kernel", *, axis: int = -1,
              interleaved: bool = False) -> QKClip:
        """A fused QKV kernel: ``[Q | K | V]`` blocks on ``axis`` (each ``H·dh``), or per
        head ``[q_h k_h v_h]`` with ``interleaved``. For multi-head attention only: with
        grouped keys (fewer key than query heads) the three blocks differ in size, which
        this layout cannot describe."""
        parts = ((None, 0.5), (None, 0.5), (None, 0.0))
        segments = (parts,) if interleaved else tuple((p,) for p in parts)
        return cls(threshold, ((name, QKLeaf(axis, segments)),))

    @classmethod
    def mla(cls, threshold: float, *, nope_dim: int, rope_dim: int, v_dim: int,
            query: str = "wq_b/kernel", key_value: str = "wkv_b/kernel") -> QKClip:
        """Multi-head latent attention: the query up-projection holds per head
        ``[q_nope (nope_dim) | q_rope (rope_dim)]`` and the key-value up-projection
        ``[k_nope (nope_dim) | v (v_dim)]``, both on the last axis. The shared rotary key
        (in the down-projection) is left untouched; q_rope takes γ_h, the rest √γ_h."""
        q = QKLeaf(-1, (((nope_dim, 0.5), (rope_dim, 1.0)),))
        kv = QKLeaf(-1, (((nope_dim, 0.5), (v_dim, 0.0)),))
        return cls(threshold, ((query, q), (key_value, kv)))


def head_gammas(max_logits, threshold: float):
    """γ_h = min(1, τ / S_max^h) (1 where S_max^h ≤ τ, also for S_max^h ≤ 0), in float32 or
    the maxima's wider dtype."""
    s = jnp.asarray(max_logits)
    s = jax.lax.stop_gradient(s.astype(jnp.promote_types(s.dtype, jnp.float32)))
    return jnp.where(s > threshold, threshold / jnp.where(s > threshold, s, 1.0), 1.0)


def _leaf_factor(layout: QKLeaf, shape, gammas, path):
    head_index, power, axis = layout.factors_plan(shape, gammas.shape[0], path)
    factor = jnp.power(gammas[head_index], power)
    return jnp.reshape(factor, [-1 if a == axis else 1 for a in range(len(shape))])


def _layer_plan(config: QKClip, layers, paths: dict[str, int]) -> dict[int, tuple]:
    """``{flat index of a leaf: (layer, QKLeaf)}``, refusing what cannot be routed."""
    plan = {}
    for layer in layers:
        found = 0
        for name, layout in config.leaves:
            path = f"{layer}/{name}" if layer else name
            if path in paths:
                plan[paths[path]] = (layer, layout)
                found += 1
            elif not layout.optional:
                under = [p for p in paths if p.startswith(f"{layer}/")][:8]
                raise ValueError(
                    f"qk_clip: max_logits names the attention layer {layer!r}, but the "
                    f"parameters have no leaf {path!r} (leaves under it: {under}). Give "
                    f"QKClip the layout of this attention, e.g. QKClip.separate(...), "
                    f"QKClip.fused(...), QKClip.mla(...) or leaves={{name: QKLeaf(...)}}, "
                    f"and record maxima under the layer's own path.")
        if not found:
            raise ValueError(f"qk_clip: no query/key leaf of layer {layer!r} found.")
    return plan


class QKClipState(NamedTuple):
    """State of `qk_clip`: ``clipped``, int32, heads rescaled by the last update."""

    clipped: jax.Array


def qk_clip(config: QKClip = QKClip()) -> optax.GradientTransformationExtraArgs:
    """QK-clip as the last transform of a chain: ``update(..., max_logits=...)``.

    ``max_logits`` is a dict ``{layer path: (H,) maximum logits}`` from the forward pass
    that produced the gradients (`optorth.nn.capture_max_logits`). The returned
    updates u' make ``x + u'`` the clipped ``x + u`` (module docstring); leaves of no listed
    layer pass unchanged. Under ``optax.MultiSteps`` pass the maximum over the accumulated
    micro-batches (the clip runs when the step is applied).

    Args:
      config: a `QKClip` (τ and the layout of the query/key leaves).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state `QKClipState`.

    Example:
      >>> import jax.numpy as jnp, optax, optorth
      >>> params = {"attn": {"query": {"kernel": jnp.ones((4, 2, 3))},
      ...                    "key": {"kernel": jnp.ones((4, 2, 3))}}}
      >>> tx = optax.chain(optax.sgd(0.0), optorth.qk_clip(optorth.QKClip(10.0)))
      >>> u, _ = tx.update(params, tx.init(params), params,
      ...                  max_logits={"attn": jnp.array([40.0, 5.0])})
      >>> optax.apply_updates(params, u)["attn"]["query"]["kernel"][0, :, 0].tolist()
      [0.5, 1.0]

    References:
      Kimi Team, "Kimi K2: Open Agentic Intelligence" (arXiv 2507.20534).
    """
    if not isinstance(config, QKClip):
        raise ValueError(f"qk_clip: config must be an optorth.QKClip; got {config!r}.")

    def init_fn(params):
        del params
        return QKClipState(jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, *, max_logits=None, **extra_args):
        del extra_args
        if params is None or max_logits is None:
            raise ValueError("qk_clip: update needs the parameters and the maximum logits of "
                             "the forward pass: tx.update(grads, state, params, "
                             "max_logits=...), with max_logits from "
                             "optorth.nn.capture_max_logits().")
        if not isinstance(max_logits, dict):
            raise ValueError(f"qk_clip: max_logits must be a dict {{layer path: (heads,) "
                             f"array}}; got {type(max_logits).__name__}.")
        items, treedef = flatten_with_paths(params)
        u_items, _ = flatten_with_paths(updates)
        plan = _layer_plan(config, sorted(max_logits), {p: i for i, (p, _) in enumerate(items)})
        gammas = {}
        for layer in max_logits:
            record = jnp.asarray(max_logits[layer])
            if record.ndim != 1:
                raise ValueError(f"qk_clip: max_logits[{layer!r}] has shape {record.shape}; "
                                 f"expected (heads,), one maximum per head.")
            gammas[layer] = head_gammas(record, config.threshold)
        out = []
        for i, ((path, x), (_, u)) in enumerate(zip(items, u_items, strict=True)):
            if i in plan:
                layer, layout = plan[i]
                x, u = unwrap(x), unwrap(u)
                dtype = jnp.promote_types(u.dtype, jnp.float32)
                f = _leaf_factor(layout, shape_of(x), gammas[layer], path).astype(dtype)
                new = x.astype(dtype) + u.astype(dtype)
                u = (u.astype(dtype) + (f - 1.0) * new).astype(u.dtype)
            out.append(u)
        clipped = sum(jnp.sum(g < 1.0, dtype=jnp.int32) for g in gammas.values())
        return jax.tree_util.tree_unflatten(treedef, out), QKClipState(jnp.asarray(clipped))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
