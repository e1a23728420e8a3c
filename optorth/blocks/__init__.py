"""The ``optax.GradientTransformation`` blocks that ready optimizers chain, in pipeline order.

- momentum: `scale_by_momentum` (`MomentumState`);
- outliers: `soft_threshold` (ROOT);
- dualize under a norm: `orthogonalize` (spectral norm, Newton–Schulz table in
  `OrthogonalizeState`), `dualize` (any `optorth.norms.Norm`);
- shape scale: `scale_by_shape`;
- second moments: `scale_by_factored_rms` (Adafactor's row/column statistics,
  `ScaleByFactoredRMSState`), `scale_by_neuron_rms` (NorMuon),
  `scale_by_elementwise_rms` (AdaMuon), `keep_matrix_norm`, `scale_to_rms`,
  `clip_by_rms`, `scale_by_param_rms`;
- weight decay: `decay_weights` under a `WeightDecay` (decoupled, cautious,
  coupled to the learning rate or not);
- after the step: `qk_clip` (QK-clip / MuonClip, `QKClip`, `QKLeaf`);
- reading a state: `coefficients` (the Newton–Schulz table an `orthogonalize` block runs);
- diagnostics: `record_spectra` / `recorded_spectra` (`SpectraState`);
  `ns_telemetry` (per-leaf orthogonality error and dtype of Newton–Schulz, kept when
  ``NewtonSchulz(telemetry=k)``);
- `with_compute_dtype`: run any transformation in another dtype.

Every block works per matrix: ``specs`` says how a leaf becomes matrices
(`optorth.matrices.resolve_specs`; ``None`` is the default routing).

Example:
  >>> import optax, optorth
  >>> tx = optax.chain(optorth.scale_by_momentum(0.95), optorth.orthogonalize(),
  ...                  optorth.scale_by_shape("keller"), optax.scale_by_learning_rate(0.02))
"""

from optorth.blocks._block_rms import clip_by_rms as clip_by_rms
from optorth.blocks._block_rms import scale_by_param_rms as scale_by_param_rms
from optorth.blocks._coefficients import coefficients as coefficients
from optorth.blocks._compute_dtype import with_compute_dtype as with_compute_dtype
from optorth.blocks._dualize import dualize as dualize
from optorth.blocks._factored import ScaleByFactoredRMSState as ScaleByFactoredRMSState
from optorth.blocks._factored import scale_by_factored_rms as scale_by_factored_rms
from optorth.blocks._momentum import MomentumState as MomentumState
from optorth.blocks._momentum import scale_by_momentum as scale_by_momentum
from optorth.blocks._ns_telemetry import NSTelemetry as NSTelemetry
from optorth.blocks._ns_telemetry import ns_telemetry as ns_telemetry
from optorth.blocks._orthogonalize import OrthogonalizeState as OrthogonalizeState
from optorth.blocks._orthogonalize import orthogonalize as orthogonalize
from optorth.blocks._qk_clip import QKClip as QKClip
from optorth.blocks._qk_clip import QKClipState as QKClipState
from optorth.blocks._qk_clip import QKLeaf as QKLeaf
from optorth.blocks._qk_clip import qk_clip as qk_clip
from optorth.blocks._second_moments import ScaleByElementwiseRMSState as ScaleByElementwiseRMSState
from optorth.blocks._second_moments import ScaleByNeuronRMSState as ScaleByNeuronRMSState
from optorth.blocks._second_moments import keep_matrix_norm as keep_matrix_norm
from optorth.blocks._second_moments import scale_by_elementwise_rms as scale_by_elementwise_rms
from optorth.blocks._second_moments import scale_by_neuron_rms as scale_by_neuron_rms
from optorth.blocks._second_moments import scale_to_rms as scale_to_rms
from optorth.blocks._shape_scale import scale_by_shape as scale_by_shape
from optorth.blocks._soft_threshold import soft_threshold as soft_threshold
from optorth.blocks._spectra import SpectraState as SpectraState
from optorth.blocks._spectra import matrix_spectrum as matrix_spectrum
from optorth.blocks._spectra import record_spectra as record_spectra
from optorth.blocks._spectra import recorded_spectra as recorded_spectra
from optorth.blocks._weight_decay import WeightDecay as WeightDecay
from optorth.blocks._weight_decay import decay_weights as decay_weights

__all__ = [
    "MomentumState", "NSTelemetry", "OrthogonalizeState", "QKClip", "QKClipState", "QKLeaf",
    "ScaleByElementwiseRMSState", "ScaleByFactoredRMSState", "ScaleByNeuronRMSState",
    "SpectraState", "WeightDecay", "clip_by_rms", "coefficients", "decay_weights", "dualize",
    "keep_matrix_norm", "matrix_spectrum", "ns_telemetry", "orthogonalize", "qk_clip",
    "record_spectra", "recorded_spectra", "scale_by_elementwise_rms", "scale_by_factored_rms",
    "scale_by_momentum", "scale_by_neuron_rms", "scale_by_param_rms", "scale_by_shape",
    "scale_to_rms", "soft_threshold", "with_compute_dtype",
]
