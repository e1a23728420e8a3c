"""The optimizers of the width-transfer sweep (``benchmarks/width_transfer.py``).

AdamW (the main job's baseline, built through `registry.build_optimizer`) and
``optorth.muon`` under each shape-scale convention of ``optorth.norms.CONVENTIONS``, with the
main job's learning-rate shape and, for Muon, the main job's AdamW fallback at a fixed peak lr
so that only the matrix path's learning rate varies across a sweep.
"""

from __future__ import annotations

import optax

from .config import Config, lr_schedule
from .registry import REGISTRY, build_optimizer, fallback_adamw

#: name → (shape-scale convention of ``optorth.muon``, or ``None`` for the AdamW baseline;
#: centre of the learning-rate sweep, a guess of the optimum at d_model 128). The Muon
#: variants cover every convention of ``optorth.norms.CONVENTIONS``; ``muon_unscaled`` is
#: ``scale=None`` (no factor: Keller's except the MLP ``fc`` matrix, 1 instead of 2).
WIDTH_OPTIMIZERS = {
    "adamw": (None, 2e-3),
    "muon_keller": ("keller", 0.02),
    "muon_consistent_rms": ("consistent_rms", 4e-3),
    "muon_spectral": ("spectral", 0.02),
    "muon_unscaled": ("none", 0.02),
}
#: The sweep's default optimizers: AdamW and one Muon per convention.
WIDTH_DEFAULT_OPTIMIZERS = ("adamw", "muon_keller", "muon_consistent_rms", "muon_spectral")
#: Peak learning rate of the AdamW fallback path (embeddings, head, norm gains) of every Muon
#: variant: the main job's (3e-3), fixed across the sweep.
WIDTH_FALLBACK_LR = REGISTRY["muon"].fallback_lr
#: Target update RMS of the ``consistent_rms`` convention (Moonlight's 0.2).
WIDTH_CONSISTENT_RMS = 0.2


def build_width_optimizer(name: str, cfg: Config, lr: float) -> optax.GradientTransformation:
    """The sweep's optimizer ``name`` at peak learning rate ``lr`` with the run's lr shape."""
    if name not in WIDTH_OPTIMIZERS:
        raise ValueError(f"unknown width-sweep optimizer {name!r}; "
                         f"choose from {', '.join(WIDTH_OPTIMIZERS)}")
    convention, _ = WIDTH_OPTIMIZERS[name]
    if convention is None:
        return build_optimizer("adamw", cfg, lr=lr)
    import optorth

    scale = None if convention == "none" else optorth.norms.ShapeScale(
        convention, rms=WIDTH_CONSISTENT_RMS)
    return optorth.muon(learning_rate=lr_schedule(lr, cfg), weight_decay=cfg.weight_decay,
                        scale=scale,
                        fallback=fallback_adamw(cfg, lr_schedule(WIDTH_FALLBACK_LR, cfg)))
