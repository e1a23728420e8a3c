"""Newton–Schulz orthogonalization and its coefficient schedules.

- The engine: `newton_schulz` with a `NewtonSchulz` configuration (schedule,
  steps, normalization, iteration form, compute dtype, online learning), validated at
  construction; `polar` and `polar_numpy` (SVD references); `choose_method`;
  `newton_schulz_table`, the iteration on a raw (possibly traced) table, and
  `default_restart`, the Gram iteration's restart period.
- Schedules as data: `Schedule`, the presets (`PRESETS`, `preset_names`,
  `resolve_schedule`, `root_schedule`), minimax generators
  (`polar_express_schedule`, `cans_schedule`) and the exact scalar oracle
  `validate_schedule` (`ScheduleReport`).
- Learned coefficients: offline `fit_schedule` of an objective (`ScalarObjective`,
  `BandObjective`, `MatrixObjective`; `FitError`, `sample_spectra`, `OBJECTIVES`,
  `SPECTRUM_FAMILIES`) and online
  `OnlineLearning` / `refine_coefficients` (`RefineInfo`).
- `coefficient_fingerprint` and `STATE_VERSION` identify a table in a state.

Example:
  >>> import optorth.ns as ns
  >>> ns.validate_schedule("jordan").ok
  True
"""

from optorth.ns._config import NewtonSchulz as NewtonSchulz
from optorth.ns._config import newton_schulz as newton_schulz
from optorth.ns._engine import GRAM_CROSSOVER as GRAM_CROSSOVER
from optorth.ns._engine import choose_method as choose_method
from optorth.ns._engine import default_restart as default_restart
from optorth.ns._engine import newton_schulz_table as newton_schulz_table
from optorth.ns._engine import polar as polar
from optorth.ns._engine import polar_numpy as polar_numpy
from optorth.ns._fingerprint import STATE_VERSION as STATE_VERSION
from optorth.ns._fingerprint import coefficient_fingerprint as coefficient_fingerprint
from optorth.ns._fit_objectives import BandObjective as BandObjective
from optorth.ns._fit_objectives import MatrixObjective as MatrixObjective
from optorth.ns._fit_objectives import ScalarObjective as ScalarObjective
from optorth.ns._generators import cans_schedule as cans_schedule
from optorth.ns._generators import polar_express_schedule as polar_express_schedule
from optorth.ns._learn import OBJECTIVES as OBJECTIVES
from optorth.ns._learn import SPECTRUM_FAMILIES as SPECTRUM_FAMILIES
from optorth.ns._learn import FitError as FitError
from optorth.ns._learn import fit_schedule as fit_schedule
from optorth.ns._learn import sample_spectra as sample_spectra
from optorth.ns._online import OnlineLearning as OnlineLearning
from optorth.ns._online import RefineInfo as RefineInfo
from optorth.ns._online import refine_coefficients as refine_coefficients
from optorth.ns._presets import PER_SHAPE_PRESETS as PER_SHAPE_PRESETS
from optorth.ns._presets import PRESETS as PRESETS
from optorth.ns._presets import preset_names as preset_names
from optorth.ns._presets import resolve_schedule as resolve_schedule
from optorth.ns._presets import root_schedule as root_schedule
from optorth.ns._schedule import Schedule as Schedule
from optorth.ns._validate import ScheduleReport as ScheduleReport
from optorth.ns._validate import validate_schedule as validate_schedule

__all__ = [
    "GRAM_CROSSOVER", "OBJECTIVES", "PER_SHAPE_PRESETS", "PRESETS", "SPECTRUM_FAMILIES",
    "STATE_VERSION", "BandObjective", "FitError", "MatrixObjective", "NewtonSchulz",
    "OnlineLearning", "RefineInfo", "ScalarObjective", "Schedule", "ScheduleReport",
    "cans_schedule", "choose_method", "coefficient_fingerprint", "default_restart",
    "fit_schedule", "newton_schulz", "newton_schulz_table", "polar", "polar_express_schedule",
    "polar_numpy", "preset_names", "refine_coefficients", "resolve_schedule", "root_schedule",
    "sample_spectra", "validate_schedule",
]
