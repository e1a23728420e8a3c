"""optorth: composable optax transformations for orthogonalized and norm-based optimizers."""

# --- Newton–Schulz engine and coefficient schedules (issue: foundation) ---
from optorth._newton_schulz import choose_method as choose_method
from optorth._newton_schulz import newton_schulz as newton_schulz
from optorth._newton_schulz import polar as polar
from optorth._newton_schulz import polar_numpy as polar_numpy
from optorth._presets import PRESETS as PRESETS
from optorth._presets import preset_names as preset_names
from optorth._presets import resolve_schedule as resolve_schedule
from optorth._presets import root_schedule as root_schedule
from optorth._schedule import Schedule as Schedule

__version__ = "0.1.0"
