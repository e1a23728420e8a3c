"""What `optorth.fit_schedule` minimizes: one frozen, validated configuration per objective.

The math of each loss is in ``optorth.ns._objectives``; these objects hold only its knobs, so
that `fit_schedule` takes the data and the optimization settings and one objective object,
not the union of every objective's flags.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, ClassVar

from optorth._checks import (
    check_choice,
    check_dtype,
    check_nonnegative,
    check_positive,
    check_positive_int,
)


def _check_weights(who: str, mean_weight, worst_weight) -> None:
    check_nonnegative(who, "mean_weight", mean_weight)
    check_nonnegative(who, "worst_weight", worst_weight)
    if not float(mean_weight) + float(worst_weight) > 0:
        raise ValueError(f"{who}: mean_weight and worst_weight are both 0; nothing to fit.")


@dataclasses.dataclass(frozen=True)
class ScalarObjective:
    """w_mean · mean|φ(σ) − 1| + w_max · max|φ(σ) − 1| over the data's σ (exact arithmetic).

    The max is exact on the data's interval; penalties forbid sign flips and escapes past a
    repelling fixed point.

    Attributes:
      mean_weight: weight of the mean error (≥ 0).
      worst_weight: weight of the worst-case error (≥ 0; not both 0).

    Example:
      >>> import optorth
      >>> optorth.ns.ScalarObjective(worst_weight=0.2)
      ScalarObjective(mean_weight=1.0, worst_weight=0.2)
    """

    name: ClassVar[str] = "scalar"
    mean_weight: float = 1.0
    worst_weight: float = 1.0

    def __post_init__(self):
        _check_weights("optorth.ns.ScalarObjective", self.mean_weight, self.worst_weight)


@dataclasses.dataclass(frozen=True)
class BandObjective:
    """Maximize φ′(0) = ∏a subject to φ(σ) ∈ [1 − δ, 1 + δ] on the data's interval.

    The band is a penalty during the fit and a hard check after it: `optorth.ns.FitError`
    when no table meets it.

    Attributes:
      delta: the band's half-width δ (> 0).

    Example:
      >>> import optorth
      >>> optorth.ns.BandObjective(delta=0.5)
      BandObjective(delta=0.5)
    """

    name: ClassVar[str] = "band"
    delta: float = 0.3

    def __post_init__(self):
        check_positive("optorth.ns.BandObjective", "delta", self.delta)


@dataclasses.dataclass(frozen=True)
class MatrixObjective:
    """Mean and smooth-max of |u_iᵀ NS(X) v_i − 1| over random matrices run through
    ``optorth.newton_schulz`` in ``dtype`` (its round-off is learned).

    Needs ``fit_schedule(shape=(m, n))``; starts from the scalar fit on the same spectra
    unless ``init`` is given.

    Attributes:
      dtype: compute dtype of the iteration (``None``: float32; e.g. ``"bfloat16"``).
      num_matrices: matrices per fit (≥ 1).
      mean_weight: weight of the mean error (≥ 0).
      worst_weight: weight of the smooth worst-case error (≥ 0; not both 0).

    Example:
      >>> import optorth
      >>> optorth.ns.MatrixObjective(dtype="bfloat16", num_matrices=2)
      MatrixObjective(dtype='bfloat16', num_matrices=2, mean_weight=1.0, worst_weight=1.0)
    """

    name: ClassVar[str] = "matrix"
    dtype: Any = None
    num_matrices: int = 4
    mean_weight: float = 1.0
    worst_weight: float = 1.0

    def __post_init__(self):
        who = "optorth.ns.MatrixObjective"
        check_dtype(who, "dtype", self.dtype)
        check_positive_int(who, "num_matrices", self.num_matrices)
        _check_weights(who, self.mean_weight, self.worst_weight)


Objective = ScalarObjective | BandObjective | MatrixObjective
#: Objective name -> its configuration class (``objective="band"`` is ``BandObjective()``).
OBJECTIVE_TYPES = {cls.name: cls for cls in (ScalarObjective, BandObjective, MatrixObjective)}


def as_objective(who: str, objective, legacy: dict[str, Any]) -> Objective:
    """``objective`` (a name or an objective object) with the keywords `fit_schedule` took
    before the objects (``delta=``, ``mean_weight=``, ...) folded in, each with a
    ``DeprecationWarning`` that names its replacement."""
    if isinstance(objective, str):
        check_choice(who, "objective", objective, tuple(OBJECTIVE_TYPES))
        objective = OBJECTIVE_TYPES[objective]()
    if not isinstance(objective, tuple(OBJECTIVE_TYPES.values())):
        raise ValueError(f"{who}: objective must be one of {tuple(OBJECTIVE_TYPES)} or an "
                         f"optorth.ns.ScalarObjective / BandObjective / MatrixObjective; got "
                         f"{objective!r}.")
    if not legacy:
        return objective
    fields = {field.name for field in dataclasses.fields(objective)}
    for key in legacy:
        owner = [cls.__name__ for cls in OBJECTIVE_TYPES.values()
                 if key in {f.name for f in dataclasses.fields(cls)}]
        if not owner:
            raise TypeError(f"{who}() got an unexpected keyword argument {key!r}")
        if key not in fields:
            raise ValueError(f"{who}: {key}={legacy[key]!r} only affects objective="
                             f"optorth.ns.{owner[0]}; pass objective=optorth.ns.{owner[0]}("
                             f"{key}=...).")
    kind = type(objective).__name__
    given = ", ".join(f"{key}={value!r}" for key, value in legacy.items())
    warnings.warn(f"{who}({given}) is deprecated: pass objective=optorth.ns.{kind}({given}).",
                  DeprecationWarning, stacklevel=3)
    return dataclasses.replace(objective, **legacy)
