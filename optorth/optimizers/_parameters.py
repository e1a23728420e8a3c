"""The parameters of the routed ready optimizers: one name, one meaning, one text each.

`catalogue` holds every parameter a routed ready optimizer takes, in signature order, with a
neutral default; `ARGS` is its ``Args:`` text. A ready optimizer takes `COMMON` plus the
parameters its `optorth.optimizers._preset.Preset` names, with its own defaults.
"""

from __future__ import annotations

from typing import Any

import optax

from optorth.blocks._qk_clip import QKClip
from optorth.blocks._weight_decay import WeightDecay
from optorth.norms._objects import Norm, Spectral
from optorth.norms._shape_scale import ShapeScale
from optorth.ns._config import NewtonSchulz


def catalogue(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    beta: float = 0.95,
    beta2: float = 0.95,
    *,
    norm: Norm | str = Spectral(),
    eps: float = 1e-10,
    rms: float = 0.2,
    quantile: float = 0.9,
    nesterov: bool = True,
    bias_correction: bool = False,
    warm_start: bool = False,
    adaptive: bool = False,
    weight_decay: float | WeightDecay = 0.0,
    weight_decay_mask: Any = None,
    ns: NewtonSchulz | str = NewtonSchulz(),
    scale: ShapeScale | str | None = "keller",
    rules: Any = None,
    mu_dtype: Any = None,
    fallback: optax.GradientTransformation | None = None,
    qk_clip: QKClip | None = None,
) -> optax.GradientTransformation:
    """Every parameter of the routed ready optimizers (a signature only; never called)."""
    raise NotImplementedError


#: What every routed ready optimizer takes.
COMMON = ("learning_rate", "beta", "weight_decay", "weight_decay_mask", "rules", "mu_dtype",
          "fallback")

#: The ``Args:`` entry of each parameter; a preset may say more about its own.
ARGS = {
    "learning_rate": "step size of the matrix path (a float or an optax schedule).",
    "beta": "momentum coefficient, in [0, 1).",
    "beta2": "decay of the EMA of the second moments, in [0, 1).",
    "norm": "an `optorth.norms.Norm` whose lmo is the step (with its shape ``scale``).",
    "eps": "ε of the second-moment normalization (> 0).",
    "rms": "the RMS each matrix update is aligned to (> 0).",
    "quantile": "the quantile of |u| per matrix above which entries are clipped, in [0, 1].",
    "nesterov": "apply the momentum with the Nesterov look-ahead.",
    "bias_correction": "debias the momentum as optax/NAdam do.",
    "warm_start": "M_0 = G_0 as in Kovalev's method (instead of an EMA from zero).",
    "adaptive": "multiply each matrix's direction by the dual norm ⟨M, lmo(M)⟩.",
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
