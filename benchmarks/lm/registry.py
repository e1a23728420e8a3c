"""Every optimizer the LM benchmarks construct, in one place.

`REGISTRY` holds the optimizers of the main job (``python benchmarks/train_lm.py``);
`SOAK_OPTIMIZERS` and `build_soak_optimizer` those of ``benchmarks/soak.py``. Every
call of an optax or optorth optimizer factory in the LM benchmarks is in this module, so a
change of their keyword arguments is made here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import inspect
import pathlib
from collections.abc import Callable

import jax
import optax

from .config import Config, lr_schedule

#: AdamW settings shared by the AdamW baseline and the fallback path of the optorth optimizers.
ADAM_BETAS = (0.9, 0.95)
ADAM_EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class OptimizerEntry:
    """One optimizer of the comparison.

    Attributes:
      name: registry key (``--optimizers`` value).
      build: ``build(cfg, lr, fallback_lr, schedule) -> optax.GradientTransformation``; ``lr``
        and ``fallback_lr`` are schedules already shaped by `lr_schedule`; ``schedule``
        is a Newton–Schulz schedule override or ``None``.
      lr: default peak learning rate of the main path.
      fallback_lr: default peak learning rate of the AdamW path (embeddings, head, norms), or
        ``None`` when the optimizer has no separate fallback learning rate.
      description: one line for ``--help`` and the results file.
      requires: attributes of ``optorth`` that must exist for the entry to be available;
        ``"muon(ns)"`` also requires ``optorth.muon`` to take an ``ns`` argument.
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
    """Add ``entry`` to `REGISTRY` (other scripts may add their own entries)."""
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
    # path, the rest takes NAdamW at the same learning rate.
    return optax.contrib.muon(lr, weight_decay=cfg.weight_decay)


def _hidden_dimension_numbers(params):
    """optax.contrib.muon dimension numbers as optorth routes by default: hidden 2-D kernels
    and 4-D conv kernels ``(kh, kw, cin, cout)`` on Muon; embeddings and heads not."""
    from optax.contrib import MuonDimensionNumbers

    def leaf(path, x):
        parts = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        if any("embed" in part or part in ("head", "lm_head") for part in parts):
            return None
        if x.ndim == 2:
            return MuonDimensionNumbers(reduction_axis=0, output_axis=1)
        if x.ndim == 4:
            return MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)
        return None

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


def fallback_adamw(cfg, fallback_lr):
    b1, b2 = ADAM_BETAS
    return optax.adamw(fallback_lr, b1=b1, b2=b2, eps=ADAM_EPS, weight_decay=cfg.weight_decay)


def _optorth_builder(attr: str, *, own_fallback: bool = False, **fixed):
    """Builder for a ready optorth optimizer, imported lazily when the run starts.

    The fallback path (embeddings, head, norm gains) is the same AdamW as the ``adamw``
    baseline at ``fallback_lr`` (passed as ``fallback=`` so that optimizers whose own default
    fallback is something else compare on the matrix path alone), unless ``own_fallback``.
    """

    def build(cfg, lr, fallback_lr, schedule, **ns_changes):
        import optorth

        kwargs = dict(learning_rate=lr, weight_decay=cfg.weight_decay)
        if not own_fallback:
            kwargs["fallback"] = fallback_adamw(cfg, fallback_lr)
        changes = {**fixed, **ns_changes}
        if schedule is not None or changes:
            default = inspect.signature(getattr(optorth, attr)).parameters["ns"].default
            kwargs["ns"] = dataclasses.replace(
                default, **({} if schedule is None else {"schedule": schedule}), **changes)
        return getattr(optorth, attr)(**kwargs)

    build.__name__ = f"build_{attr}"
    return build


def _build_muon_learned(cfg, lr, fallback_lr, schedule):
    import optorth

    del schedule
    fitted = optorth.fit_schedule(5, seed=0)
    return _optorth_builder("muon")(cfg, lr, fallback_lr, fitted)


def _build_muon_online(cfg, lr, fallback_lr, schedule, **ns_changes):
    import optorth

    every = max(1, cfg.steps // 12)
    learn = optorth.OnlineLearning(every=every)  # NewtonSchulz(learn=...)
    return _optorth_builder("muon", learn=learn)(cfg, lr, fallback_lr, schedule, **ns_changes)


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
        requires=("OnlineLearning", "muon(ns)"), takes_schedule=True,
    ),
):
    register_optimizer(_entry)

