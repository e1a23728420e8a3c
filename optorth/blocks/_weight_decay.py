"""Weight decay as one validated object: its rate, whether it is cautious, whether the
learning rate multiplies it.

With u the update direction (what the learning rate multiplies), η the learning rate and
m = 1[u ⊙ x ≥ 0] the cautious mask (all ones when not cautious):

    coupled (AdamW's decoupled decay):   x ← x − η (u + λ m ⊙ x)
    independent of the learning rate:    x ← x − η u − λ m ⊙ x

A plain float ``weight_decay=λ`` is ``WeightDecay(λ)``: coupled, not cautious, exactly
``optax.add_decayed_weights``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import optax

from optorth._checks import check_nonnegative


@dataclasses.dataclass(frozen=True)
class WeightDecay:
    """Weight decay's rate and mode, validated where it is built (static under ``jax.jit``).

    Cautious weight decay (Chen et al.) decays only the coordinates where the update and the
    parameter share a sign; it needs no new hyperparameter:

        x ← x − η (u + λ · 1[u ⊙ x ≥ 0] ⊙ x)

    Attributes:
      rate: λ, a finite number ≥ 0.
      cautious: decay only where u ⊙ x ≥ 0 (u the update before the learning rate).
      coupled: multiply the decay by the learning rate η (``True``, AdamW's convention) or
        not (``False``: x ← x − η u − λ m ⊙ x, the decay independent of η and its schedule;
        the mask then reads the sign of η u, the same as u's wherever η > 0).

    Example:
      >>> import optorth
      >>> tx = optorth.muon(weight_decay=optorth.WeightDecay(0.1, cautious=True))

    References:
      Chen et al., "Cautious Weight Decay" (arXiv 2510.12402).
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (arXiv 1711.05101).
    """

    rate: float = 0.0
    cautious: bool = False
    coupled: bool = True

    def __post_init__(self):
        rate = self.rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (
                math.isfinite(rate) and rate >= 0):
            raise ValueError(f"WeightDecay: rate must be a finite number >= 0 (a Python "
                             f"float); got {rate!r}. To schedule or inject the rate, pass a "
                             f"plain float weight_decay=... instead.")
        for name in ("cautious", "coupled"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"WeightDecay: {name} must be True or False; got "
                                 f"{getattr(self, name)!r}.")
        object.__setattr__(self, "rate", float(rate))


def as_weight_decay(who: str, weight_decay) -> WeightDecay | object:
    """``weight_decay`` checked: a `WeightDecay`, or a number ≥ 0 (possibly traced,
    as ``optax.inject_hyperparams`` passes it) returned as it is."""
    if isinstance(weight_decay, WeightDecay):
        return weight_decay
    return check_nonnegative(who, "weight_decay", weight_decay)


def cautious_mask(direction, params):
    """1[u ⊙ x ≥ 0] in the parameters' dtype (u the direction the learning rate multiplies)."""
    return (direction * params >= 0).astype(params.dtype)


def _decay(rate: float, cautious: bool, sign: float) -> optax.GradientTransformation:
    """``updates + sign·λ·m ⊙ params``; ``sign`` is +1 before the learning rate, −1 after it
    (where the updates are −η u, so the mask reads −updates)."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("decay_weights: update needs the parameters; call "
                             "tx.update(grads, state, params).")

        def leaf(u, x):
            decay = rate * x.astype(u.dtype)
            if cautious:
                decay = decay * cautious_mask(sign * u, x.astype(u.dtype))
            return u + sign * decay

        return jax.tree.map(leaf, updates, params), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def decay_weights(weight_decay, mask=None, *, after_learning_rate: bool = False):
    """The weight-decay block of a chain, or ``None`` where nothing is to be added.

    A float (or injected scalar) gives ``optax.add_decayed_weights(weight_decay, mask)``
    before the learning rate. A `WeightDecay` gives its mode: placed before the
    learning rate when ``coupled``, after it when not. Call it twice around
    ``optax.scale_by_learning_rate`` (``after_learning_rate`` False, then True); each call
    returns the block only where it belongs.

    Args:
      weight_decay: a number ≥ 0 or a `WeightDecay`.
      mask: where decay applies (a bool pytree or a callable ``params -> pytree``).
      after_learning_rate: whether this position follows ``scale_by_learning_rate``.

    Returns:
      An ``optax.GradientTransformation`` or ``None``.

    Example:
      >>> import optax, optorth
      >>> from optorth.blocks import decay_weights
      >>> wd = optorth.WeightDecay(0.1, cautious=True)
      >>> parts = [decay_weights(wd), optax.scale_by_learning_rate(0.02),
      ...          decay_weights(wd, after_learning_rate=True)]
      >>> tx = optax.chain(optax.scale_by_adam(), *[p for p in parts if p is not None])
    """
    if not isinstance(weight_decay, WeightDecay):
        return None if after_learning_rate else optax.add_decayed_weights(weight_decay, mask)
    if weight_decay.coupled == after_learning_rate:
        return None
    block = _decay(weight_decay.rate, weight_decay.cautious,
                   -1.0 if after_learning_rate else 1.0)
    return block if mask is None else optax.masked(block, mask)


def around_learning_rate(weight_decay, mask, learning_rate) -> list:
    """``[decay before η], scale_by_learning_rate(η), [decay after η]``: the tail of a chain."""
    parts = [decay_weights(weight_decay, mask),
             optax.scale_by_learning_rate(learning_rate),
             decay_weights(weight_decay, mask, after_learning_rate=True)]
    return [p for p in parts if p is not None]
