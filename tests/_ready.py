"""Every ready optimizer of optorth, with settings for the small models of the tests.

``build(name, rules, fallback=None)`` returns the optimizer; ``fallback`` replaces the
AdamW (or Adafactor) path of the routed optimizers, e.g. ``optax.set_to_zero()`` to freeze
embeddings and heads so that only the matrix path can reduce the loss. Without it the routed
optimizers (except ``factored_muon``, whose fallback is Adafactor) get `adamw`, the
default fallback's AdamW with a learning rate of 3e-3. Learning rates are each optimizer's own
default where it has one, otherwise a value that gives an update RMS of the same order as
Muon's (normalized SGD: Frobenius-norm steps; Signum: unit entries).
Shared by test_nnx, test_linen, test_checkpoint, test_bad_inputs, test_conformance and
test_surface; `tiered` keeps one optimizer per code path (``FAST``, or ``STATE_KINDS`` where the
state tree is what differs) in the fast tier.
"""

from __future__ import annotations

import optax
import pytest

import optorth

#: name → (factory, keyword arguments); ``rules`` and ``fallback`` are added by `build`.
READY = {
    "muon": (optorth.muon, dict(learning_rate=0.02)),
    # Newton–Schulz coefficients learned online, kept in the optimizer state.
    "muon_online": (optorth.muon, dict(learning_rate=0.02, ns=optorth.NewtonSchulz(
        learn=optorth.OnlineLearning(every=2, inner_steps=2)))),
    "turbo_muon": (optorth.turbo_muon, dict(learning_rate=0.02)),
    "root": (optorth.root, dict(learning_rate=0.02)),
    "auon": (optorth.auon, dict(learning_rate=0.24)),
    "hybrid_auon": (optorth.hybrid_auon, dict(learning_rate=0.24)),
    "normalized_sgdm": (optorth.normalized_sgdm, dict(learning_rate=0.5)),
    "signum": (optorth.signum, dict(learning_rate=0.005)),
    "trust_region": (optorth.trust_region, dict(learning_rate=0.05)),
    "normuon": (optorth.normuon, dict(learning_rate=0.02)),
    "adamuon": (optorth.adamuon, dict(learning_rate=0.02)),
    "factored_muon": (optorth.factored_muon, dict(learning_rate=0.02)),
    "adafactor": (optorth.adafactor, dict()),
}
NAMES = tuple(READY)
#: One optimizer per code path, for the fast test tier (the others are marked ``slow``):
#: Newton–Schulz (fixed and learned online), ROOT's soft threshold, a norm's lmo (``dualize``),
#: NorMuon's and Adafactor's second moments after Newton–Schulz, unrouted Adafactor.
FAST = ("muon", "muon_online", "root", "signum", "normuon", "factored_muon", "adafactor")
#: One optimizer per shape of state tree, for the fast tier of tests about what carries, masks
#: or wraps the state rather than how the update is computed (Flax's nnx and linen wrappers,
#: integer leaves): routed with the AdamW fallback, routed with the Adafactor fallback, unrouted.
STATE_KINDS = ("muon", "factored_muon", "adafactor")


def tiered(names=NAMES, fast=FAST) -> list:
    """``names`` as ``pytest.mark.parametrize`` values: those in ``fast`` plain, the others
    marked ``slow``."""
    return [name if name in fast else pytest.param(name, marks=pytest.mark.slow)
            for name in names]
#: Optimizers without routing (every leaf takes the same path; ``rules`` only say how a leaf
#: becomes matrices).
UNROUTED = ("adafactor",)


def adamw(learning_rate=3e-3, **kwargs) -> optax.GradientTransformation:
    """The default fallback's AdamW (b1 0.9, b2 0.95, eps 1e-10, no weight decay) at
    ``learning_rate``; ``kwargs`` override optax.adamw's other arguments."""
    return optax.adamw(learning_rate, **{"b1": 0.9, "b2": 0.95, "eps": 1e-10,
                                         "weight_decay": 0.0, **kwargs})


def build(name: str, rules=None, *, fallback: optax.GradientTransformation | None = None,
          lr_scale: float = 1.0, **overrides) -> optax.GradientTransformation:
    """The ready optimizer ``name`` with routing ``rules`` and an optional ``fallback``.

    ``lr_scale`` multiplies the matrix-path learning rate (not Adafactor's relative step).
    """
    factory, kwargs = READY[name]
    kwargs = {**kwargs, **overrides}
    if "learning_rate" in kwargs:
        kwargs["learning_rate"] = kwargs["learning_rate"] * lr_scale
    kwargs["rules"] = rules  # Adafactor: how leaves become matrices; the others: routing too
    if name not in UNROUTED:
        if fallback is not None:
            kwargs["fallback"] = fallback
        elif name != "factored_muon":
            kwargs.setdefault("fallback", adamw())
    return factory(**kwargs)
