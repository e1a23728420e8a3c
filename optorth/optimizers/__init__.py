"""Ready optimizers: each a short chain of `optorth.blocks` inside ``optax.partition``.

Hidden matrices (routed by `optorth.route`) take the optimizer's own chain; every other
leaf (embeddings, output heads, biases, norm gains) takes ``fallback``, by default
`default_fallback` (a true AdamW). Integer leaves get a zero update.

- Muon family: `muon`, `turbo_muon`, `root`;
- with second moments: `normuon`, `adamuon`, `factored_muon`;
- one norm's trust-region step: `trust_region` (any `optorth.norms.Norm`),
  `normalized_sgdm`, `signum`, `auon`, `hybrid_auon`;
- `adafactor` (and its `relative_step_schedule`).

Reading a routed ready optimizer's state without spelling out its nesting: `matrix_state`
(the matrix path's block states, in pipeline order) and `fallback_state`; its Newton–Schulz
table: `optorth.coefficients`.

Example:
  >>> import optorth
  >>> tx = optorth.optimizers.muon(learning_rate=0.02)
"""

from optorth.optimizers._adafactor import adafactor as adafactor
from optorth.optimizers._adafactor import relative_step_schedule as relative_step_schedule
from optorth.optimizers._assemble import default_fallback as default_fallback
from optorth.optimizers._muon import muon as muon
from optorth.optimizers._muon import root as root
from optorth.optimizers._muon import turbo_muon as turbo_muon
from optorth.optimizers._norm_based import auon as auon
from optorth.optimizers._norm_based import hybrid_auon as hybrid_auon
from optorth.optimizers._norm_based import normalized_sgdm as normalized_sgdm
from optorth.optimizers._norm_based import signum as signum
from optorth.optimizers._norm_based import trust_region as trust_region
from optorth.optimizers._second_moment_muon import adamuon as adamuon
from optorth.optimizers._second_moment_muon import factored_muon as factored_muon
from optorth.optimizers._second_moment_muon import normuon as normuon
from optorth.optimizers._state import fallback_state as fallback_state
from optorth.optimizers._state import matrix_state as matrix_state

#: Every ready optimizer, by name.
READY = ("muon", "turbo_muon", "root", "normuon", "adamuon", "factored_muon", "trust_region",
         "normalized_sgdm", "signum", "auon", "hybrid_auon", "adafactor")

__all__ = ["READY", "adafactor", "adamuon", "auon", "default_fallback", "factored_muon",
           "fallback_state", "hybrid_auon", "matrix_state", "muon", "normalized_sgdm", "normuon",
           "relative_step_schedule", "root", "signum", "trust_region", "turbo_muon"]