#: The optimizers of the default run (those available in the installed optorth).
DEFAULT_OPTIMIZERS = ("adamw", "optax_muon", "optax_muon_routed", "muon", "turbo_muon")


def available_optimizers() -> tuple[str, ...]:
    """Registry keys whose requirements are met by the installed optorth."""
    return tuple(name for name, entry in REGISTRY.items() if entry.available())


def resolve_ns_schedule(spec: str):
    """A Newton–Schulz schedule from a preset name, a shipped fitted name or a JSON file."""
    import optorth

    path = pathlib.Path(spec)
    if spec.endswith(".json") and path.is_file():
        return optorth.Schedule.from_json(path.read_text())
    try:
        return optorth.ns.resolve_schedule(spec)
    except (ValueError, KeyError) as err:
        known = ", ".join(optorth.ns.preset_names())
        raise ValueError(
            f"unknown Newton–Schulz schedule {spec!r}; use one of {known} or a .json file"
        ) from err


def build_optimizer(
    name: str, cfg: Config, *, lr: float | None = None, fallback_lr: float | None = None,
    ns_changes: dict | None = None,
) -> optax.GradientTransformation:
    """The optimizer ``name`` (``key`` or ``key@schedule``) with the run's lr schedules.

    ``ns_changes``: `optorth.NewtonSchulz` fields (e.g. ``telemetry``, ``dtype``) set on the
    optimizers that take a Newton–Schulz schedule; the others ignore them.
    """
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
    changes = (ns_changes or {}) if entry.takes_schedule else {}
    return entry.build(cfg, lr_schedule(peak, cfg), fallback, schedule, **changes)


def registry_help() -> str:
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


#: adafactor's recommended peak learning rate for the main job: the best of the sweep (its
#: no-argument default is the paper's relative step size, slow on short runs by design).
ADAFACTOR_LEARNING_RATE = 0.08


def default_learning_rate(factory: str) -> float:
    """The default learning rate of ``optorth.<factory>`` (adafactor: the recommended
    `ADAFACTOR_LEARNING_RATE`)."""
    import optorth

    if factory == "adafactor":
        return ADAFACTOR_LEARNING_RATE
    default = inspect.signature(getattr(optorth, factory)).parameters["learning_rate"].default
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        raise ValueError(f"optorth.{factory} has no default learning rate")
    return float(default)


def build_default_optimizer(name: str, cfg, **overrides) -> optax.GradientTransformation:
    """``optorth.<name>`` with every argument at its default (its own fallback, weight decay,
    betas) except ``overrides`` and the learning rate: the default as the peak of the main
    job's lr shape (warmup, cosine decay), as in every swept run."""
    import optorth

    peak = default_learning_rate(name)
    return getattr(optorth, name)(learning_rate=lr_schedule(peak, cfg), **overrides)


# --------------------------------------------------------------------------------------
# The soak run (benchmarks/soak.py): every ready optorth optimizer, long, in low precision
# --------------------------------------------------------------------------------------

#: name → (optorth factory name, extra keyword arguments). Every optimizer runs at its
#: default learning rate (adafactor at `ADAFACTOR_LEARNING_RATE`).
SOAK_OPTIMIZERS = {
    "muon": ("muon", {}),
    "muon_online": ("muon", {"learn_every": 250}),  # learn=OnlineLearning(every=250)
    "turbo_muon": ("turbo_muon", {}),
    "root": ("root", {}),
    "auon": ("auon", {}),
    "hybrid_auon": ("hybrid_auon", {}),
    "normalized_sgdm": ("normalized_sgdm", {}),
    "signum": ("signum", {}),
    "trust_region": ("trust_region", {}),
    "normuon": ("normuon", {}),
    "adamuon": ("adamuon", {}),
    "factored_muon": ("factored_muon", {}),
    "adafactor": ("adafactor", {}),
}
#: Peak learning rate of the AdamW fallback path in the soak run.
SOAK_FALLBACK_LR = 3e-3


def soak_learning_rate(name: str) -> float:
    """Peak learning rate of the soak optimizer ``name``."""
    return default_learning_rate(SOAK_OPTIMIZERS[name][0])


