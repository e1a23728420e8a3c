"""The main job: train a small character-level transformer LM with several optimizers.

    pip install -e ".[bench]" && python benchmarks/train_lm.py

Trains the Flax NNX decoder-only transformer of ``lm_model.py`` on Python standard-library
source read from the running interpreter (``lm_data.py``; nothing is downloaded), once per
optimizer, with the same initial weights, the same batches in the same order and the same
learning-rate shape (linear warmup, then cosine decay to 10% of the peak). It prints a table of
validation loss (nats per character) at every quarter of the run and the mean wall time per
training step (compilation excluded, evaluation excluded), and writes to ``--out``:

* ``train_lm.png``  training (smoothed) and validation loss curves;
* ``train_lm.json`` the configuration, environment, corpus, per-optimizer histories, table;
* ``train_lm.csv``  one row per (optimizer, split, step, loss).

Optimizers come from :data:`REGISTRY` (``--help`` lists them and which are available in the
installed optorth). ``name@schedule`` runs an optorth spectral optimizer with another
Newton–Schulz schedule (a preset name, a shipped fitted schedule or a Schedule JSON file), e.g.
``--optimizers muon,muon@polar_express``.

Importable API (for tests, notebooks and other benchmarks)::

    from train_lm import Config, train, make_model, load_corpus
    history = train("muon", Config(steps=100), callback=lambda info: ...)

The callback receives a :class:`StepInfo` after every step; ``info.opt_state`` is the optax
state (plain arrays, optax's own structure) and ``info.params`` the parameters.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import math
import os
import pathlib
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lm_data  # noqa: E402
import lm_model  # noqa: E402
from lm_data import load_corpus  # noqa: E402,F401  (re-exported)

# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run (model shape, data, schedule, evaluation).

    The defaults are the README run: 4 optimizers finish in well under 10 minutes on a
    2-core CPU. ``Config.quick()`` is the tiny setting used by the tests.
    """

    steps: int = 300
    batch_size: int = 16
    seq_len: int = 128
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    seed: int = 0
    eval_every: int = 25
    eval_batches: int = 4
    corpus_chars: int = 2_000_000
    warmup_frac: float = 0.05
    final_lr_frac: float = 0.1
    weight_decay: float = 0.0
    bf16: bool = False

    def __post_init__(self):
        for field in ("steps", "batch_size", "eval_every", "eval_batches", "corpus_chars"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")

    @classmethod
    def quick(cls, **changes) -> Config:
        """Tiny settings for tests (a few seconds of compute per optimizer)."""
        base = dict(
            steps=24,
            batch_size=8,
            seq_len=32,
            d_model=32,
            layers=1,
            heads=2,
            eval_every=6,
            eval_batches=2,
            corpus_chars=200_000,
        )
        return cls(**{**base, **changes})

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def model_config(self, vocab_size: int) -> lm_model.ModelConfig:
        return lm_model.ModelConfig(
            vocab_size=vocab_size,
            seq_len=self.seq_len,
            d_model=self.d_model,
            layers=self.layers,
            heads=self.heads,
            mlp_ratio=self.mlp_ratio,
            bf16=self.bf16,
        )

    def table_steps(self) -> tuple[int, ...]:
        """The steps reported in the table: every quarter of the run."""
        return tuple(sorted({max(1, round(self.steps * k / 4)) for k in range(1, 5)}))

    def eval_steps(self) -> tuple[int, ...]:
        """Steps after which validation loss is measured (0 = before training)."""
        regular = set(range(0, self.steps + 1, self.eval_every))
        return tuple(sorted(regular | set(self.table_steps()) | {0, self.steps}))


def lr_schedule(peak: float, cfg: Config) -> optax.Schedule:
    """Linear warmup over ``warmup_frac`` of the run, cosine decay to ``final_lr_frac·peak``."""
    warmup = int(round(cfg.warmup_frac * cfg.steps))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=max(cfg.steps, warmup + 1),
        end_value=peak * cfg.final_lr_frac,
    )


