"""A small LoRA adapter for the benchmark's baseline (Hu et al., "LoRA: Low-Rank Adaptation
of Large Language Models", arXiv 2106.09685).

``y = base(x) + (x A) B · alpha / rank`` with the base ``nnx.Linear`` frozen exactly like the
orthogonal adapters' (``optorth.nn.frozen_copy``: `optorth.nn.Frozen` kernel and bias),
``A`` (in, rank) drawn from N(0, 1/in) and ``B`` (rank, out) zero, so the layer starts at the
pretrained function. ``A`` and ``B`` are `optorth.nn.AdapterParam` named ``lora_a`` and
``lora_b``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from optorth import _checks
from optorth.nn import AdapterParam
from optorth.nn._adapter import check_width, frozen_copy


class LoRALinear(nnx.Module):
    """LoRA around a pretrained ``nnx.Linear`` (trainable parameters ``rank·(in + out)``).

    Args:
      base: the pretrained layer (copied and frozen).
      rank: rank of the update, at most ``min(in, out)``.
      alpha: scale numerator; the update is multiplied by ``alpha / rank``.
      rngs: random streams for ``A``.
    """

    def __init__(self, base: nnx.Linear, *, rank: int = 8, alpha: float | None = None,
                 rngs: nnx.Rngs):
        who = "LoRALinear"
        self.base = frozen_copy(who, base)
        width = min(self.base.in_features, self.base.out_features)
        self.rank = check_width(who, "rank", rank, width, "min(in_features, out_features)")
        alpha = float(self.rank if alpha is None else _checks.check_positive(who, "alpha", alpha))
        self.scale = alpha / self.rank
        n_in, n_out = self.base.in_features, self.base.out_features
        a = jax.random.normal(rngs.params(), (n_in, self.rank), jnp.float32) / jnp.sqrt(n_in)
        self.lora_a = AdapterParam(a)
        self.lora_b = AdapterParam(jnp.zeros((self.rank, n_out), jnp.float32))

    def __call__(self, x):
        low = (x.astype(jnp.float32) @ self.lora_a[...]) @ self.lora_b[...]
        return self.base(x) + (self.scale * low).astype(x.dtype)

    def merge(self) -> nnx.Linear:
        """A plain ``nnx.Linear`` (``nnx.Param`` kernel) with kernel ``W + A B · alpha/rank``."""
        kernel = self.base.kernel.get_value()
        delta = self.scale * (self.lora_a[...] @ self.lora_b[...])
        merged = nnx.clone(self.base)
        merged.kernel = nnx.Param((kernel.astype(jnp.float32) + delta).astype(kernel.dtype))
        if self.base.bias is not None:
            merged.bias = nnx.Param(self.base.bias.get_value())
        return merged


def merge_lora(model: nnx.Module) -> list[str]:
    """Replace, in place, every `LoRALinear` in ``model`` by its merged layer."""
    found = [(path, module) for path, module in nnx.iter_modules(model)
             if isinstance(module, LoRALinear) and path]
    for path, module in found:
        parent = model
        for key in path[:-1]:
            parent = parent[key] if isinstance(key, int) else getattr(parent, key)
        if isinstance(path[-1], int):
            parent[path[-1]] = module.merge()
        else:
            setattr(parent, path[-1], module.merge())
    return ["/".join(map(str, path)) for path, _ in found]
