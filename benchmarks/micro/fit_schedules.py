"""Regenerates the fitted schedules shipped in ``optorth/ns/data/fitted_schedules.json``.

    python -m benchmarks.micro.fit_schedules [--only fitted4 ...] [--spectra out/lm_spectra.npz]
                                       [--out optorth/ns/data/fitted_schedules.json]

Each entry is ``optorth.fit_schedule(...)`` with the arguments listed in `ENTRIES`
(deterministic given the seed) and is stored as ``Schedule.to_dict()``, provenance included.
Entries whose spectra come from the LM (``*_lm``) need ``--spectra`` (written by
``benchmarks/micro/lm_spectra.py``); without it, existing entries of the file are kept.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax.numpy as jnp
import numpy as np

import optorth

_DATA = (pathlib.Path(__file__).resolve().parents[1] / "optorth" / "ns" / "data"
         / "fitted_schedules.json")

_MEAN = optorth.ns.ScalarObjective(worst_weight=0.2)
_WORST = optorth.ns.ScalarObjective(worst_weight=3.0)
_BF16 = optorth.ns.MatrixObjective(dtype=jnp.bfloat16, num_matrices=4, worst_weight=3.0)

#: name -> keyword arguments of ``optorth.fit_schedule`` (``steps`` included).
ENTRIES: dict[str, dict] = {
    # General purpose, exact arithmetic on normalized σ ∈ [1e-3, 1] (log grid), weighted to
    # the mean error (slope at 0) with a worst-case term.
    "fitted3": dict(steps=3, objective=_MEAN),
    "fitted4": dict(steps=4, objective=_MEAN),
    "fitted5": dict(steps=5, objective=_MEAN),
    "fitted6": dict(steps=6, objective=_MEAN),
    # Worst-case oriented, for matrices of shape 256×1024 whose spectra span three decades
    # (σ/σ_max log-uniform on [1e-3, 1]), Frobenius-normalized: σ ∈ [2.8e-4, 0.28].
    "fitted4_256x1024": dict(steps=4, shape=(256, 1024), objective=_WORST),
    "fitted5_256x1024": dict(steps=5, shape=(256, 1024), objective=_WORST),
    # The same, with bf16 compute and the matrix objective (round-off is learned).
    "fitted4_bf16": dict(steps=4, objective=_BF16, shape=(256, 1024), iterations=120),
    "fitted5_bf16": dict(steps=5, objective=_BF16, shape=(256, 1024), iterations=120),
}

#: Entries fitted to momentum spectra recorded from the LM of ``benchmarks/train_lm.py``.
LM_ENTRIES: dict[str, dict] = {
    "fitted4_lm": dict(steps=4, objective=_MEAN),
    "fitted5_lm": dict(steps=5, objective=_MEAN),
}


def load_spectra(path: str, split: str = "train") -> list[np.ndarray]:
    """Spectra saved by ``benchmarks/micro/lm_spectra.py`` (``split``: "train" or "test")."""
    data = np.load(path)
    return [data[k] for k in sorted(data.files) if k.startswith(split + "_")]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="regenerate only these entries")
    parser.add_argument("--spectra", help="recorded LM spectra (.npz from lm_spectra.py)")
    parser.add_argument("--out", default=str(_DATA))
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    existing = {e["name"]: e for e in json.loads(out.read_text())} if out.is_file() else {}
    jobs = dict(ENTRIES)
    if args.spectra:
        spectra = load_spectra(args.spectra)
        source = pathlib.Path(args.spectra).name
        jobs.update({name: dict(kw, spectra=spectra, _source=source)
                     for name, kw in LM_ENTRIES.items()})
    if args.only:
        jobs = {k: v for k, v in jobs.items() if k in args.only}
    for name, kwargs in jobs.items():
        kwargs = dict(kwargs)
        source = kwargs.pop("_source", None)
        start = time.perf_counter()
        sched = optorth.fit_schedule(name=name, **kwargs)
        if source is not None:
            sched = sched.with_table(sched.table, provenance=sched.provenance
                                     + (("spectra_file", source),))
        report = optorth.validate_schedule(sched)
        print(f"{name:18s} {time.perf_counter() - start:6.1f}s  band [{report.band[0]:.3f}, "
              f"{report.band[1]:.3f}] max {report.max_error:.3f} mean {report.mean_error:.3f} "
              f"slope {report.slope_at_zero:.1f}  ok={report.ok}")
        existing[name] = sched.to_dict()
    ordered = [existing[k] for k in list(ENTRIES) + list(LM_ENTRIES) if k in existing]
    ordered += [v for k, v in existing.items() if k not in ENTRIES and k not in LM_ENTRIES]
    out.write_text(json.dumps(ordered, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(ordered)} schedules to {out}")


if __name__ == "__main__":
    main()