def make_model(cfg: Config, vocab_size: int) -> lm_model.TransformerLM:
    """The run's model, initialised from ``cfg.seed`` (identical for every optimizer)."""
    return lm_model.make_model(cfg.model_config(vocab_size), seed=cfg.seed)


# --------------------------------------------------------------------------------------
# Optimizer registry
# --------------------------------------------------------------------------------------

#: AdamW settings shared by the AdamW baseline and the fallback path of the optorth optimizers.
ADAM_BETAS = (0.9, 0.95)
ADAM_EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class OptimizerEntry:
    """One optimizer of the comparison.

    Attributes:
      name: registry key (``--optimizers`` value).
      build: ``build(cfg, lr, fallback_lr, schedule) -> optax.GradientTransformation``; ``lr``
        and ``fallback_lr`` are schedules already shaped by :func:`lr_schedule`; ``schedule``
        is a Newton–Schulz schedule override or ``None``.
      lr: default peak learning rate of the main path.
      fallback_lr: default peak learning rate of the AdamW path (embeddings, head, norms), or
        ``None`` when the optimizer has no separate fallback learning rate.
      description: one line for ``--help`` and the results file.
      requires: attributes of ``optorth`` that must exist for the entry to be available;
        ``"muon(learn)"`` also requires ``optorth.muon`` to take a ``learn`` argument.
      takes_schedule: whether ``name@schedule`` variants are meaningful.
    """

    name: str
    build: Callable[..., optax.GradientTransformation]
    lr: float
    fallback_lr: float | None
    description: str
    requires: tuple[str, ...] = ()
    takes_schedule: bool = False

    def available(self) -> bool:
        return all(_optorth_has(requirement) for requirement in self.requires)


def _optorth_has(requirement: str) -> bool:
    """Whether optorth has ``attr`` (``"attr"``) or ``attr`` takes ``param`` (``"attr(param)"``)."""
    import inspect

    try:
        import optorth
    except ImportError:
        return False
    attr, _, param = requirement.partition("(")
    if not hasattr(optorth, attr):
        return False
    if not param:
        return True
    try:
        return param.rstrip(")") in inspect.signature(getattr(optorth, attr)).parameters
    except (TypeError, ValueError):
        return False


REGISTRY: dict[str, OptimizerEntry] = {}


def register_optimizer(entry: OptimizerEntry, *, replace: bool = False) -> OptimizerEntry:
    """Add ``entry`` to :data:`REGISTRY` (other scripts may add their own entries)."""
    if entry.name in REGISTRY and not replace:
        raise ValueError(f"optimizer {entry.name!r} is already registered; pass replace=True")
    if "@" in entry.name or "," in entry.name:
        raise ValueError(f"optimizer name {entry.name!r} may not contain '@' or ','")
    REGISTRY[entry.name] = entry
    return entry


def _build_adamw(cfg, lr, fallback_lr, schedule):
    del fallback_lr, schedule
    b1, b2 = ADAM_BETAS
    return optax.adamw(lr, b1=b1, b2=b2, eps=ADAM_EPS, weight_decay=cfg.weight_decay)


def _build_optax_muon(cfg, lr, fallback_lr, schedule):
    del fallback_lr, schedule
    # optax's own defaults: every 2-D leaf (embeddings and lm_head included) takes the Muon
    # path, the rest takes NAdamW at the same learning rate (REFERENCE §6, defects 1 and 9).
    return optax.contrib.muon(lr, weight_decay=cfg.weight_decay)


def _hidden_dimension_numbers(params):
    """optax.contrib.muon dimension numbers: hidden 2-D kernels only (no embeddings/head)."""
    from optax.contrib import MuonDimensionNumbers

    def leaf(path, x):
        names = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        hidden = x.ndim == 2 and "embed" not in names and "lm_head" not in names
        return MuonDimensionNumbers(reduction_axis=0, output_axis=1) if hidden else None

    return jax.tree_util.tree_map_with_path(leaf, params)


