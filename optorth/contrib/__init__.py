"""Neighbouring methods from the literature, as chainable optax transformations.

Gradient surgery, orthogonal projection for continual learning, adaptive step sizes and
hyperparameter scaling rules that users of orthogonalized optimizers reach for. Each is an
``optax.GradientTransformation`` (or ``GradientTransformationExtraArgs`` where it needs the
loss value or a second gradient) that chains with the rest of optorth and optax.

Offered:

* `bloop` (`BloopState`): gradient surgery, the auxiliary gradient projected
  orthogonally to an EMA of the main gradient (Hsieh et al. 2024, arXiv 2402.02998).
* `diffgrad`, `scale_by_diffgrad` (`DiffGradState`): Adam damped by the
  friction sigmoid(|g_{t−1} − g_t|) (Dubey et al. 2019, arXiv 1909.11015).
* `sqrt_scaling_rule` (`ScaledHyperparams`): Adam's hyperparameters for a batch
  size × κ by the square-root rule (Malladi et al. 2022, arXiv 2205.10287); no Muon analogue
  is derived (its docstring says why).
* `aegd` (`AEGDState`): gradient descent scaled by a per-coordinate energy that
  never increases, with an optional preconditioner (Liu & Tian, arXiv 2010.05109).
* `polyak_momentum` (`PolyakMomentumState`): heavy ball with the generalized
  Polyak step size, ALR-MAG / ALR-SMAG (Wang, Johansson & Zhang 2023, arXiv 2305.12939).
* `rogo` (`RogoState`), `add_task_subspace`, `relax_subspace`:
  continual learning by gradient projection, GPM's frozen input subspaces with ROGO's
  restricted relaxation (Saha et al. 2021, arXiv 2103.09762; Yang et al. 2023,
  arXiv 2301.12131).
"""

from optorth.contrib._aegd import AEGDState, aegd
from optorth.contrib._bloop import BloopState, bloop
from optorth.contrib._diffgrad import DiffGradState, diffgrad, scale_by_diffgrad
from optorth.contrib._polyak import PolyakMomentumState, polyak_momentum
from optorth.contrib._rogo import RogoState, add_task_subspace, relax_subspace, rogo
from optorth.contrib._scaling_rules import ScaledHyperparams, sqrt_scaling_rule

__all__: list[str] = [
    "AEGDState",
    "BloopState",
    "DiffGradState",
    "PolyakMomentumState",
    "RogoState",
    "ScaledHyperparams",
    "add_task_subspace",
    "aegd",
    "bloop",
    "diffgrad",
    "polyak_momentum",
    "relax_subspace",
    "rogo",
    "scale_by_diffgrad",
    "sqrt_scaling_rule",
]
