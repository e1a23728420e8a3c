"""QK-clip on the main job: the attention records its per-head maximum logits and every step
passes them to the optimizer (``tx.update(..., max_logits=...)``).

``enable_recording(model)`` switches each `CausalSelfAttention`
to explicit logits recorded under its path (``blocks/0/attn``); ``train`` is the main job's
loop with that step and a per-step record of the largest logit of every layer.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import data as lm_data
from . import model as lm_model
from .config import Config, make_model
from .loop import History, _eval_loss


def enable_recording(model) -> list[str]:
    """Make every attention layer of ``model`` record its maximum logits; their paths."""
    paths = []
    for path, module in nnx.iter_modules(model):
        if isinstance(module, lm_model.CausalSelfAttention):
            module.record_as = "/".join(str(p) for p in path)
            paths.append(module.record_as)
    return paths


def clip_config(tau: float):
    """The main job's layout: separate ``query``/``key`` kernels ``(d, heads·head_dim)``."""
    import optorth

    return optorth.QKClip.separate(tau)


def _step(graphdef, state, inputs, targets, clip: bool, capture: bool = True):
    """One training step; with ``capture`` the attention's maxima are recorded and returned
    (and passed to the optimizer with ``clip``)."""
    import optorth

    model, optimizer = nnx.merge(graphdef, state)

    def loss(m):
        if not capture:
            return lm_model.loss_fn(m, inputs, targets), {}
        with optorth.nn.capture_max_logits() as record:
            value = lm_model.loss_fn(m, inputs, targets)
        return value, record

    (value, record), grads = nnx.value_and_grad(loss, has_aux=True)(model)
    if clip:
        optimizer.update(model, grads, max_logits=record)
    else:
        optimizer.update(model, grads)
    return nnx.state((model, optimizer)), value, record


_jit_step = jax.jit(_step, static_argnums=(0, 4, 5))


def train(tx, cfg: Config, corpus, *, clip: bool, record: bool = True) -> tuple[History, dict]:
    """One run; ``(history, {layer: [max logit per step]})``. With ``record=False`` the model
    keeps ``jax.nn.dot_product_attention`` (no maxima; ``clip`` must be False)."""
    model = make_model(cfg, corpus.vocab_size)
    if record:
        enable_recording(model)
    model_graphdef, _ = nnx.split(model)
    graphdef, state = nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))
    batches = lm_data.Batches(corpus.train, cfg.steps, cfg.batch_size, cfg.seq_len, cfg.seed)
    val_x, val_y = (jnp.asarray(a) for a in lm_data.eval_windows(
        corpus.val, cfg.eval_batches, cfg.batch_size, cfg.seq_len))
    history, maxima = History(name="qk_clip" if clip else "no_clip"), {}
    eval_steps = set(cfg.eval_steps())

    def evaluate(step):
        history.eval_steps.append(step)
        history.val_loss.append(float(_eval_loss(model_graphdef, state[0], val_x, val_y)))

    evaluate(0)
    for step in range(cfg.steps):
        start = time.perf_counter()
        state, loss, rec = _jit_step(graphdef, state, *batches[step], clip, True)
        loss = float(loss)
        history.step_seconds.append(time.perf_counter() - start)
        history.train_loss.append(loss)
        for layer, values in rec.items():
            maxima.setdefault(layer, []).append(float(jnp.max(values)))
        if not math.isfinite(loss):
            history.nonfinite_step = step + 1
            break
        if step + 1 in eval_steps:
            evaluate(step + 1)
    return history, maxima


def run(task, tx, seed: int, tau: float) -> dict:
    """``task.run`` of ``benchmarks/sweep.py`` with QK-clip at ``tau`` chained after ``tx``."""
    import optax

    import optorth
    from benchmarks.sweep import _outcome

    if task._corpus is None:
        task._corpus = lm_data.load_corpus(task.cfg.corpus_chars)
    clipped = optax.chain(tx, optorth.qk_clip(clip_config(tau)))
    history, maxima = train(clipped, task.cfg.replace(seed=seed), task._corpus, clip=True)
    out = _outcome(history, history.mean_step_seconds())
    out["max_logit"] = [float(np.max(v)) for v in zip(*maxima.values(), strict=True)]
    return out