def _build_optax_muon_routed(cfg, lr, fallback_lr, schedule):
    del schedule
    b1, b2 = ADAM_BETAS
    return optax.contrib.muon(
        lr,
        weight_decay=cfg.weight_decay,
        adam_learning_rate=fallback_lr,
        adam_b1=b1,
        adam_b2=b2,
        muon_weight_dimension_numbers=_hidden_dimension_numbers,
    )


def _fallback_adamw(cfg, fallback_lr):
    b1, b2 = ADAM_BETAS
    return optax.adamw(fallback_lr, b1=b1, b2=b2, eps=ADAM_EPS, weight_decay=cfg.weight_decay)


def _optorth_builder(attr: str, *, own_fallback: bool = False, **fixed):
    """Builder for a ready optorth optimizer, imported lazily when the run starts.

    The fallback path (embeddings, head, norm gains) is the same AdamW as the ``adamw``
    baseline at ``fallback_lr`` (passed as ``fallback=`` so that optimizers whose own default
    fallback is something else compare on the matrix path alone), unless ``own_fallback``.
    """

    def build(cfg, lr, fallback_lr, schedule):
        import optorth

        kwargs = dict(learning_rate=lr, weight_decay=cfg.weight_decay, **fixed)
        if not own_fallback:
            kwargs["fallback"] = _fallback_adamw(cfg, fallback_lr)
        if schedule is not None:
            kwargs["schedule"] = schedule
        return getattr(optorth, attr)(**kwargs)

    build.__name__ = f"build_{attr}"
    return build


def _build_muon_learned(cfg, lr, fallback_lr, schedule):
    import optorth

    del schedule
    fitted = optorth.fit_schedule(5, seed=0)
    return _optorth_builder("muon")(cfg, lr, fallback_lr, fitted)


