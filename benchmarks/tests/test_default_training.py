"""Regression guard: every ready optimizer's defaults train the main job's model.

The main job's tiny test model (``benchmarks/lm`` ``Config.quick``: one block, d_model 32,
character-level; initial validation loss 4.56 nats/char) trains for ``STEPS`` steps with a
constant learning rate, i.e. exactly what a no-argument call gives. On this model the
fallback path (embeddings, head, norm gains) alone brings the loss to 2.73, so each half is
checked on its own:

- the matrix path: ``optorth.<name>(fallback=optax.set_to_zero())``, every other argument
  default, must lower the loss by ``MATRIX_DROP`` (when set, every default lowered it by
  0.17-0.21; a zero learning rate by exactly 0);
- the default fallbacks, with the matrix path's learning rate 0: ``default_fallback()``
  (through ``muon``) and ``factored_muon``'s Adafactor must end below ``THRESHOLD`` (2.73
  and 2.70 when set);
- ``adafactor()``, the paper's relative step (slow on short runs by design), must end below
  ``ADAFACTOR_THRESHOLD`` (4.05 when set).

A guard against a default that stops training (a learning rate orders of magnitude off, a
broken fallback), not a tuning claim: the ``defaults`` experiment measures each default
against a learning-rate sweep.
"""

from __future__ import annotations

import math

import optax
import pytest

import optorth
from benchmarks.lm import Config, LMTask, load_corpus
from benchmarks.runner import train
from optorth.optimizers import READY

STEPS = 40
MATRIX_DROP = 0.1  # nats/char
THRESHOLD = 3.6
ADAFACTOR_THRESHOLD = 4.3
ROUTED = tuple(name for name in READY if name != "adafactor")
pytestmark = pytest.mark.slow  # fits: 40 training steps each


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(Config.quick().corpus_chars)


def _train(tx, corpus) -> tuple[float, float]:
    cfg = Config.quick(steps=STEPS, eval_every=STEPS)
    history = train(LMTask(cfg, corpus), tx)
    initial, final = history.val_loss[0], history.val_loss[-1]
    assert history.finite and math.isfinite(final)
    assert initial > 4.3, f"the tiny model starts near ln(vocabulary), got {initial:.3f}"
    return initial, final


@pytest.mark.parametrize("name", ROUTED)
def test_default_matrix_path_lowers_the_loss(name, corpus):
    initial, final = _train(getattr(optorth, name)(fallback=optax.set_to_zero()), corpus)
    assert final < initial - MATRIX_DROP, (
        f"optorth.{name}()'s matrix path took the loss from {initial:.3f} to {final:.3f} "
        f"in {STEPS} steps; expected a drop of at least {MATRIX_DROP}")


@pytest.mark.parametrize("name", ["muon", "factored_muon"])
def test_default_fallback_trains_the_other_leaves(name, corpus):
    _, final = _train(getattr(optorth, name)(learning_rate=0.0), corpus)
    assert final < THRESHOLD, (
        f"optorth.{name}()'s default fallback ended at {final:.3f} nats/char after {STEPS} "
        f"steps (threshold {THRESHOLD})")


def test_adafactor_defaults_lower_the_loss(corpus):
    _, final = _train(optorth.adafactor(), corpus)
    assert final < ADAFACTOR_THRESHOLD, (
        f"optorth.adafactor() ended at {final:.3f} nats/char after {STEPS} steps "
        f"(threshold {ADAFACTOR_THRESHOLD})")
