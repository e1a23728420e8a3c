"""The fine-tuning methods compared, their hyperparameters and learning-rate grids.

Every adapter method wraps the hidden dense layers (attention query/key/value/out and the MLP
fc/proj of every block; `HIDDEN_LAYERS`) and trains only its
`optorth.nn.AdapterParam` variables. Ranks and block sizes are chosen so that trainable
parameter counts are as close as possible to one budget, counted on the real adapted model.
Givens adapters have no such knob: strict GOFT has ``d - 1`` angles per layer and quasi-Givens
``4 (d - 1)`` numbers, fixed by the widths.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import jax
from flax import nnx

import optorth.nn

from .lora import LoRALinear

#: Regex of the adapted layers' paths (``optorth.nn.adapt(include=...)``).
HIDDEN_LAYERS = r"^blocks/\d+/(attn/(query|key|value|out)|mlp/(fc|proj))$"

#: Peak AdamW learning rates swept per method (3 each; the best on the target val split wins).
RATES = {
    "full": (3e-4, 1e-3, 3e-3),
    "lora": (1e-2, 3e-2, 1e-1),
    "oft": (3e-3, 1e-2, 3e-2),
    "hra": (3e-3, 1e-2, 3e-2),
    "givens": (1e-2, 3e-2, 1e-1),
    "givens_quasi": (1e-2, 3e-2, 1e-1),
}


@dataclasses.dataclass(frozen=True)
class Method:
    """One way of fine-tuning.

    Attributes:
      name: key (``full``, ``lora``, ``oft``, ``hra``, ``givens``, ``givens_quasi``).
      label: name with its hyperparameter, for tables and plots.
      adapters: ``() -> (layer -> adapter)``, called once per model so that random inits
        (one ``nnx.Rngs`` shared by the model's layers) repeat exactly; ``None`` for full FT.
      rates: peak learning rates to sweep.
      wrt: the variable type the optimizer trains.
    """

    name: str
    label: str
    adapters: Callable[[], Callable[[nnx.Linear], nnx.Module]] | None
    rates: tuple[float, ...]
    wrt: type = optorth.nn.AdapterParam

    def build(self, pretrained: nnx.Module) -> nnx.Module:
        """A fresh copy of ``pretrained`` ready to fine-tune with this method."""
        model = nnx.clone(pretrained)
        if self.adapters is not None:
            optorth.nn.adapt(model, self.adapters(), include=HIDDEN_LAYERS)
        return model


def adapter_class(name: str):
    """``optorth.nn.<name>``, or ``None`` when the installed optorth lacks it."""
    return getattr(optorth.nn, name, None)


def count(model: nnx.Module, wrt=optorth.nn.AdapterParam) -> int:
    """Number of scalars in the ``wrt`` variables of ``model``."""
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, wrt))))


def adapted_widths(model: nnx.Module) -> list[int]:
    """``in_features`` of every dense layer that `HIDDEN_LAYERS` selects."""
    return [module.in_features for path, module in nnx.iter_modules(model)
            if isinstance(module, nnx.Linear)
            and re.search(HIDDEN_LAYERS, "/".join(map(str, path)))]


def default_budget(model: nnx.Module) -> int:
    """4 × Σ in_features of the adapted layers (HRA rank 4; LoRA rank 2 on the lm model)."""
    return 4 * sum(adapted_widths(model))


def _closest(pretrained, budget, candidates, family):
    """The candidate whose adapted model's trainable count is closest to ``budget``.

    Counts grow with the candidate, so only the two candidates around the budget (found by
    bisection) and the ends are counted, each on the real adapted model (shapes only).
    """
    candidates = sorted(candidates)
    counts = {}

    def counted(value):
        if value not in counts:
            model = nnx.eval_shape(lambda: Method("", "", family(value), ()).build(pretrained))
            counts[value] = count(model)
        return counts[value]

    low, high = 0, len(candidates) - 1
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if counted(candidates[mid]) <= budget else (low, mid)
    near = {candidates[low], candidates[high]}
    return min(near, key=lambda v: (abs(counted(v) - budget), v))


def _family(cls, seed=None, **fixed):
    """``value -> adapters`` for ``cls(layer, <knob>=value, **fixed[, rngs])``."""
    (knob, _), = [(k, v) for k, v in fixed.items() if v is None]

    def family(value):
        def adapters():
            extra = {} if seed is None else {"rngs": nnx.Rngs(params=seed)}
            kw = {**fixed, knob: value, **extra}
            return lambda layer: cls(layer, **kw)
        return adapters
    return family


def methods(pretrained: nnx.Module, budget: int, *, seed: int = 0,
            only: tuple[str, ...] | None = None) -> tuple[list[Method], list[str]]:
    """The methods (those the installed optorth provides) and notes on skipped ones."""
    widths = adapted_widths(pretrained)
    out, notes = [Method("full", "full FT", None, RATES["full"], nnx.Param)], []
    lora = _family(LoRALinear, seed, rank=None)
    rank = _closest(pretrained, budget, range(1, 33), lora)
    out.append(Method("lora", f"LoRA r={rank}", lora(rank), RATES["lora"]))
    oft, hra, givens = (adapter_class(n) for n in ("OFTLinear", "HRALinear", "GivensLinear"))
    if oft is not None:
        family = _family(oft, block_size=None)
        sizes = [b for b in (2, 4, 8, 16, 32, 64) if all(w % b == 0 for w in widths)]
        size = _closest(pretrained, budget, sizes, family)
        out.append(Method("oft", f"OFTv2 b={size}", family(size), RATES["oft"]))
    if hra is not None:
        family = _family(hra, seed, rank=None)
        rank = _closest(pretrained, budget, range(2, min(min(widths), 32) + 1, 2), family)
        out.append(Method("hra", f"HRA r={rank}", family(rank), RATES["hra"]))
    if givens is not None:
        family = _family(givens, quasi=None)
        out.append(Method("givens", "GOFT strict", family(False), RATES["givens"]))
        out.append(Method("givens_quasi", "qGOFT quasi", family(True), RATES["givens_quasi"]))
    for name, cls in (("OFTLinear", oft), ("HRALinear", hra), ("GivensLinear", givens)):
        if cls is None:
            notes.append(f"skipped {name}: not in the installed optorth.nn")
    if only is not None:
        out = [m for m in out if m.name in only]
    return out, notes