def _build_muon_online(cfg, lr, fallback_lr, schedule):
    import optorth

    every = max(1, cfg.steps // 12)
    learn = optorth.OnlineLearning(every=every)
    return _optorth_builder("muon", learn=learn)(cfg, lr, fallback_lr, schedule)


#: Peak learning rates. Muon family: the reference 0.02 on hidden matrices, AdamW 3e-3 on the
#: fallback path (better than 1e-3 at 150 steps). AdamW baseline: 2e-3, the best of
#: {5e-4, 1e-3, 2e-3, 3e-3, 1e-2, 2e-2} in a 150-step sweep of the default model (val loss
#: 2.62, 2.52, 2.47, 2.62, 2.87, 2.91 nats/char).
_MUON_LR, _FALLBACK_LR, _ADAMW_LR = 0.02, 3e-3, 2e-3

for _entry in (
    OptimizerEntry(
        "adamw", _build_adamw, _ADAMW_LR, None,
        "optax.adamw on every parameter, betas (0.9, 0.95), eps 1e-8",
    ),
    OptimizerEntry(
        "optax_muon", _build_optax_muon, _MUON_LR, None,
        "optax.contrib.muon with its defaults (every 2-D leaf incl. embeddings and head "
        "on Muon; NAdamW at the same lr for the rest)",
    ),
    OptimizerEntry(
        "optax_muon_routed", _build_optax_muon_routed, _MUON_LR, _FALLBACK_LR,
        "optax.contrib.muon with hidden kernels only on Muon and AdamW 3e-3 for the rest",
    ),
    OptimizerEntry(
        "muon", _optorth_builder("muon"), _MUON_LR, _FALLBACK_LR,
        "optorth.muon: Jordan 5-step Newton–Schulz, Keller scaling, on hidden matrices; "
        "AdamW for embeddings/head/norms",
        requires=("muon",), takes_schedule=True,
    ),
    OptimizerEntry(
        "turbo_muon", _optorth_builder("turbo_muon"), _MUON_LR, _FALLBACK_LR,
        "optorth.turbo_muon: muon with AOL preconditioning and 4 Newton–Schulz steps",
        requires=("turbo_muon",), takes_schedule=True,
    ),
    OptimizerEntry(
        "normuon", _optorth_builder("normuon"), _MUON_LR, _FALLBACK_LR,
        "optorth.normuon: Muon + per-neuron second moment of the orthogonalized update",
        requires=("normuon",), takes_schedule=True,
    ),
    OptimizerEntry(
        "factored_muon", _optorth_builder("factored_muon"), _MUON_LR, _FALLBACK_LR,
        "optorth.factored_muon: Muon normalized by factored row/column second moments",
        requires=("factored_muon",), takes_schedule=True,
    ),
    OptimizerEntry(
        "factored_muon_own", _optorth_builder("factored_muon", own_fallback=True), _MUON_LR,
        None,
        "optorth.factored_muon with its own Adafactor fallback (relative step size)",
        requires=("factored_muon",), takes_schedule=True,
    ),
    OptimizerEntry(
        "muon_learned", _build_muon_learned, _MUON_LR, _FALLBACK_LR,
        "optorth.muon with a 5-step schedule from optorth.fit_schedule(5, seed=0) "
        "(same step count as Jordan's)",
        requires=("muon", "fit_schedule"),
    ),
    OptimizerEntry(
        "muon_online", _build_muon_online, _MUON_LR, _FALLBACK_LR,
        "optorth.muon learning its Newton–Schulz coefficients online "
        "(OnlineLearning(every=steps // 12)), starting from Jordan's",
        requires=("OnlineLearning", "muon(learn)"), takes_schedule=True,
    ),
):
    register_optimizer(_entry)

#: The optimizers of the default run (those available in the installed optorth).
DEFAULT_OPTIMIZERS = ("adamw", "optax_muon", "muon", "turbo_muon")


def available_optimizers() -> tuple[str, ...]:
    """Registry keys whose requirements are met by the installed optorth."""
    return tuple(name for name, entry in REGISTRY.items() if entry.available())


def resolve_ns_schedule(spec: str):
    """A Newton–Schulz schedule from a preset name, a shipped fitted name or a JSON file."""
    import optorth
    from optorth.ns import _fitted

    path = pathlib.Path(spec)
    if spec.endswith(".json") and path.is_file():
        return optorth.Schedule.from_json(path.read_text())
    fitted = _fitted.lookup(spec)
    if fitted is not None:
        return fitted
    try:
        return optorth.resolve_schedule(spec)
    except (ValueError, KeyError) as err:
        known = ", ".join(optorth.preset_names() + _fitted.names())
        raise ValueError(
            f"unknown Newton–Schulz schedule {spec!r}; use one of {known} or a .json file"
        ) from err


def build_optimizer(
    name: str, cfg: Config, *, lr: float | None = None, fallback_lr: float | None = None
) -> optax.GradientTransformation:
    """The optimizer ``name`` (``key`` or ``key@schedule``) with the run's lr schedules."""
    key, _, schedule_spec = name.partition("@")
    if key not in REGISTRY:
        raise ValueError(f"unknown optimizer {key!r}; registered: {', '.join(REGISTRY)}")
    entry = REGISTRY[key]
    if not entry.available():
        raise ValueError(
            f"optimizer {key!r} needs optorth.{', optorth.'.join(entry.requires)}, which the "
            f"installed optorth does not provide; available: {', '.join(available_optimizers())}"
        )
    schedule = None
    if schedule_spec:
        if not entry.takes_schedule:
            raise ValueError(f"optimizer {key!r} takes no Newton–Schulz schedule ('@...')")
        schedule = resolve_ns_schedule(schedule_spec)
    peak = entry.lr if lr is None else lr
    fallback_peak = entry.fallback_lr if fallback_lr is None else fallback_lr
    fallback = None if fallback_peak is None else lr_schedule(fallback_peak, cfg)
    return entry.build(cfg, lr_schedule(peak, cfg), fallback, schedule)


def _registry_help() -> str:
    lines = ["optimizers (* = available in the installed optorth):"]
    for name, entry in REGISTRY.items():
        mark = "*" if entry.available() else " "
        needs = f" (needs optorth.{', optorth.'.join(entry.requires)})" if entry.requires else ""
        fallback = "" if entry.fallback_lr is None else f", fallback AdamW lr {entry.fallback_lr}"
        lines.append(f"  {mark} {name:<18} lr {entry.lr}{fallback}")
        lines.append(f"      {entry.description}{needs}")
    lines.append("  name@SCHEDULE runs an optorth spectral optimizer with another Newton–Schulz")
    lines.append("  schedule (preset name, shipped fitted schedule, or Schedule .json file).")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def _unwrap(tree):
    """Replace NNX variables by their values, keeping optax's own state structure."""
    return jax.tree.map(
        lambda v: v.get_value() if isinstance(v, nnx.Variable) else v,
        tree,
        is_leaf=lambda v: isinstance(v, nnx.Variable),
    )


class StepInfo:
    """What a per-step callback sees; the NNX objects are rebuilt only when asked for.

    Attributes:
      step: number of completed training steps (1 after the first update).
      loss: training loss of that step (nats per character).
    """

    def __init__(self, step: int, loss: float, graphdef, state):
        self.step, self.loss = step, loss
        self._graphdef, self._state = graphdef, state

    @functools.cached_property
    def _merged(self):
        return nnx.merge(self._graphdef, self._state)

    @property
    def model(self) -> lm_model.TransformerLM:
        return self._merged[0]

    @property
    def optimizer(self) -> nnx.Optimizer:
        return self._merged[1]

    @property
    def opt_state(self):
        """The optax state after this step, plain arrays in optax's own structure."""
        return _unwrap(self.optimizer.opt_state)

    @property
    def params(self) -> nnx.State:
        """The parameters after this step (``nnx.State`` of plain arrays)."""
        return nnx.state(self.model, nnx.Param)

    def state_matrices(self) -> dict[str, jax.Array]:
        """Floating optimizer-state leaves of rank ≥ 2 (e.g. momentum matrices), by path.

        Paths are optax's state structure joined by ``/``, e.g.
        ``.../inner_states/matrix/.../mu/blocks/0/mlp/fc/kernel``. Fallback-path leaves of
        embeddings and the head are included too; filter by path as needed.
        """
        flat, _ = jax.tree_util.tree_flatten_with_path(self.opt_state)
        out = {}
        for path, leaf in flat:
            if getattr(leaf, "ndim", 0) >= 2 and jnp.issubdtype(leaf.dtype, jnp.floating):
                out["/".join(_key_name(k) for k in path)] = leaf
        return out


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


@dataclasses.dataclass
class History:
    """The record of one training run."""

    name: str
    train_loss: list[float] = dataclasses.field(default_factory=list)
    eval_steps: list[int] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    step_seconds: list[float] = dataclasses.field(default_factory=list)
    compile_seconds: float = float("nan")
    eval_seconds: float = 0.0
    nonfinite_step: int | None = None

    @property
    def finite(self) -> bool:
        return self.nonfinite_step is None

    def mean_step_seconds(self) -> float:
        """Mean wall time of a training step, the first (compiling) step excluded."""
        timed = self.step_seconds[1:]
        return float(np.mean(timed)) if timed else float("nan")

    def val_at(self, step: int) -> float:
        """Validation loss measured after ``step`` steps (NaN if not measured)."""
        if step in self.eval_steps:
            return self.val_loss[self.eval_steps.index(step)]
        return float("nan")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["mean_step_seconds"] = self.mean_step_seconds()
        return out


def _train_step(graphdef, state, inputs, targets):
    model, optimizer = nnx.merge(graphdef, state)
    loss, grads = nnx.value_and_grad(lm_model.loss_fn)(model, inputs, targets)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss


_jit_train_step = jax.jit(_train_step, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _eval_loss(model_graphdef, model_state, inputs, targets):
    model = nnx.merge(model_graphdef, model_state)
    losses = jax.lax.map(lambda xy: lm_model.loss_fn(model, *xy), (inputs, targets))
    return losses.mean()


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"{desc:>14}", dynamic_ncols=True, leave=True)


def train(
    optimizer: str | optax.GradientTransformation,
    config: Config | None = None,
    *,
    corpus: lm_data.Corpus | None = None,
    callback: Callable[[StepInfo], Any] | None = None,
    progress: bool = True,
    name: str | None = None,
    lr: float | None = None,
    fallback_lr: float | None = None,
) -> History:
    """Train the model of ``config`` with one optimizer and return its :class:`History`.

    Args:
      optimizer: a registry name (``"muon"``, ``"muon@polar_express"``) or any
        ``optax.GradientTransformation`` (its learning rate is then the caller's business).
      config: the run; defaults to ``Config()``.
      corpus: a pre-loaded corpus (default: ``load_corpus(config.corpus_chars)``).
      callback: called as ``callback(info)`` after every step with a :class:`StepInfo`.
      progress: show a tqdm progress bar.
      name: label of the run (default: the registry name, or ``"custom"``).
      lr, fallback_lr: override the registry's peak learning rates.

    Returns:
      The :class:`History`: training loss per step, validation loss at ``config.eval_steps()``,
      wall time per step, compile time, and the first non-finite step (training stops there).
    """
    cfg = Config() if config is None else config
    corpus = load_corpus(cfg.corpus_chars) if corpus is None else corpus
    if isinstance(optimizer, str):
        tx = build_optimizer(optimizer, cfg, lr=lr, fallback_lr=fallback_lr)
        name = optimizer if name is None else name
    else:
        tx, name = optimizer, (name or "custom")

    model = make_model(cfg, corpus.vocab_size)
    model_graphdef, _ = nnx.split(model)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    del model, opt

    batches = lm_data.Batches(corpus.train, cfg.steps, cfg.batch_size, cfg.seq_len, cfg.seed)
    val_x, val_y = (jnp.asarray(a) for a in lm_data.eval_windows(
        corpus.val, cfg.eval_batches, cfg.batch_size, cfg.seq_len))
    eval_steps = set(cfg.eval_steps())
    history = History(name=name)

    def evaluate(step):
        start = time.perf_counter()
        loss = float(_eval_loss(model_graphdef, state[0], val_x, val_y))
        history.eval_seconds += time.perf_counter() - start
        history.eval_steps.append(step)
        history.val_loss.append(loss)
        return loss

    bar = _progress(cfg.steps, name, progress)
    val = evaluate(0)
    for step in range(cfg.steps):
        inputs, targets = batches[step]
        start = time.perf_counter()
        state, loss = _jit_train_step(graphdef, state, inputs, targets)
        loss = float(loss)
        elapsed = time.perf_counter() - start
        if step == 0:
            history.compile_seconds = elapsed
        history.step_seconds.append(elapsed)
        history.train_loss.append(loss)
        if not math.isfinite(loss):
            history.nonfinite_step = step + 1
            break
        if callback is not None:
            callback(StepInfo(step + 1, loss, graphdef, state))
        if step + 1 in eval_steps:
            val = evaluate(step + 1)
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.3f}", val=f"{val:.3f}", refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    return history


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def results_table(histories: Sequence[History], cfg: Config) -> str:
    """Validation loss at every quarter of the run, mean step time and its ratio to the first."""
    steps = cfg.table_steps()
    header = ["optimizer"] + [f"val@{s}" for s in steps]
    header += ["best val", "ms/step", "x first", "compile s", "finite"]
    base = histories[0].mean_step_seconds() if histories else float("nan")
    rows = []
    for h in histories:
        best = min(h.val_loss) if h.val_loss else float("nan")
        row = [h.name] + [f"{h.val_at(s):.4f}" for s in steps]
        row += [
            f"{best:.4f}",
            f"{1e3 * h.mean_step_seconds():.1f}",
            f"{h.mean_step_seconds() / base:.2f}",
            f"{h.compile_seconds:.1f}",
            "yes" if h.finite else f"no (step {h.nonfinite_step})",
        ]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(header), sep] + [fmt(r) for r in rows])


