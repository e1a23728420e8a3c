"""The main job's QK-clip runs (`LMTask` recording the attention maxima) on the tiny model."""

import numpy as np
import optax
import pytest

import optorth
from benchmarks.lm import Config, LMTask
from benchmarks.lm.task import clip_config, layer_maxima
from benchmarks.runner import train


@pytest.mark.slow
def test_clipped_training_records_every_layer_and_holds_tau():
    cfg = Config.quick(steps=6, layers=2)
    task = LMTask(cfg, record_logits=True, clip=True)
    tx = optax.chain(optorth.muon(0.3), optorth.qk_clip(clip_config(1.0)))
    history = train(task, tx)
    maxima = layer_maxima(history)
    assert sorted(maxima) == ["blocks/0/attn", "blocks/1/attn"]
    assert all(len(v) == cfg.steps for v in maxima.values())
    assert np.isfinite(history.val_loss[-1])
    # Once a layer passed τ its maxima come back to about τ: far below an unclipped run's.
    free = layer_maxima(train(LMTask(cfg, task.corpus, record_logits=True), optorth.muon(0.3)))
    assert max(max(v) for v in free.values()) > max(max(v) for v in maxima.values())


def test_median_interval_covers_the_true_median_95_percent_of_the_time():
    from benchmarks.micro.qk_clip import median_interval

    rng = np.random.default_rng(0)
    samples = rng.lognormal(0.0, 0.5, size=(4000, 80))  # skewed, like step times; median 1
    hits = [lo <= 1.0 <= hi for _, lo, hi in map(median_interval, samples)]
    assert 0.93 <= np.mean(hits) <= 0.975
    med, lo, hi = median_interval([3.0, 1.0, 2.0])
    assert (med, lo, hi) == (2.0, 1.0, 3.0)
