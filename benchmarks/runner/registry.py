"""Every optimizer the benchmarks build, in one registry: optorth's ready optimizers, their
variants and the baselines (optax AdamW, ``optax.contrib.muon`` with its defaults and with
optorth's routing).

`build` makes one with the benchmarks' learning-rate shape (`lr_schedule`: linear warmup,
cosine decay to 10% of the peak) and, for optorth's routed optimizers, the main job's AdamW
fallback at ``fallback_lr`` (so optimizers compare on the matrix path alone); with
``defaults=True`` it calls ``optorth.<name>`` with every argument at its default except the
learning rate, whose default becomes the peak of the same shape. ``name@schedule`` runs an
optorth spectral optimizer with another Newton–Schulz schedule.
"""

from __future__ import annotations

import dataclasses
import inspect
import pathlib
from collections.abc import Callable

import jax
import optax

#: AdamW settings of the AdamW baseline and of the routed optimizers' fallback path.
ADAM_BETAS, ADAM_EPS = (0.9, 0.95), 1e-8
#: Peak learning rate of the AdamW fallback path (embeddings, head, norm gains).
FALLBACK_LR = 3e-3
#: adafactor's recommended peak learning rate on the main job: the best of the sweep (its
#: no-argument default is the paper's relative step size, slow on short runs by design).
ADAFACTOR_LEARNING_RATE = 0.08
#: Target update RMS of the ``consistent_rms`` shape-scale convention (Moonlight's 0.2).
CONSISTENT_RMS = 0.2


def lr_schedule(peak: float, cfg) -> optax.Schedule:
    """Linear warmup over ``cfg.warmup_frac`` of ``cfg.steps``, cosine decay to
    ``cfg.final_lr_frac · peak``."""
    warmup = int(round(cfg.warmup_frac * cfg.steps))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup,
        decay_steps=max(cfg.steps, warmup + 1), end_value=peak * cfg.final_lr_frac)