def _smooth(values, weight=0.9):
    out, acc = [], None
    for v in values:
        acc = v if acc is None else weight * acc + (1 - weight) * v
        out.append(acc)
    return out


def plot_curves(histories: Sequence[History], cfg: Config, path: pathlib.Path) -> pathlib.Path:
    """Save training (EMA-smoothed) and validation loss curves as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for h in histories:
        steps = np.arange(1, len(h.train_loss) + 1)
        (line,) = ax_train.plot(steps, _smooth(h.train_loss), label=h.name)
        ax_val.plot(h.eval_steps, h.val_loss, marker="o", ms=3, color=line.get_color(),
                    label=h.name)
    title = (f"d_model {cfg.d_model}, {cfg.layers} layers, {cfg.heads} heads, seq {cfg.seq_len}, "
             f"batch {cfg.batch_size}{', bf16' if cfg.bf16 else ''}")
    for ax, what in ((ax_train, "training loss (EMA 0.9)"), (ax_val, "validation loss")):
        ax.set_xlabel("step")
        ax.set_ylabel(f"{what}, nats/char")
        ax.grid(alpha=0.3)
        ax.legend()
    finite = [v for h in histories for v in h.val_loss[1:] if math.isfinite(v)]
    if finite:  # zoom past the initial ln(vocab) loss so the differences are visible
        ax_val.set_ylim(min(finite) - 0.05, max(finite) + 0.05)
    fig.suptitle(f"Character-level LM on Python stdlib source: {title}")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _environment() -> dict:
    import flax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "flax": flax.__version__,
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def save_results(histories, cfg, corpus, out_dir: pathlib.Path, table: str, seconds: float):
    """Write ``train_lm.json`` and ``train_lm.csv`` to ``out_dir``; return their paths."""
    payload = {
        "config": dataclasses.asdict(cfg),
        "environment": _environment(),
        "corpus": corpus.summary(),
        "optimizers": {
            h.name: {
                "description": REGISTRY[h.name.partition("@")[0]].description
                if h.name.partition("@")[0] in REGISTRY else "custom",
                **h.to_dict(),
            }
            for h in histories
        },
        "table": table,
        "total_seconds": seconds,
    }
    json_path = out_dir / "train_lm.json"
    json_path.write_text(json.dumps(payload, indent=1, allow_nan=True))
    csv_path = out_dir / "train_lm.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["optimizer", "split", "step", "loss"])
        for h in histories:
            writer.writerows((h.name, "train", i + 1, v) for i, v in enumerate(h.train_loss))
            val_rows = zip(h.eval_steps, h.val_loss, strict=True)
            writer.writerows((h.name, "val", s, v) for s, v in val_rows)
    return json_path, csv_path


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    d = Config()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=_registry_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--optimizers", default=None,
        help="comma-separated registry names (default: the available ones of "
             f"{','.join(DEFAULT_OPTIMIZERS)})")
    add("--steps", type=int, default=None, help=f"training steps (default {d.steps})")
    add("--batch-size", type=int, default=None, help=f"sequences per step ({d.batch_size})")
    add("--seq-len", type=int, default=None, help=f"context length ({d.seq_len})")
    add("--d-model", type=int, default=None, help=f"residual width ({d.d_model})")
    add("--layers", type=int, default=None, help=f"transformer blocks ({d.layers})")
    add("--heads", type=int, default=None, help=f"attention heads ({d.heads})")
    add("--seed", type=int, default=None, help=f"model init and data order seed ({d.seed})")
    add("--eval-every", type=int, default=None, help=f"validation interval ({d.eval_every})")
    add("--corpus-chars", type=int, default=None,
        help=f"characters of stdlib source ({d.corpus_chars})")
    add("--weight-decay", type=float, default=None, help=f"for every optimizer ({d.weight_decay})")
    add("--lr", type=float, default=None, help="override the peak lr of every optimizer")
    add("--fallback-lr", type=float, default=None,
        help="override the peak lr of the AdamW fallback path of every optimizer")
    add("--bf16", action="store_true", help="bfloat16 parameters and activations")
    add("--quick", action="store_true", help="tiny settings (tests, smoke runs)")
    add("--no-progress", action="store_true", help="no progress bars")
    add("--show-routing", action="store_true",
        help="print optorth.describe_routing of the model's parameters before training")
    add("--out", default="out", help="output directory (default out/)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = Config.quick() if args.quick else Config()
    changes = {
        field: getattr(args, field)
        for field in ("steps", "batch_size", "seq_len", "d_model", "layers", "heads", "seed",
                      "eval_every", "corpus_chars", "weight_decay")
        if getattr(args, field) is not None
    }
    if args.bf16:
        changes["bf16"] = True
    return cfg.replace(**changes)


def select_optimizers(spec: str | None) -> list[str]:
    """Names from a comma-separated list (default: the available default optimizers)."""
    if spec is None:
        names = [n for n in DEFAULT_OPTIMIZERS if REGISTRY[n].available()]
        missing = [n for n in DEFAULT_OPTIMIZERS if n not in names]
        if missing:
            print(f"note: skipping {', '.join(missing)} (not in the installed optorth)")
        return names
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ValueError("--optimizers is empty")
    for n in names:
        key = n.partition("@")[0]
        if key not in REGISTRY:
            raise ValueError(f"unknown optimizer {key!r}; registered: {', '.join(REGISTRY)}")
        if not REGISTRY[key].available():
            raise ValueError(
                f"optimizer {key!r} needs optorth.{', optorth.'.join(REGISTRY[key].requires)}, "
                f"which the installed optorth lacks; available: "
                f"{', '.join(available_optimizers())}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"--optimizers lists a name twice: {spec}")
    return names


def main(argv: Sequence[str] | None = None) -> list[History]:
    """Run the comparison; print the table; write the plot, JSON and CSV to ``--out``."""
    args = _parser().parse_args(argv)
    cfg = config_from_args(args)
    names = select_optimizers(args.optimizers)
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    corpus = load_corpus(cfg.corpus_chars)
    info = corpus.summary()
    model = make_model(cfg, corpus.vocab_size)
    print(f"corpus: {info['files']} stdlib files, {info['train_chars']:,} train / "
          f"{info['val_chars']:,} val chars, vocab {info['vocab_size']} ({info['root']})")
    print(f"model: {lm_model.count_params(model):,} parameters; {cfg.steps} steps of "
          f"{cfg.batch_size}x{cfg.seq_len} chars; {jax.devices()[0].device_kind}")
    if args.show_routing:
        import optorth

        print(optorth.describe_routing(nnx.state(model, nnx.Param)))
    del model

    histories = []
    for name in names:
        histories.append(train(name, cfg, corpus=corpus, progress=not args.no_progress,
                               lr=args.lr, fallback_lr=args.fallback_lr))
    seconds = time.perf_counter() - start

    table = results_table(histories, cfg)
    print(f"\nvalidation loss (nats/char) and mean step time, compilation excluded "
          f"(x first = ratio to {histories[0].name}):")
    print(table)
    png = plot_curves(histories, cfg, out_dir / "train_lm.png")
    json_path, csv_path = save_results(histories, cfg, corpus, out_dir, table, seconds)
    print(f"\ntotal {seconds:.0f} s; wrote {png}, {json_path}, {csv_path}")
    return histories


if __name__ == "__main__":
    main()
