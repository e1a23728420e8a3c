"""Published Newton–Schulz coefficient tables, each reproducing its source exactly.

Each constant's docstring names its source (paper title and arXiv id, or the code base).
``resolve_schedule`` turns a preset name (or a `Schedule`) into a schedule, looking up
per-shape tables (ROOT) by matrix shape; ``as_schedule`` also accepts a raw ``(T, 3)`` table.

References:
  Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024).
  Amsel et al., "The Polar Express: Optimal Matrix Sign Methods and Their Application to the
  Muon Algorithm" (arXiv 2505.16932).
  Boissin et al., "Turbo-Muon" (arXiv 2512.04632).
  "ROOT" (arXiv 2511.20626): per-shape coefficient rows.
"""

from __future__ import annotations

import jax
import numpy as np

from optorth.ns._schedule import Schedule, check_table, matrix_shape

_JORDAN_ROW = (3.4445, -4.7750, 2.0315)

#: Keller Jordan's Muon reference: one row repeated 5×, Frobenius-normalized (eps 1e-7).
JORDAN = Schedule(
    table=(_JORDAN_ROW,) * 5,
    name="jordan",
    extend="repeat_last",
    provenance=(("source", "KellerJordan/Muon"),),
)

#: Jiacheng You's 5-step table ("Muon+", optax preset "dion").
YOU = Schedule(
    table=(
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
    name="you",
    provenance=(("source", "Jiacheng You, 5-step table (optax 'dion')"),),
)

#: Jiacheng You's 6-step table (integers / 1024). Row order matters.
YOU6 = Schedule(
    table=tuple(
        tuple(v / 1024 for v in row)
        for row in (
            (3955, -8306, 5008),
            (3735, -6681, 3463),
            (3799, -6499, 3211),
            (4019, -6385, 2906),
            (2677, -3029, 1162),
            (2172, -1833, 682),
        )
    ),
    name="you6",
    provenance=(("source", "Jiacheng You, 6-step table (/1024)"),),
)

_POLAR_EXPRESS_RAW = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)


def _with_safety(rows, safety):
    """Divides row t by (s, s³, s⁵) for every row but the last (Polar Express, §4.4)."""
    scaled = [(a / safety, b / safety**3, c / safety**5) for a, b, c in rows[:-1]]
    return tuple(scaled) + (tuple(rows[-1]),)


#: Polar Express (Amsel et al. 2025), ℓ = 1e-3, with the paper's 1.01 safety; repeat last.
POLAR_EXPRESS = Schedule(
    table=_with_safety(_POLAR_EXPRESS_RAW, 1.01),
    name="polar_express",
    safety=1.01,
    extend="repeat_last",
    provenance=(("source", "Amsel et al. 2025, arXiv 2505.16932"), ("sigma_min", 1e-3)),
)

