"""Pretraining on source A, fine-tuning on source B, evaluation, timing and memory."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optorth.nn
from benchmarks.lm import Config, LMTask
from benchmarks.lm import data as lm_data
from benchmarks.lm import model as lm_model
from benchmarks.micro._timing import time_round_robin
from benchmarks.runner import History, RunSpec, registry, train
from benchmarks.runner.loop import _jit_step, step_fn
from benchmarks.runner.registry import ADAM_BETAS, ADAM_EPS, lr_schedule

from .data import Sources
from .lora import merge_lora
from .methods import Method


def pretrain(sources: Sources, cfg: Config, *, optimizer: str, progress: bool):
    """The main job's model trained on source A by the runner's loop; ``(model, history)``."""
    task = LMTask(cfg, sources.pretraining_corpus())
    spec = RunSpec("finetune", "lm", {}, optimizer, None, cfg.seed)
    history = train(task, registry.build(optimizer, cfg), spec, progress=progress,
                    name=f"pretrain {optimizer}")
    if not history.finite:
        raise RuntimeError(f"pretraining diverged at step {history.nonfinite_step}")
    return history.final_model(), history


@dataclasses.dataclass
class Run:
    """One fine-tuning run (a method at one learning rate)."""

    method: str
    rate: float
    history: History = dataclasses.field(repr=False)
    b_test: float = math.nan
    a_val: float = math.nan

    @property
    def state(self):
        """The ``(model, optimizer)`` state after the last step."""
        return self.history.state[1]

    @property
    def final_val(self) -> float:
        h = self.history
        return h.val_loss[-1] if h.nonfinite_step is None else math.inf


@dataclasses.dataclass
class MethodResult:
    """Every rate of one method, its compiled step and what it costs."""

    method: Method
    trainable: int
    runs: list[Run]
    compile_seconds: float
    temp_bytes: int
    state_bytes: int
    graphdef: object = dataclasses.field(default=None, repr=False)
    model_graphdef: object = dataclasses.field(default=None, repr=False)
    compiled: object = dataclasses.field(default=None, repr=False)  # (state, batch) -> ...

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda r: r.final_val)


def _loss(model, inputs, targets):
    return lm_model.loss_fn(model, inputs, targets), {}


@functools.partial(jax.jit, static_argnums=0)
def _eval(model_graphdef, model_state, inputs, targets):
    """Mean loss over the batches of ``inputs`` and the logits of the first batch."""
    model = nnx.merge(model_graphdef, model_state)
    losses = jax.lax.map(lambda xy: lm_model.loss_fn(model, *xy), (inputs, targets))
    return losses.mean(), model(inputs[0])


def _eval_loss(model_graphdef, model_state, inputs, targets):
    return _eval(model_graphdef, model_state, inputs, targets)[0]


def evaluate(model: nnx.Module, windows, *, logits: bool = False):
    """Mean loss of ``model`` over fixed windows ``(inputs, targets)`` (and, if asked, the
    logits of the first batch)."""
    graphdef, state = nnx.split(model)
    loss, first = _eval(graphdef, state, *windows)
    return (float(loss), first) if logits else float(loss)


#: Final scores (target test, source val, the pretrained model's) use this many times more
#: windows than the curves and the learning-rate selection.
FINAL_EVAL_FACTOR = 3


def eval_windows(data: np.ndarray, cfg: Config, *, final: bool = False):
    """Fixed evaluation windows ``(inputs, targets)``: ``cfg.eval_batches`` batches, or
    ``FINAL_EVAL_FACTOR`` times as many for final scores."""
    batches = cfg.eval_batches * (FINAL_EVAL_FACTOR if final else 1)
    return tuple(jnp.asarray(a) for a in lm_data.eval_windows(
        data, batches, cfg.batch_size, cfg.seq_len))


def _adamw(cfg: Config):
    """AdamW whose peak learning rate is state (``peak``), so every rate shares one compile."""
    b1, b2 = ADAM_BETAS
    unit = lr_schedule(1.0, cfg)

    def make(peak):
        return optax.adamw(lambda count: peak * unit(count), b1=b1, b2=b2, eps=ADAM_EPS,
                           weight_decay=cfg.weight_decay)

    return optax.inject_hyperparams(make)(peak=1.0)


def _nbytes(tree) -> int:
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


class FinetuneTask:
    """Fine-tuning ``pretrained`` with ``method`` on source B at peak rate ``rate``, as a
    `benchmarks.runner.loop.Task` (the rate is set in the optimizer's injected state, so
    every rate of a method runs the same compiled step)."""

    name = "finetune"
    loss = staticmethod(_loss)
    extras = None

    def __init__(self, method: Method, pretrained, sources: Sources, cfg: Config, rate: float):
        self.method, self.pretrained, self.cfg, self.rate = method, pretrained, cfg, rate
        self.wrt, self.sources = method.wrt, sources
        self.b_val = eval_windows(sources.b_val, cfg)

    def init(self, seed: int):
        return self.method.build(self.pretrained)

    def batches(self, seed: int):
        c = self.cfg
        return lm_data.Batches(self.sources.b_train, c.steps, c.batch_size, c.seq_len, c.seed)

    def setup(self, optimizer) -> None:
        optimizer.opt_state.hyperparams["peak"][...] = jnp.float32(self.rate)

    def evaluate(self, graphdef, state) -> dict[str, float]:
        return {"loss": float(_eval_loss(graphdef, state, *self.b_val))}


def finetune(method: Method, pretrained, sources: Sources, cfg: Config, *,
             progress: bool) -> MethodResult:
    """Fine-tune ``pretrained`` on source B at every rate of ``method`` (the runner's loop)."""
    tx = _adamw(cfg)
    b_test = eval_windows(sources.b_test, cfg, final=True)
    a_val = eval_windows(sources.a_val, cfg, final=True)
    runs = []
    for rate in method.rates:
        task = FinetuneTask(method, pretrained, sources, cfg, rate)
        history = train(task, tx, name=f"{method.label} lr={rate:g}"[:24], progress=progress)
        run = Run(method.name, rate, history)
        model_graphdef = nnx.graphdef(history.final_model())
        run.b_test = float(_eval_loss(model_graphdef, run.state[0], *b_test))
        run.a_val = float(_eval_loss(model_graphdef, run.state[0], *a_val))
        runs.append(run)
    graphdef = runs[0].history.state[0]
    compiled = step_fn(task, graphdef)
    batch = tuple(task.batches(cfg.seed)[0])
    memory = _jit_step.lower(graphdef, task.loss, task.extras, task.wrt, runs[0].state,
                             batch).compile().memory_analysis()  # the loop's cached compile
    model, optimizer = nnx.merge(graphdef, runs[0].state)
    trainable = sum(x.size for x in jax.tree.leaves(nnx.state(model, method.wrt)))
    return MethodResult(method, int(trainable), runs, runs[0].history.compile_seconds,
                        int(memory.temp_size_in_bytes),
                        _nbytes(nnx.state(model, method.wrt)) + _nbytes(
                            nnx.state(optimizer.opt_state)),
                        graphdef, nnx.graphdef(model), compiled)


def time_steps(results: list[MethodResult], inputs, targets, *, repeats: int) -> dict:
    """Median seconds per training step of each method's chosen run, timed round-robin (one
    untimed call each first) so that load drifts on a shared machine hit all methods alike."""
    timings = time_round_robin({r.method.name: r.compiled for r in results},
                               {r.method.name: (r.best.state, (inputs, targets))
                                for r in results}, repeats)
    return {name: t.median for name, t in timings.items()}


@nnx.jit
def _merged_copy(model):
    merged = nnx.clone(model)
    optorth.nn.merge(merged)
    merge_lora(merged)
    return merged


def merged_model(result: MethodResult) -> tuple[nnx.Module, nnx.Module]:
    """The chosen run's adapted model and a copy with every adapter merged into its layer
    (``optorth.nn.merge``, and `merge_lora` for the LoRA baseline)."""
    adapted = nnx.merge(result.model_graphdef, result.best.state[0])
    return adapted, _merged_copy(adapted)