def build_soak_optimizer(name: str, cfg: Config, mu_dtype):
    """The soak optimizer ``name`` with the main job's lr shape and AdamW fallback."""
    import optorth

    factory, extra = SOAK_OPTIMIZERS[name]
    kwargs = dict(extra, mu_dtype=mu_dtype)
    if "learn_every" in kwargs:
        learn = optorth.OnlineLearning(every=kwargs.pop("learn_every"))
        kwargs["ns"] = optorth.NewtonSchulz(learn=learn)
    if name != "adafactor":
        kwargs["fallback"] = fallback_adamw(cfg, lr_schedule(SOAK_FALLBACK_LR, cfg))
    return build_default_optimizer(factory, cfg, **kwargs)


# --------------------------------------------------------------------------------------
# The learning-rate sweep (benchmarks/sweep.py): any ready optimizer at a given peak lr
# --------------------------------------------------------------------------------------

#: Baselines of the sweep besides optorth's ready optimizers, built through `REGISTRY`.
SWEEP_BASELINES = ("adamw", "optax_muon_routed")
#: Centre of each ready optimizer's learning-rate grid: its default learning rate when the
#: sweep was first run (adafactor: 1e-2, its relative step ``min(1e-2, 1/sqrt(t))`` for the
#: first 10,000 steps; normalized SGD, Signum and the trust-region method had no default and
#: got a value whose update RMS matched Muon's on 128x512 matrices). Fixed, so that the grid,
#: and the finished runs it names, stay put when a default is later set from the sweep.
SWEEP_CENTRES = {
    "muon": 0.02, "turbo_muon": 0.02, "root": 1e-3, "normuon": 0.02, "adamuon": 6e-4,
    "factored_muon": 0.02, "trust_region": 0.05, "normalized_sgdm": 0.5, "signum": 2e-3,
    "auon": 0.24, "hybrid_auon": 0.24, "adafactor": 1e-2,
}


def sweep_optimizers() -> tuple[str, ...]:
    """Every optimizer of the sweep: ``optorth.optimizers.READY`` and `SWEEP_BASELINES`."""
    from optorth.optimizers import READY

    return tuple(READY) + SWEEP_BASELINES


def sweep_centre_lr(name: str) -> float:
    """Centre of ``name``'s learning-rate grid: the registry lr for the baselines, else
    `SWEEP_CENTRES`."""
    if name in SWEEP_BASELINES:
        return REGISTRY[name].lr
    if name not in SWEEP_CENTRES:
        raise ValueError(f"{name!r} is not a sweep optimizer; choose from "
                         f"{', '.join(sweep_optimizers())}")
    return SWEEP_CENTRES[name]


def build_sweep_optimizer(name: str, cfg, lr: float | None, *,
                          fallback_lr: float = _FALLBACK_LR) -> optax.GradientTransformation:
    """The sweep optimizer ``name`` at peak learning rate ``lr`` with the main job's lr shape.

    Args:
      name: one of `sweep_optimizers`.
      cfg: the run's `Config` or any object with ``steps``, ``warmup_frac``,
        ``final_lr_frac`` and ``weight_decay`` (e.g. the CNN task's config).
      lr: peak learning rate of the main path (of every parameter for ``adamw`` and
        ``adafactor``); ``None`` only for ``adafactor``: its relative-step default.
      fallback_lr: peak lr of the AdamW fallback path (the main job's 3e-3).

    Every routed optorth optimizer gets the main job's AdamW fallback and ``cfg.weight_decay``
    (0 by default, also for root and adamuon whose own default is 0.1).
    """
    import optorth

    if lr is None and name != "adafactor":
        raise ValueError(f"{name!r} needs a learning rate; only adafactor has a default "
                         "(relative step size)")
    if name in SWEEP_BASELINES:
        return build_optimizer(name, cfg, lr=lr, fallback_lr=fallback_lr)
    if name == "adafactor":
        return optorth.adafactor(learning_rate=None if lr is None else lr_schedule(lr, cfg),
                                 weight_decay=cfg.weight_decay or None)
    sweep_centre_lr(name)  # validates the name
    return _optorth_builder(name)(cfg, lr_schedule(lr, cfg), lr_schedule(fallback_lr, cfg), None)
