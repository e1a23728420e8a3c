"""optorth: composable optax transformations for orthogonalized and norm-based optimizers."""

# --- Newton–Schulz engine and coefficient schedules (issue: foundation) ---
from optorth.ns._engine import choose_method as choose_method
from optorth.ns._engine import newton_schulz as newton_schulz
from optorth.ns._engine import polar as polar
from optorth.ns._engine import polar_numpy as polar_numpy
from optorth.ns._presets import PRESETS as PRESETS
from optorth.ns._presets import preset_names as preset_names
from optorth.ns._presets import resolve_schedule as resolve_schedule
from optorth.ns._presets import root_schedule as root_schedule
from optorth.ns._schedule import Schedule as Schedule

# --- coefficient schedules: scalar oracle and generators (issue 2) ---
from optorth.ns._generators import cans_schedule as cans_schedule
from optorth.ns._generators import polar_express_schedule as polar_express_schedule
from optorth.ns._validate import ScheduleReport as ScheduleReport
from optorth.ns._validate import validate_schedule as validate_schedule

# --- factored second moments and Adafactor (issue 5) ---
from optorth.optimizers._adafactor import adafactor as adafactor
from optorth.optimizers._adafactor import relative_step_schedule as relative_step_schedule
from optorth.blocks._block_rms import clip_by_rms as clip_by_rms
from optorth.blocks._block_rms import scale_by_param_rms as scale_by_param_rms
from optorth.blocks._factored import ScaleByFactoredRMSState as ScaleByFactoredRMSState
from optorth.blocks._factored import scale_by_factored_rms as scale_by_factored_rms
from optorth.optimizers._second_moment_muon import adamuon as adamuon
from optorth.optimizers._second_moment_muon import factored_muon as factored_muon
from optorth.optimizers._second_moment_muon import normuon as normuon
from optorth.blocks._second_moments import ScaleByElementwiseRMSState as ScaleByElementwiseRMSState
from optorth.blocks._second_moments import ScaleByNeuronRMSState as ScaleByNeuronRMSState
from optorth.blocks._second_moments import keep_matrix_norm as keep_matrix_norm
from optorth.blocks._second_moments import scale_by_elementwise_rms as scale_by_elementwise_rms
from optorth.blocks._second_moments import scale_by_neuron_rms as scale_by_neuron_rms
from optorth.blocks._second_moments import scale_to_rms as scale_to_rms

# --- matrices, routing, dualizers and the Muon family (issue 3) ---
from optorth.optimizers._alias import auon as auon
from optorth.optimizers._alias import hybrid_auon as hybrid_auon
from optorth.optimizers._alias import muon as muon
from optorth.optimizers._alias import normalized_sgdm as normalized_sgdm
from optorth.optimizers._alias import root as root
from optorth.optimizers._alias import signum as signum
from optorth.optimizers._alias import trust_region as trust_region
from optorth.optimizers._alias import turbo_muon as turbo_muon
from optorth.optimizers._alias import with_compute_dtype as with_compute_dtype
from optorth.blocks._momentum import MomentumState as MomentumState
from optorth.blocks._momentum import scale_by_momentum as scale_by_momentum
from optorth.norms._functions import NORMS as NORMS
from optorth.norms._functions import Norm as Norm
from optorth.norms._functions import dual_norm_auon as dual_norm_auon
from optorth.norms._functions import dual_norm_column as dual_norm_column
from optorth.norms._functions import dual_norm_frobenius as dual_norm_frobenius
from optorth.norms._functions import dual_norm_hybrid_auon as dual_norm_hybrid_auon
from optorth.norms._functions import dual_norm_row as dual_norm_row
from optorth.norms._functions import dual_norm_sign as dual_norm_sign
from optorth.norms._functions import dual_norm_spectral as dual_norm_spectral
from optorth.norms._functions import get_norm as get_norm
from optorth.norms._functions import lmo_auon as lmo_auon
from optorth.norms._functions import lmo_column as lmo_column
from optorth.norms._functions import lmo_frobenius as lmo_frobenius
from optorth.norms._functions import lmo_hybrid_auon as lmo_hybrid_auon
from optorth.norms._functions import lmo_row as lmo_row
from optorth.norms._functions import lmo_sign as lmo_sign
from optorth.norms._functions import lmo_spectral as lmo_spectral
from optorth.matrices._routing import BIAS_PATTERNS as BIAS_PATTERNS
from optorth.matrices._routing import EMBEDDING_PATTERNS as EMBEDDING_PATTERNS
from optorth.matrices._routing import HEAD_PATTERNS as HEAD_PATTERNS
from optorth.matrices._routing import Decision as Decision
from optorth.matrices._routing import describe_routing as describe_routing
from optorth.matrices._routing import nnx_attention_rules as nnx_attention_rules
from optorth.matrices._routing import route as route
from optorth.matrices._routing import routing_decisions as routing_decisions
from optorth.matrices._specs import MatrixSpec as MatrixSpec
from optorth.matrices._specs import map_matrices as map_matrices
from optorth.blocks._orthogonalize import OrthogonalizeState as OrthogonalizeState
from optorth.blocks._dualize import dualize as dualize
from optorth.blocks._orthogonalize import orthogonalize as orthogonalize
from optorth.matrices._resolve import resolve_specs as resolve_specs
from optorth.matrices._resolve import route_specs as route_specs
from optorth.blocks._shape_scale import scale_by_shape as scale_by_shape
from optorth.blocks._soft_threshold import soft_threshold as soft_threshold

# --- learned coefficients: offline fits, online refinement, recorded spectra (issue 4) ---
from optorth.ns._learn import OBJECTIVES as OBJECTIVES
from optorth.ns._learn import SPECTRUM_FAMILIES as SPECTRUM_FAMILIES
from optorth.ns._learn import FitError as FitError
from optorth.ns._learn import fit_schedule as fit_schedule
from optorth.ns._learn import sample_spectra as sample_spectra
from optorth.ns._online import OnlineLearning as OnlineLearning
from optorth.ns._online import RefineInfo as RefineInfo
from optorth.ns._online import refine_coefficients as refine_coefficients
from optorth.blocks._spectra import SpectraState as SpectraState
from optorth.blocks._spectra import matrix_spectrum as matrix_spectrum
from optorth.blocks._spectra import record_spectra as record_spectra
from optorth.blocks._spectra import recorded_spectra as recorded_spectra

# --- checkpoints: coefficient fingerprints and the restore policy (issue 7) ---
from optorth.ns._fingerprint import STATE_VERSION as STATE_VERSION
from optorth.ns._fingerprint import coefficient_fingerprint as coefficient_fingerprint
from optorth.checkpoint import coefficient_states as coefficient_states
from optorth.checkpoint import reconcile_coefficients as reconcile_coefficients

# --- grouped batched orthogonalization and sharding (issue 6) ---
from optorth.matrices._grouping import describe_groups as describe_groups
from optorth.matrices._grouping import map_matrix_groups as map_matrix_groups
from optorth.matrices._sharding import sharded_map_matrix_groups as sharded_map_matrix_groups

__version__ = "0.1.0"
