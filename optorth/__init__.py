"""optorth: composable optax transformations for orthogonalized and norm-based optimizers.

Every optimizer here is one pipeline of small blocks (Kovalev, arXiv 2503.12645):

    gradient → momentum → dualize under a norm (per matrix) → scale by shape
             → optional second-moment normalization → weight decay → learning rate

- **Ready optimizers** (hidden matrices take the pipeline; embeddings, heads, biases and gains
  take a fallback AdamW; print `describe_routing` to see which leaf goes where):
  `muon`, `turbo_muon`, `root`, `normuon`, `adamuon`, `factored_muon`, `trust_region`,
  `normalized_sgdm`, `signum`, `auon`, `hybrid_auon`, `adafactor`.
- **Configuration objects** (frozen, validated where they are built, static under
  ``jax.jit``): `NewtonSchulz` (schedule, steps, normalization, method, dtype, online
  learning, distribution, telemetry), `OnlineLearning`, `Schedule`, `Distribution` (how the
  matrices are divided over a device mesh), `WeightDecay` (decoupled or cautious, coupled to
  the learning rate or not); norms in `optorth.norms`.
- **Blocks to chain yourself**: `scale_by_momentum`, `soft_threshold`, `orthogonalize`,
  `dualize`, `scale_by_shape`, `scale_by_factored_rms`, `scale_by_neuron_rms`,
  `scale_by_elementwise_rms`, `keep_matrix_norm`, `scale_to_rms`, `clip_by_rms`,
  `scale_by_param_rms`, `record_spectra`, `qk_clip` (QK-clip after the step, with `QKClip`
  and ``optorth.nn.capture_max_logits``).
- **Matrices and routing**: `MatrixSpec`, `route`, `describe_routing`,
  `nnx_attention_rules`.
- **Newton–Schulz and schedules**: `newton_schulz`, `validate_schedule`, `fit_schedule`,
  `recorded_spectra`; the table a state runs: `coefficients`; **checkpoints**:
  `reconcile_coefficients`.

Submodules hold the rest: `optorth.ns` (engine, presets, generators, fitting),
`optorth.matrices` (specs, routing, grouping, sharding), `optorth.norms`,
`optorth.blocks`, `optorth.optimizers`, `optorth.checkpoint`,
`optorth.contrib` (neighbouring methods from the literature), `optorth.nn`
(orthogonal fine-tuning adapters for Flax NNX: OFTv2, HRA, Givens).

Example:
  >>> import jax, jax.numpy as jnp, optax, optorth
  >>> params = {"embed": jnp.ones((16, 8)), "w": jnp.ones((8, 32)) / 8, "b": jnp.zeros(32)}
  >>> tx = optorth.muon(learning_rate=0.02, ns=optorth.NewtonSchulz("polar_express5"))
  >>> state = tx.init(params)
  >>> loss = lambda p: jnp.sum(jnp.tanh(jnp.ones((2, 16)) @ p["embed"] @ p["w"] + p["b"]))
  >>> updates, state = tx.update(jax.grad(loss)(params), state, params)
  >>> params = optax.apply_updates(params, updates)
"""

from optorth import blocks as blocks
from optorth import checkpoint as checkpoint
from optorth import contrib as contrib
from optorth import matrices as matrices
from optorth import nn as nn
from optorth import norms as norms
from optorth import ns as ns
from optorth import optimizers as optimizers
from optorth.blocks import clip_by_rms as clip_by_rms
from optorth.blocks import coefficients as coefficients
from optorth.blocks import dualize as dualize
from optorth.blocks import keep_matrix_norm as keep_matrix_norm
from optorth.blocks import orthogonalize as orthogonalize
from optorth.blocks import record_spectra as record_spectra
from optorth.blocks import recorded_spectra as recorded_spectra
from optorth._distribution import Distribution as Distribution
from optorth.blocks import scale_by_elementwise_rms as scale_by_elementwise_rms
from optorth.blocks import scale_by_factored_rms as scale_by_factored_rms
from optorth.blocks import scale_by_momentum as scale_by_momentum
from optorth.blocks import scale_by_neuron_rms as scale_by_neuron_rms
from optorth.blocks import scale_by_param_rms as scale_by_param_rms
from optorth.blocks import scale_by_shape as scale_by_shape
from optorth.blocks import scale_to_rms as scale_to_rms
from optorth.blocks import soft_threshold as soft_threshold
from optorth.blocks import QKClip as QKClip
from optorth.blocks import WeightDecay as WeightDecay
from optorth.blocks import qk_clip as qk_clip
from optorth.checkpoint import reconcile_coefficients as reconcile_coefficients
from optorth.matrices._report import describe_routing as describe_routing
from optorth.matrices._routing import nnx_attention_rules as nnx_attention_rules
from optorth.matrices._routing import route as route
from optorth.matrices._specs import MatrixSpec as MatrixSpec
from optorth.ns import NewtonSchulz as NewtonSchulz
from optorth.ns import OnlineLearning as OnlineLearning
from optorth.ns import Schedule as Schedule
from optorth.ns import fit_schedule as fit_schedule
from optorth.ns import newton_schulz as newton_schulz
from optorth.ns import validate_schedule as validate_schedule
from optorth.optimizers import adafactor as adafactor
from optorth.optimizers import adamuon as adamuon
from optorth.optimizers import auon as auon
from optorth.optimizers import factored_muon as factored_muon
from optorth.optimizers import hybrid_auon as hybrid_auon
from optorth.optimizers import muon as muon
from optorth.optimizers import normalized_sgdm as normalized_sgdm
from optorth.optimizers import normuon as normuon
from optorth.optimizers import root as root
from optorth.optimizers import signum as signum
from optorth.optimizers import trust_region as trust_region
from optorth.optimizers import turbo_muon as turbo_muon

__version__ = "0.1.0"

__all__ = [
    # ready optimizers
    "muon", "turbo_muon", "root", "normuon", "adamuon", "factored_muon", "trust_region",
    "normalized_sgdm", "signum", "auon", "hybrid_auon", "adafactor",
    # configuration
    "NewtonSchulz", "OnlineLearning", "Schedule", "Distribution", "WeightDecay", "QKClip",
    # blocks
    "scale_by_momentum", "soft_threshold", "orthogonalize", "dualize", "scale_by_shape",
    "scale_by_factored_rms", "scale_by_neuron_rms", "scale_by_elementwise_rms",
    "keep_matrix_norm", "scale_to_rms", "clip_by_rms", "scale_by_param_rms", "record_spectra",
    "qk_clip",
    # matrices and routing
    "MatrixSpec", "route", "describe_routing", "nnx_attention_rules",
    # Newton–Schulz, schedules, checkpoints
    "newton_schulz", "validate_schedule", "fit_schedule", "recorded_spectra",
    "reconcile_coefficients", "coefficients",
]
