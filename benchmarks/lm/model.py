"""The main job's model: a small pre-norm decoder-only transformer in Flax NNX.

    x = embed(tokens) + pos_embed(positions)
    for each block:  x = x + attn(norm1(x));  x = x + mlp(norm2(x))
    logits = lm_head(final_norm(x))

Separate ``query``/``key``/``value``/``out`` projections, an MLP ``fc``/``proj`` with GELU and a
separate (untied) ``lm_head``, so that the parameter tree shows every role a router must tell
apart: hidden 2-D kernels (matrix path), two 2-D embeddings and a 2-D output head (fallback
path by role, not by rank), and RMSNorm scales (vectors). Parameter paths look like
``blocks/0/attn/query/kernel``, ``embed/embedding``, ``lm_head/kernel``, ``final_norm/scale``.

Initialisation follows GPT-2 (normal, std 0.02; residual output projections scaled by
1/sqrt(2 · layers)). Attention is causal (``jax.nn.dot_product_attention(is_causal=True)``);
softmax and the loss are computed in float32 whatever the parameter dtype.

References:
  Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2), 2019.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelShape:
    """Shape of the transformer, apart from the vocabulary (which the corpus decides).

    The run's `Config` extends it, so each field is declared once.

    Attributes:
      seq_len: maximum context length (size of the learned position table).
      d_model: residual width.
      layers: number of transformer blocks.
      heads: attention heads (must divide ``d_model``).
      mlp_ratio: MLP hidden width as a multiple of ``d_model``.
      bf16: keep parameters and activations in bfloat16 (loss and softmax stay float32).
    """

    seq_len: int = 128
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    bf16: bool = False

    def __post_init__(self):
        for field in ("seq_len", "d_model", "layers", "heads", "mlp_ratio"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
        if self.d_model % self.heads:
            raise ValueError(
                f"heads={self.heads} must divide d_model={self.d_model}; "
                "pick a head count that divides the width"
            )

    @property
    def dtype(self):
        return jnp.bfloat16 if self.bf16 else jnp.float32

    def shape(self) -> dict:
        """The `ModelShape` fields of this object, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelShape)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig(ModelShape):
    """A `ModelShape` and the vocabulary size: everything the model needs.

    Attributes:
      vocab_size: number of token ids.
    """

    vocab_size: int

    def __post_init__(self):
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {self.vocab_size}")
        super().__post_init__()


def _linear(fan_in, fan_out, std, cfg: ModelConfig, rngs):
    return nnx.Linear(
        fan_in,
        fan_out,
        use_bias=False,
        kernel_init=nnx.initializers.normal(std),
        dtype=cfg.dtype,
        param_dtype=cfg.dtype,
        rngs=rngs,
    )


def _norm(cfg: ModelConfig, rngs):
    return nnx.RMSNorm(cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.dtype, rngs=rngs)


class CausalSelfAttention(nnx.Module):
    """Multi-head causal self-attention with separate Q, K, V and output projections."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, resid_std = cfg.d_model, 0.02 / math.sqrt(2 * cfg.layers)
        self.heads = cfg.heads
        self.query = _linear(d, d, 0.02, cfg, rngs)
        self.key = _linear(d, d, 0.02, cfg, rngs)
        self.value = _linear(d, d, 0.02, cfg, rngs)
        self.out = _linear(d, d, resid_std, cfg, rngs)
        self.record_as: str | None = None  # set by benchmarks.lm.task.enable_recording

    def __call__(self, x):
        batch, length, d = x.shape
        split = lambda t: t.reshape(batch, length, self.heads, d // self.heads)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        if self.record_as is None:
            y = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        else:  # the same attention from explicit logits, whose per-head maxima it records
            y = _recorded_attention(q, k, v, self.record_as)
        return self.out(y.reshape(batch, length, d))


def _recorded_attention(q, k, v, name):
    """Causal softmax attention (float32 softmax) that records its per-head maximum logits
    under ``name`` for QK-clip (``optorth.nn.record_max_logits``)."""
    import optorth

    logits = optorth.nn.attention_logits(q, k).astype(jnp.float32)
    causal = jnp.tril(jnp.ones(logits.shape[-2:], bool))
    optorth.nn.record_max_logits(name, logits, causal)
    weights = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


class MLP(nnx.Module):
    """Two-layer GELU MLP of width ``mlp_ratio · d_model``."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        hidden = cfg.mlp_ratio * cfg.d_model
        self.fc = _linear(cfg.d_model, hidden, 0.02, cfg, rngs)
        self.proj = _linear(hidden, cfg.d_model, 0.02 / math.sqrt(2 * cfg.layers), cfg, rngs)

    def __call__(self, x):
        return self.proj(jax.nn.gelu(self.fc(x)))


class Block(nnx.Module):
    """Pre-norm residual block: attention then MLP."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.norm1 = _norm(cfg, rngs)
        self.attn = CausalSelfAttention(cfg, rngs=rngs)
        self.norm2 = _norm(cfg, rngs)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerLM(nnx.Module):
    """Decoder-only character language model; ``model(tokens) -> logits`` (float32)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.02)
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.dtype, embedding_init=init, rngs=rngs)
        self.config = cfg
        self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, **kw)
        self.pos_embed = nnx.Embed(cfg.seq_len, cfg.d_model, **kw)
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.layers)])
        self.final_norm = _norm(cfg, rngs)
        self.lm_head = _linear(cfg.d_model, cfg.vocab_size, 0.02, cfg, rngs)

    def __call__(self, tokens):
        length = tokens.shape[-1]
        if length > self.config.seq_len:
            raise ValueError(
                f"input length {length} exceeds the model's seq_len={self.config.seq_len}"
            )
        x = self.embed(tokens) + self.pos_embed(jnp.arange(length))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.final_norm(x)).astype(jnp.float32)


def make_model(cfg: ModelConfig, seed: int = 0) -> TransformerLM:
    """A freshly initialised `TransformerLM` (same ``seed`` → same weights)."""
    return TransformerLM(cfg, rngs=nnx.Rngs(params=seed))


def loss_fn(model: TransformerLM, inputs, targets):
    """Mean next-character cross-entropy in nats (float32)."""
    logits = model(inputs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def count_params(model: nnx.Module) -> int:
    """Number of scalar parameters."""
    state = nnx.state(model, nnx.Param)
    return int(sum(x.size for x in jax.tree.leaves(state)))
