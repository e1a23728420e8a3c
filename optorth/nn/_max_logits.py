"""Per-head maximum attention logits, recorded during the forward pass for QK-clip.

Inside ``with capture_max_logits() as record:`` every attention that records (each
``nnx.MultiHeadAttention`` after `track_max_logits`, or your own attention calling
`record_max_logits`) stores max over batch and positions of qᵀk/√d per head under its
layer path, e.g. ``record["blocks/0/attn"]`` of shape ``(heads,)``. The maxima are a reduction
of logits the attention computes anyway, float32 and without gradient. Open the capture
inside the traced loss function and return the record with the loss (``has_aux=True``), so
the values stay inside their trace; it does not reach into ``nnx.scan``/``nnx.remat`` bodies.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes as nnx_dtypes

_STACK = threading.local()


def _active() -> list[dict]:
    if not hasattr(_STACK, "records"):
        _STACK.records = []
    return _STACK.records


@contextlib.contextmanager
def capture_max_logits():
    """Collects the per-head maximum logits recorded while the block runs.

    Yields:
      A dict, filled in place: ``{layer path: (heads,) float32 maximum logit}``; a layer
      called several times keeps the maximum of its calls.

    Example:
      >>> import jax.numpy as jnp, optorth
      >>> with optorth.nn.capture_max_logits() as record:
      ...     optorth.nn.record_max_logits("attn", jnp.arange(8.0).reshape(1, 2, 2, 2))
      >>> record["attn"].tolist()
      [3.0, 7.0]
    """
    record: dict = {}
    _active().append(record)
    try:
        yield record
    finally:
        _active().pop()


def record_max_logits(name: str, logits, mask=None) -> None:
    """Records max over every axis but the head axis of ``logits`` (``(..., heads, q, k)``,
    the scaled qᵀk/√d before any bias or mask) under ``name``, where ``mask`` (broadcastable,
    ``True`` = attended) allows. Does nothing outside `capture_max_logits`.

    Args:
      name: the attention layer's path (the prefix of its query/key leaves, e.g.
        ``"blocks/0/attn"``), which routes the maxima to its leaves in `optorth.qk_clip`.
      logits: attention logits with heads on axis −3.
      mask: optional boolean mask broadcastable to ``logits``.

    Example:
      >>> import jax, jax.numpy as jnp, optorth
      >>> def attention(q, k, v, name):                         # q, k, v: (B, T, H, D)
      ...     logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1])
      ...     causal = jnp.tril(jnp.ones(logits.shape[-2:], bool))
      ...     optorth.nn.record_max_logits(name, logits, causal)
      ...     weights = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf))
      ...     return jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    """
    records = _active()
    if not records:
        return
    x = jax.lax.stop_gradient(jnp.asarray(logits)).astype(jnp.float32)
    if x.ndim < 3:
        raise ValueError(f"record_max_logits({name!r}): logits of shape {x.shape}; expected "
                         f"(..., heads, q_length, k_length).")
    if mask is not None:
        x = jnp.where(mask, x, -jnp.inf)
    axes = tuple(a for a in range(x.ndim) if a != x.ndim - 3)
    value = jnp.max(x, axis=axes)
    record = records[-1]
    record[name] = value if name not in record else jnp.maximum(record[name], value)


def attention_logits(query, key, *, dtype=None, precision=None):
    """qᵀk/√d per head, ``(..., heads, q, k)``, computed as ``nnx.dot_product_attention``
    does (grouped key heads repeated to the query heads)."""
    query, key = nnx_dtypes.promote_dtype((query, key), dtype=dtype)
    if query.shape[-2] != key.shape[-2]:
        key = jnp.repeat(key, query.shape[-2] // key.shape[-2], axis=-2)
    query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
    return jnp.einsum("...qhd,...khd->...hqk", query, key, precision=precision)


def _recording_attention(query, key, value, *args, name, inner, **kwargs):
    """``inner`` (the layer's attention function), recording its maximum logits first."""
    if _active():
        logits = attention_logits(query, key, dtype=kwargs.get("dtype"),
                                  precision=kwargs.get("precision"))
        mask = kwargs.get("mask")
        if kwargs.get("is_causal"):
            causal = jnp.tril(jnp.ones(logits.shape[-2:], bool))
            mask = causal if mask is None else jnp.logical_and(mask, causal)
        record_max_logits(name, logits, mask)
    return inner(query, key, value, *args, **kwargs)


def track_max_logits(model: nnx.Module) -> list[str]:
    """Makes every ``nnx.MultiHeadAttention`` of ``model`` record its maximum logits.

    Wraps each layer's ``attention_fn`` (outputs unchanged); inside
    `capture_max_logits` the layer at path ``p`` records under ``"p"`` (e.g.
    ``"blocks/0/attn"``), the prefix of its ``query/kernel`` and ``key/kernel``.

    Returns:
      The paths of the tracked layers.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp, optorth
      >>> attn = nnx.MultiHeadAttention(2, 8, decode=False, rngs=nnx.Rngs(0))
      >>> optorth.nn.track_max_logits(attn)
      ['']
      >>> with optorth.nn.capture_max_logits() as record:
      ...     _ = attn(jnp.ones((1, 3, 8)))
      >>> record[""].shape
      (2,)
    """
    paths = []
    for path, module in nnx.iter_modules(model):
        if isinstance(module, nnx.MultiHeadAttention):
            name = "/".join(str(p) for p in path)
            inner = module.attention_fn
            if isinstance(inner, functools.partial) and inner.func is _recording_attention:
                inner = inner.keywords["inner"]
            module.attention_fn = functools.partial(_recording_attention, name=name,
                                                    inner=inner)
            paths.append(name)
    return paths
