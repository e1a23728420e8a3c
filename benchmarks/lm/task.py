"""The main job as a `benchmarks.runner.loop.Task`: the character LM on stdlib source.

With ``record_logits`` every attention layer records its per-head maximum logits (the step's
``aux``, ``{"blocks/0/attn": ...}``); with ``clip`` they are also passed to the optimizer
(``tx.update(..., max_logits=...)``) for ``optorth.qk_clip``; with ``pass_loss`` the loss
is passed as ``tx.update(..., value=loss)`` (for optimizers that need it, e.g. AEGD).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import data as lm_data
from . import model as lm_model
from .config import Config, make_model


def _loss(model, inputs, targets):
    return lm_model.loss_fn(model, inputs, targets), {}


def _recorded_loss(model, inputs, targets):
    import optorth

    with optorth.nn.capture_max_logits() as record:
        value = lm_model.loss_fn(model, inputs, targets)
    return value, record


def _clip_extras(loss, aux):
    return {"max_logits": aux}


def _value_extras(loss, aux):
    return {"value": loss}


@functools.partial(jax.jit, static_argnums=0)
def eval_loss(model_graphdef, model_state, inputs, targets):
    """Mean loss of the model over batches of fixed windows."""
    model = nnx.merge(model_graphdef, model_state)
    losses = jax.lax.map(lambda xy: lm_model.loss_fn(model, *xy), (inputs, targets))
    return losses.mean()


def enable_recording(model) -> list[str]:
    """Make every attention layer of ``model`` record its maximum logits; their paths."""
    paths = []
    for path, module in nnx.iter_modules(model):
        if isinstance(module, lm_model.CausalSelfAttention):
            module.record_as = "/".join(str(p) for p in path)
            paths.append(module.record_as)
    return paths


def clip_config(tau: float):
    """QK-clip for the main job's layout: separate ``query``/``key`` kernels."""
    import optorth

    return optorth.QKClip.separate(tau)


def layer_maxima(history) -> dict[str, list[float]]:
    """``{layer: [largest logit per step]}`` of a run with ``record_logits``."""
    out: dict[str, list[float]] = {}
    for record in history.aux:
        for layer, values in record.items():
            out.setdefault(layer, []).append(float(np.max(values)))
    return out


class LMTask:
    """The character LM of `Config` (nats per character).

    Example:
      >>> task = LMTask(Config.quick(steps=2))
      >>> task.name, task.cfg.steps
      ('lm', 2)
    """

    name = "lm"
    wrt = nnx.Param

    def __init__(self, cfg: Config | None = None, corpus: lm_data.Corpus | None = None, *,
                 record_logits: bool = False, clip: bool = False, pass_loss: bool = False):
        if clip and not record_logits:
            raise ValueError("LMTask: clip=True needs record_logits=True (QK-clip reads the "
                             "recorded maxima)")
        if clip and pass_loss:
            raise ValueError("LMTask: clip and pass_loss cannot be combined")
        self.cfg = Config() if cfg is None else cfg
        self._corpus, self.record_logits = corpus, record_logits
        self.loss = _recorded_loss if record_logits else _loss
        self.extras = _clip_extras if clip else _value_extras if pass_loss else None
        self._val = None

    @property
    def corpus(self) -> lm_data.Corpus:
        if self._corpus is None:
            self._corpus = lm_data.load_corpus(self.cfg.corpus_chars)
        return self._corpus

    def init(self, seed: int) -> lm_model.TransformerLM:
        model = make_model(self.cfg.replace(seed=seed), self.corpus.vocab_size)
        if self.record_logits:
            enable_recording(model)
        return model

    def batches(self, seed: int) -> lm_data.Batches:
        c = self.cfg
        return lm_data.Batches(self.corpus.train, c.steps, c.batch_size, c.seq_len, seed)

    def evaluate(self, graphdef, state) -> dict[str, float]:
        if self._val is None:
            c = self.cfg
            self._val = tuple(jnp.asarray(a) for a in lm_data.eval_windows(
                self.corpus.val, c.eval_batches, c.batch_size, c.seq_len))
        return {"loss": float(eval_loss(graphdef, state, *self._val))}

    def replace(self, **changes) -> LMTask:
        """The same task (and corpus, when it is the same size) with other settings."""
        cfg = self.cfg.replace(**changes)
        corpus = self._corpus if cfg.corpus_chars == self.cfg.corpus_chars else None
        return LMTask(cfg, corpus, record_logits=self.record_logits,
                      clip=self.extras is _clip_extras, pass_loss=self.extras is _value_extras)
