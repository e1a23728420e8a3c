"""Pretraining on source A, fine-tuning on source B, evaluation, timing and memory."""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import optorth.nn
from benchmarks.lm import Config, LMTask
from benchmarks.lm import data as lm_data
from benchmarks.lm import model as lm_model
from benchmarks.runner import RunSpec, registry, train
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
    eval_steps: list[int] = dataclasses.field(default_factory=list)
    b_val: list[float] = dataclasses.field(default_factory=list)
    train_loss: list[float] = dataclasses.field(default_factory=list)
    step_seconds: list[float] = dataclasses.field(default_factory=list)
    b_test: float = math.nan
    a_val: float = math.nan
    nonfinite_step: int | None = None
    state: object = dataclasses.field(default=None, repr=False)

    @property
    def final_val(self) -> float:
        return self.b_val[-1] if self.nonfinite_step is None else math.inf


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
    compiled: object = dataclasses.field(default=None, repr=False)

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda r: r.final_val)


def _loss(model, inputs, targets):
    return lm_model.loss_fn(model, inputs, targets)


def _train_step(graphdef, wrt, state, inputs, targets):
    model, optimizer = nnx.merge(graphdef, state)
    grad_fn = nnx.value_and_grad(_loss, argnums=nnx.DiffState(0, wrt))
    loss, grads = grad_fn(model, inputs, targets)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss


_jit_train_step = jax.jit(_train_step, static_argnums=(0, 1))


@functools.partial(jax.jit, static_argnums=0)
def _eval(model_graphdef, model_state, inputs, targets):
    """Mean loss over the batches of ``inputs`` and the logits of the first batch."""
    model = nnx.merge(model_graphdef, model_state)
    losses = jax.lax.map(lambda xy: _loss(model, *xy), (inputs, targets))
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


def _start(method: Method, pretrained, tx, rate):
    model = method.build(pretrained)
    optimizer = nnx.Optimizer(model, tx, wrt=method.wrt)
    optimizer.opt_state.hyperparams["peak"][...] = jnp.float32(rate)
    return model, optimizer


def finetune(method: Method, pretrained, sources: Sources, cfg: Config, *,
             progress: bool) -> MethodResult:
    """Fine-tune ``pretrained`` on source B at every rate of ``method``."""
    tx = _adamw(cfg)
    batches = lm_data.Batches(sources.b_train, cfg.steps, cfg.batch_size, cfg.seq_len, cfg.seed)
    b_val = eval_windows(sources.b_val, cfg)
    b_test = eval_windows(sources.b_test, cfg, final=True)
    a_val = eval_windows(sources.a_val, cfg, final=True)
    model, optimizer = _start(method, pretrained, tx, method.rates[0])
    graphdef, state = nnx.split((model, optimizer))
    model_graphdef = nnx.graphdef(model)
    trainable = sum(x.size for x in jax.tree.leaves(nnx.state(model, method.wrt)))
    start = time.perf_counter()
    compiled = _jit_train_step.lower(graphdef, method.wrt, state, *batches[0]).compile()
    compile_seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    runs = []
    for rate in method.rates:
        model, optimizer = _start(method, pretrained, tx, rate)
        _, state = nnx.split((model, optimizer))
        run = Run(method.name, rate)
        runs.append(run)
        _fit(run, compiled, model_graphdef, state, batches, b_val, cfg, progress, method.label)
        run.b_test = float(_eval_loss(model_graphdef, run.state[0], *b_test))
        run.a_val = float(_eval_loss(model_graphdef, run.state[0], *a_val))
    return MethodResult(method, int(trainable), runs, compile_seconds,
                        int(memory.temp_size_in_bytes),
                        _trainable_bytes(model, optimizer, method.wrt),
                        graphdef, model_graphdef, compiled)


def _trainable_bytes(model, optimizer, wrt) -> int:
    """Bytes of the trained parameters plus the optimizer state."""
    return _nbytes(nnx.state(model, wrt)) + _nbytes(nnx.state(optimizer.opt_state))


def _fit(run, compiled, model_graphdef, state, batches, b_val, cfg, progress, label):
    eval_steps = set(cfg.eval_steps())
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc=f"{label} lr={run.rate:g}"[:24].rjust(24),
                   dynamic_ncols=True, leave=True)

    def record(step):
        run.eval_steps.append(step)
        run.b_val.append(float(_eval_loss(model_graphdef, state[0], *b_val)))

    record(0)
    for step in range(cfg.steps):
        start = time.perf_counter()
        state, loss = compiled(state, *batches[step])
        loss = float(loss)
        run.step_seconds.append(time.perf_counter() - start)
        run.train_loss.append(loss)
        if not math.isfinite(loss):
            run.nonfinite_step = step + 1
            break
        if step + 1 in eval_steps:
            record(step + 1)
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.3f}", val=f"{run.b_val[-1]:.3f}", refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    run.state = state


def time_steps(results: list[MethodResult], inputs, targets, *, repeats: int) -> dict:
    """Median seconds per training step of each method's chosen run, timed round-robin.

    Every compiled step is called once untimed, then ``repeats`` rounds call each method once
    in turn, so load drifts on a shared machine hit all methods alike.
    """
    def once(result):
        start = time.perf_counter()
        jax.block_until_ready(result.compiled(result.best.state, inputs, targets))
        return time.perf_counter() - start

    for result in results:
        once(result)
    times = {r.method.name: [] for r in results}
    for _ in range(repeats):
        for result in results:
            times[result.method.name].append(once(result))
    return {name: statistics.median(t) for name, t in times.items()}


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