#: The 5-row Polar Express table shipped in GPT speedrun codebases (safety 1.02).
POLAR_EXPRESS5 = Schedule(
    table=(
        (8.156554524902461, -22.48329292557795, 15.878769915207462),
        (4.042929935166739, -2.808917465908714, 0.5000178451051316),
        (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
        (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
        (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
    ),
    name="polar_express5",
    safety=1.02,
    provenance=(("source", "modded-nanogpt speedrun, Polar Express 5-step"),),
)

#: Turbo-Muon (Boissin et al. 2025): AOL preconditioning, then You's table minus row 1.
TURBO = Schedule(
    table=YOU.table[1:],
    name="turbo",
    precondition="aol",
    provenance=(("source", "Boissin et al. 2025, arXiv 2512.04632"),),
)

#: ROOT (arXiv 2511.20626) per-shape rows keyed by (min dim, max dim), repeated 5×.
ROOT_ROWS = {
    (2048, 2048): (3.4916, -4.8224, 2.1095),
    (2048, 3072): (3.4509, -4.5790, 1.9325),
    (2048, 8192): (2.9794, -3.6674, 1.6207),
    (2048, 16384): (3.1943, -3.8221, 1.5322),
}


def root_schedule(shape) -> Schedule:
    """ROOT's table for a matrix shape; shapes it does not list fall back to Jordan's row.

    Note: ROOT's (2048, 2048) row peaks above its repelling fixed point, so
    ``validate_schedule`` rejects it (some σ near 0.55 blow up).

    Example:
      >>> import optorth
      >>> optorth.ns.root_schedule((3072, 2048)).table[0]
      (3.4509, -4.579, 1.9325)
    """
    key = tuple(sorted(matrix_shape("root_schedule", shape)))
    row = ROOT_ROWS.get(key, _JORDAN_ROW)
    source = "ROOT arXiv 2511.20626" if key in ROOT_ROWS else "Jordan (ROOT fallback)"
    return Schedule(
        table=(row,) * 5,
        name=f"root_{key[0]}x{key[1]}",
        extend="repeat_last",
        provenance=(("source", source), ("shape", f"{key[0]}x{key[1]}")),
    )


PRESETS: dict[str, Schedule] = {
    s.name: s for s in (JORDAN, YOU, YOU6, POLAR_EXPRESS, POLAR_EXPRESS5, TURBO)
}
#: Presets that hold one table per matrix shape (looked up by ``(min dim, max dim)``).
PER_SHAPE_PRESETS = {"root": root_schedule}
#: Names users reach for that are generators (``optorth.ns._generators``), not presets.
_GENERATORS = {"cans": "cans_schedule"}


def preset_names() -> tuple[str, ...]:
    """All names accepted by `resolve_schedule` (and hence ``newton_schulz``).

    Example:
      >>> import optorth
      >>> "jordan" in optorth.ns.preset_names()
      True
    """
    return tuple(PRESETS) + tuple(PER_SHAPE_PRESETS) + tuple(_generated_names())


def _generated_names():
    from optorth.ns import _fitted

    return _fitted.names()


def resolve_schedule(schedule: str | Schedule, *, shape=None) -> Schedule:
    """A `Schedule` from a preset name or a schedule (returned unchanged).

    Args:
      schedule: a name from `preset_names` or a `Schedule`.
      shape: the matrix shape, needed by per-shape presets such as ``"root"``.

    Returns:
      The `Schedule`.

    Raises:
      ValueError: for an unknown name (with the closest known one), or a per-shape preset
        without ``shape``.

    Example:
      >>> import optorth
      >>> optorth.ns.resolve_schedule("root", shape=(2048, 3072)).name
      'root_2048x3072'
    """
    if isinstance(schedule, Schedule):
        return schedule
    if not isinstance(schedule, str):
        raise ValueError(
            f"resolve_schedule: schedule must be a preset name or an optorth.Schedule; got "
            f"{type(schedule).__name__}."
        )
    if schedule in PRESETS:
        return PRESETS[schedule]
    if schedule in PER_SHAPE_PRESETS:
        if shape is None:
            raise ValueError(f"Preset {schedule!r} keeps one table per matrix shape; pass "
                             f"shape=(m, n).")
        return PER_SHAPE_PRESETS[schedule](shape)
    from optorth.ns import _fitted

    fitted = _fitted.lookup(schedule)
    if fitted is not None:
        return fitted
    if schedule in _GENERATORS:
        raise ValueError(
            f"{schedule!r} is computed for a step count, not a fixed preset: pass "
            f"optorth.ns.{_GENERATORS[schedule]}(steps), e.g. "
            f"optorth.NewtonSchulz(optorth.ns.{_GENERATORS[schedule]}(6))."
        )
    import difflib

    close = difflib.get_close_matches(schedule, preset_names() + tuple(_GENERATORS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"Unknown schedule {schedule!r}. Known presets: {', '.join(preset_names())}; or pass an "
        f"optorth.Schedule, a (T, 3) array, or a generator such as "
        f"optorth.ns.polar_express_schedule(steps).{hint}"
    )


def as_schedule(who: str, schedule, *, shape=None) -> Schedule:
    """A `Schedule` from a preset name, a `Schedule` or a raw ``(T, 3)`` table.

    A raw table (checked by `check_table`) becomes a schedule that runs exactly its
    rows (``extend="fixed"``), Frobenius-normalized with safety 1.

    Example:
      >>> from optorth.ns._presets import as_schedule
      >>> as_schedule("demo", [(3.4445, -4.7750, 2.0315)] * 5).steps
      5
    """
    if isinstance(schedule, (str, Schedule)):
        try:
            return resolve_schedule(schedule, shape=shape)
        except ValueError as err:
            raise ValueError(f"{who}: {err}") from None
    if isinstance(schedule, jax.core.Tracer):
        raise ValueError(f"{who}: the schedule must be concrete; a traced table cannot be "
                         f"validated. To differentiate through the engine pass the table as "
                         f"optorth.newton_schulz(x, ns, coeffs=table).")
    table = check_table(who, np.asarray(schedule) if isinstance(schedule, jax.Array)
                        else schedule)
    return Schedule(table=tuple(map(tuple, table.tolist())), name="custom", extend="fixed")
