"""Orthogonal fine-tuning adapters for Flax NNX.

Each adapter wraps a pretrained ``nnx.Linear``, freezes its kernel and bias (`Frozen`,
not an ``nnx.Param``) and learns a transform ``M`` of the layer's input, applied to the input
(``y = (x M) W + b``) so that ``M W`` is never formed while training. Every adapter starts at
the identity (the wrapped model's output is unchanged at init) and ``merge()`` returns a plain
``nnx.Linear`` with kernel ``M W`` for inference.

Adapters:

* `OFTLinear`: OFTv2, a block-diagonal rotation from skew-symmetric generators through
  the Cayley–Neumann parameterization (Qiu et al., "Orthogonal Finetuning Made Scalable",
  arXiv 2506.19847).
* `HRALinear`: a chain of ``r`` Householder reflections, exactly orthogonal and a
  rank-``r`` update of the kernel (Yuan et al., "Bridging The Gap between Low-rank and
  Orthogonal Adaptation via Householder Reflection Adaptation", arXiv 2405.17484).
* `GivensLinear`: ``d - 1`` Givens rotations in ``⌈log2 d⌉`` parallel layers, or their
  quasi-orthogonal relaxation (Ma et al., "Parameter Efficient Quasi-Orthogonal Fine-Tuning
  via Givens Rotation", arXiv 2404.04316).

Whole models: `adapt` swaps the selected dense layers for adapters in place and
`merge` swaps them back for merged layers.

QK-clip: `track_max_logits` and `record_max_logits` record each attention
layer's per-head maximum logit inside `capture_max_logits`, for
`optorth.qk_clip` (Kimi Team, "Kimi K2: Open Agentic Intelligence", arXiv 2507.20534).

Training: ``nnx.Optimizer(model, tx, wrt=optorth.nn.AdapterParam)`` trains the adapters alone;
``wrt=nnx.Param`` trains the adapters and every non-adapted parameter (never the frozen bases).
Under optorth's routing the adapter parameters (names ``oft_*``, ``hra_*``, ``givens_*``) take
the fallback AdamW path: they are generator coordinates, angles and reflection directions, not
linear maps of activations.
"""

from optorth.nn._adapter import AdapterParam, Frozen, OrthogonalAdapter
from optorth.nn._givens import GivensLinear
from optorth.nn._hra import HRALinear
from optorth.nn._max_logits import (
    attention_logits,
    capture_max_logits,
    record_max_logits,
    track_max_logits,
)
from optorth.nn._model import adapt, merge
from optorth.nn._oft import OFTLinear

__all__ = [
    "AdapterParam",
    "Frozen",
    "GivensLinear",
    "HRALinear",
    "OFTLinear",
    "OrthogonalAdapter",
    "adapt",
    "attention_logits",
    "capture_max_logits",
    "merge",
    "record_max_logits",
    "track_max_logits",
]
