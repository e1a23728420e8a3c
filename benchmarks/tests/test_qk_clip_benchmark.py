"""The main job's QK-clip loop (benchmarks/lm/qk.py) on the tiny test model."""

import numpy as np
import optax
import pytest

import optorth
from benchmarks.lm import qk as lm_qk
from benchmarks.lm.config import Config
from benchmarks.lm.data import load_corpus


@pytest.mark.slow
def test_clipped_training_records_every_layer_and_holds_tau():
    cfg = Config.quick(steps=6, layers=2)
    corpus = load_corpus(cfg.corpus_chars)
    tx = optax.chain(optorth.muon(0.3), optorth.qk_clip(lm_qk.clip_config(1.0)))
    history, maxima = lm_qk.train(tx, cfg, corpus, clip=True)
    assert sorted(maxima) == ["blocks/0/attn", "blocks/1/attn"]
    assert all(len(v) == cfg.steps for v in maxima.values())
    assert np.isfinite(history.val_loss[-1])
    # Once a layer passed τ its maxima come back to about τ: far below an unclipped run's.
    plain, free = lm_qk.train(optorth.muon(0.3), cfg, corpus, clip=False)
    assert max(max(v) for v in free.values()) > max(max(v) for v in maxima.values())


def test_median_interval_covers_the_true_median_95_percent_of_the_time():
    from benchmarks.qk_clip import median_interval

    rng = np.random.default_rng(0)
    samples = rng.lognormal(0.0, 0.5, size=(4000, 80))  # skewed, like step times; median 1
    hits = [lo <= 1.0 <= hi for _, lo, hi in map(median_interval, samples)]
    assert 0.93 <= np.mean(hits) <= 0.975
    med, lo, hi = median_interval([3.0, 1.0, 2.0])
    assert (med, lo, hi) == (2.0, 1.0, 3.0)