def fallback_adamw(cfg, fallback_lr) -> optax.GradientTransformation:
    """The main job's AdamW for the fallback path (and the AdamW baseline)."""
    b1, b2 = ADAM_BETAS
    return optax.adamw(fallback_lr, b1=b1, b2=b2, eps=ADAM_EPS, weight_decay=cfg.weight_decay)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One optimizer.

    Attributes:
      build: ``build(cfg, lr, fallback_lr, schedule, **overrides)``; ``lr`` and ``fallback_lr``
        are schedules (``lr`` is ``None`` only for adafactor's relative step), ``schedule`` a
        Newton–Schulz schedule override or ``None``.
      lr: the main job's peak learning rate (``None``: the optimizer's relative step).
      centre: centre of the learning-rate sweep's grid (fixed, so that the finished runs
        it names stay put when a default changes).
      description: one line for ``--help`` and the results.
      fallback: whether it has an AdamW fallback path at ``fallback_lr``.
      takes_schedule: whether ``name@schedule`` is meaningful.
    """

    build: Callable[..., optax.GradientTransformation]
    lr: float | None
    centre: float
    description: str
    fallback: bool = True
    takes_schedule: bool = False


def _adamw(cfg, lr, fallback_lr, schedule):
    return fallback_adamw(cfg, lr)


def _optax_muon(cfg, lr, fallback_lr, schedule):
    # optax's defaults: every 2-D leaf (embeddings and head too) on Muon, NAdamW for the rest.
    return optax.contrib.muon(lr, weight_decay=cfg.weight_decay)


def hidden_dimension_numbers(params):
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


def _optax_muon_routed(cfg, lr, fallback_lr, schedule):
    b1, b2 = ADAM_BETAS
    return optax.contrib.muon(lr, weight_decay=cfg.weight_decay, adam_learning_rate=fallback_lr,
                              adam_b1=b1, adam_b2=b2,
                              muon_weight_dimension_numbers=hidden_dimension_numbers)


def _optorth(attr: str, *, own_fallback: bool = False, **fixed):
    """``optorth.<attr>`` with the run's weight decay and the AdamW fallback (unless
    ``own_fallback``); ``fixed`` replaces fields of its default ``NewtonSchulz``."""

    def build(cfg, lr, fallback_lr, schedule, ns_changes=None, **overrides):
        import optorth

        kwargs = dict(learning_rate=lr, weight_decay=cfg.weight_decay)
        if not own_fallback:
            kwargs["fallback"] = fallback_adamw(cfg, fallback_lr)
        changes = {**fixed, **(ns_changes or {})}
        if schedule is not None or changes:
            default = inspect.signature(getattr(optorth, attr)).parameters["ns"].default
            kwargs["ns"] = dataclasses.replace(
                default, **({} if schedule is None else {"schedule": schedule}), **changes)
        return getattr(optorth, attr)(**{**kwargs, **overrides})

    return build


def _adafactor(cfg, lr, fallback_lr, schedule, **overrides):
    import optorth

    return optorth.adafactor(learning_rate=lr, weight_decay=cfg.weight_decay or None,
                             **overrides)


def _muon_learned(cfg, lr, fallback_lr, schedule):
    import optorth

    return _optorth("muon")(cfg, lr, fallback_lr, optorth.fit_schedule(5, seed=0))


def _muon_online(cfg, lr, fallback_lr, schedule, ns_changes=None):
    import optorth

    learn = optorth.OnlineLearning(every=max(1, cfg.steps // 12))
    return _optorth("muon", learn=learn)(cfg, lr, fallback_lr, schedule, ns_changes)


def _muon_scaled(convention: str):
    """``optorth.muon`` under one shape-scale convention (``"none"``: no factor)."""

    def build(cfg, lr, fallback_lr, schedule):
        import optorth

        scale = None if convention == "none" else optorth.norms.ShapeScale(
            convention, rms=CONSISTENT_RMS)
        return _optorth("muon")(cfg, lr, fallback_lr, schedule, scale=scale)

    return build


_SPECTRAL = "optorth.{}: {} on hidden matrices; AdamW for embeddings/head/norms"
REGISTRY: dict[str, Entry] = {
    "adamw": Entry(_adamw, 2e-3, 2e-3, "optax.adamw on every parameter, betas (0.9, 0.95), "
                   "eps 1e-8; lr 2e-3 (best of a 150-step sweep)", fallback=False),
    "optax_muon": Entry(_optax_muon, 0.02, 0.02, "optax.contrib.muon with its defaults (every "
                        "2-D leaf on Muon; NAdamW at the same lr for the rest)", fallback=False),
    "optax_muon_routed": Entry(_optax_muon_routed, 0.02, 0.02, "optax.contrib.muon with "
                               "hidden kernels only on Muon and AdamW for the rest"),
    "factored_muon_own": Entry(_optorth("factored_muon", own_fallback=True), 0.02, 0.02,
                               "optorth.factored_muon with its own Adafactor fallback",
                               fallback=False, takes_schedule=True),
    "muon_learned": Entry(_muon_learned, 0.02, 0.02, "optorth.muon with the 5-step schedule "
                          "of optorth.fit_schedule(5, seed=0)"),
    "muon_online": Entry(_muon_online, 0.02, 0.02, "optorth.muon learning its Newton–Schulz "
                         "coefficients online (every steps // 12)", takes_schedule=True),
    "adafactor": Entry(_adafactor, None, 1e-2, "optorth.adafactor on every parameter "
                       "(lr None: the relative step)", fallback=False),
}
#: Sweep centres of the ready optimizers (their defaults when the sweep was first run).
_CENTRES = {"muon": 0.02, "turbo_muon": 0.02, "root": 1e-3, "normuon": 0.02, "adamuon": 6e-4,
            "factored_muon": 0.02, "trust_region": 0.05, "normalized_sgdm": 0.5,
            "signum": 2e-3, "auon": 0.24, "hybrid_auon": 0.24}
for _name, _centre in _CENTRES.items():
    REGISTRY[_name] = Entry(_optorth(_name), _centre, _centre, _SPECTRAL.format(_name, _name),
                            takes_schedule=True)
#: Width-transfer variants: optorth.muon under each shape-scale convention.
for _convention, _centre in (("keller", 0.02), ("consistent_rms", 4e-3), ("spectral", 0.02),
                             ("none", 0.02)):
    _label = "unscaled" if _convention == "none" else _convention
    REGISTRY[f"muon_{_label}"] = Entry(_muon_scaled(_convention), _centre, _centre,
                                       f"optorth.muon with scale {_convention!r}")

#: The optimizers of the main job's default run.
DEFAULT_OPTIMIZERS = ("adamw", "optax_muon", "optax_muon_routed", "muon", "turbo_muon")
#: Baselines of the sweep besides optorth's ready optimizers.
BASELINES = ("adamw", "optax_muon_routed")


def ready() -> tuple[str, ...]:
    """``optorth.optimizers.READY``: the ready optimizers."""
    from optorth.optimizers import READY

    return tuple(READY)


def default_learning_rate(name: str) -> float:
    """The default learning rate of ``optorth.<name>`` (adafactor: the recommended
    `ADAFACTOR_LEARNING_RATE`)."""
    import optorth

    if name == "adafactor":
        return ADAFACTOR_LEARNING_RATE
    default = inspect.signature(getattr(optorth, name)).parameters["learning_rate"].default
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        raise ValueError(f"optorth.{name} has no default learning rate")
    return float(default)


def resolve_ns_schedule(spec: str):
    """A Newton–Schulz schedule from a preset name, a shipped fitted name or a JSON file."""
    import optorth

    path = pathlib.Path(spec)
    if spec.endswith(".json") and path.is_file():
        return optorth.Schedule.from_json(path.read_text())
    try:
        return optorth.ns.resolve_schedule(spec)
    except (ValueError, KeyError) as err:
        raise ValueError(f"unknown Newton–Schulz schedule {spec!r}; use one of "
                         f"{', '.join(optorth.ns.preset_names())} or a .json file") from err


def entry(name: str) -> Entry:
    """The registry entry of ``name`` (``key`` or ``key@schedule``)."""
    key = name.partition("@")[0]
    if key not in REGISTRY:
        raise ValueError(f"unknown optimizer {key!r}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[key]


def build(name: str, cfg, lr: float | None = None, *, fallback_lr: float | None = None,
          defaults: bool = False, ns_changes: dict | None = None,
          **overrides) -> optax.GradientTransformation:
    """The optimizer ``name`` with the run's learning-rate shape.

    Args:
      name: a registry key, or ``key@schedule`` for another Newton–Schulz schedule.
      cfg: the task's settings (``steps``, ``warmup_frac``, ``final_lr_frac``,
        ``weight_decay``).
      lr: peak learning rate of the main path (default: the entry's).
      fallback_lr: peak learning rate of the AdamW fallback path (`FALLBACK_LR`).
      defaults: call ``optorth.<name>`` with all its defaults (own fallback, weight decay)
        except the learning rate, `default_learning_rate` as the peak.
      ns_changes: `optorth.NewtonSchulz` fields (e.g. ``telemetry``, ``dtype``) set on the
        optimizers that take a Newton–Schulz schedule; the others ignore them.
      **overrides: further keyword arguments of the optorth factory.

    Example:
      >>> from benchmarks.lm import Config
      >>> tx = build("muon", Config.quick(), 0.02)
    """
    key, _, schedule_spec = name.partition("@")
    if defaults:
        peak = default_learning_rate(key) if lr is None else lr
        import optorth

        return getattr(optorth, key)(learning_rate=lr_schedule(peak, cfg), **overrides)
    item = entry(name)
    schedule = None
    if schedule_spec:
        if not item.takes_schedule:
            raise ValueError(f"optimizer {key!r} takes no Newton–Schulz schedule ('@...')")
        schedule = resolve_ns_schedule(schedule_spec)
    peak = item.lr if lr is None else lr
    main = None if peak is None else lr_schedule(peak, cfg)
    fallback = lr_schedule(FALLBACK_LR if fallback_lr is None else fallback_lr, cfg)
    if ns_changes and item.takes_schedule:
        overrides["ns_changes"] = ns_changes
    return item.build(cfg, main, fallback, schedule, **overrides)


def registry_help() -> str:
    """The registry for ``--help``."""
    lines = ["optimizers:"]
    for name, item in REGISTRY.items():
        fallback = f", fallback AdamW lr {FALLBACK_LR}" if item.fallback else ""
        lines += [f"  {name:<20} lr {item.lr}{fallback}", f"      {item.description}"]
    lines.append("  name@SCHEDULE runs an optorth spectral optimizer with another Newton–Schulz")
    lines.append("  schedule (preset name, shipped fitted schedule, or Schedule .json file).")
    return "\n".join(lines)
