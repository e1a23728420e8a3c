"""Spectra of real momentum matrices → a fitted schedule, vs Jordan and Polar Express.

    python -m benchmarks.micro.lm_spectra [--steps 300] [--every 10] [--fit-steps 4 5] [--compare]

1. Trains ``muon`` on the character LM of ``benchmarks/train_lm.py`` (its default config)
   and, every ``--every`` steps, records the singular values of every hidden-matrix momentum
   (``info.state_matrices()``, paths with ``/matrix/`` and ``/mu/``) with
   ``optorth.blocks.matrix_spectrum``, relative to each matrix's Frobenius norm (the engine's
   normalization). Alternate records form the fitting ("train") and held-out ("test") sets;
   the test records also keep the momentum matrices themselves.
2. Fits ``optorth.fit_schedule(T, spectra=train)`` for each T.
3. Prints mean and max |σ − 1| on the held-out spectra for Jordan, the Polar Express preset,
   ``polar_express_schedule(T)``, the shipped general ``fittedT`` and the new fit: exactly
   (composed map on the recorded σ), and on the real held-out momentum matrices run through
   ``optorth.newton_schulz`` in float32 and bf16 (output σ by float64 SVD).
4. ``--compare`` trains ``muon`` with Jordan's and with the fitted schedules at equal steps and
   prints their validation losses.

Writes ``out/lm_spectra.npz`` (train_*/test_* spectra; input of
``benchmarks/micro/fit_schedules.py --spectra``), ``out/lm_momenta.npz`` (the held-out momenta;
``--reuse`` skips training when both exist) and ``out/lm_spectra_T.json`` (the fits).
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import optorth
from benchmarks.lm import Config, LMTask
from benchmarks.runner import registry
from benchmarks.runner import train as run


def train(name: str, cfg: Config, callbacks=()):
    """The main job's run of ``name`` (a registry name) by the runner's loop."""
    return run(LMTask(cfg), registry.build(name, cfg), callbacks=callbacks, name=name)


def record(cfg: Config, every: int):
    """Trains muon and returns ``(records, matrices)``: per record a list of spectra, and the
    raw momentum matrices of every record (float32 NumPy)."""
    records, matrices = [], []

    def callback(info):
        if info.step % every:
            return
        mats = {k: v for k, v in info.state_matrices().items() if "/matrix/" in k and "/mu/" in k}
        spectra = []
        for mat in mats.values():
            values, _ = optorth.blocks.matrix_spectrum(mat, min(mat.shape[-2:]))
            spectra.append(np.asarray(values, np.float64))
        records.append(spectra)
        matrices.append([np.asarray(m, np.float32) for m in mats.values()])

    history = train("muon", cfg, [callback])
    return records, matrices, history


def phi(sched: optorth.Schedule, sigma):
    x = np.asarray(sigma, np.float64) / sched.safety
    for a, b, c in sched.rows():
        x = a * x + b * x**3 + c * x**5
    return x


_ENGINES = {}


def engine_errors(sched: optorth.Schedule, mats, dtype):
    """|σ − 1| of the engine's output singular values over all ``mats`` (float64 SVD).

    Matrices are stacked by shape and run through one jitted call per shape and setting.
    """
    errs = []
    by_shape = {}
    for m in mats:
        by_shape.setdefault(m.shape, []).append(m)
    key = (sched.precondition, sched.safety, dtype)
    if key not in _ENGINES:
        _ENGINES[key] = jax.jit(lambda x, c: optorth.ns.newton_schulz_table(
            x, c, precondition=key[0], safety=key[1], dtype=key[2]))
    coeffs = jnp.asarray(sched.rows(), jnp.float32)
    for group in by_shape.values():
        out = _ENGINES[key](jnp.asarray(np.stack(group)), coeffs)
        s = np.linalg.svd(np.asarray(out, np.float64), compute_uv=False)
        errs.append(np.abs(s - 1.0).ravel())
    return np.concatenate(errs)


def contenders(steps: int, fitted: optorth.Schedule) -> dict[str, optorth.Schedule]:
    out = {
        "jordan": optorth.ns.PRESETS["jordan"].with_table(optorth.ns.PRESETS["jordan"].rows(steps),
                                                      extend="fixed"),
        "polar_express": optorth.ns.PRESETS["polar_express"].with_table(
            optorth.ns.PRESETS["polar_express"].rows(steps), extend="fixed"),
        f"polar_express_schedule({steps})": optorth.ns.polar_express_schedule(steps),
    }
    general = optorth.ns.resolve_schedule(f"fitted{steps}") if f"fitted{steps}" in \
        optorth.ns.preset_names() else None
    if general is not None:
        out[f"fitted{steps} (shipped, general)"] = general
    out[f"fitted{steps}_lm (this run)"] = fitted
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--fit-steps", type=int, nargs="+", default=[4, 5])
    parser.add_argument("--worst-weight", type=float, default=0.2)
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse out/lm_spectra.npz and out/lm_momenta.npz (skip training)")
    parser.add_argument("--out", default="out")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = Config(steps=args.steps)
    history = None
    if args.reuse and (out / "lm_momenta.npz").is_file():
        saved, mats_file = np.load(out / "lm_spectra.npz"), np.load(out / "lm_momenta.npz")
        train_sp = [saved[k] for k in sorted(saved.files) if k.startswith("train_")]
        test_sp = [saved[k] for k in sorted(saved.files) if k.startswith("test_")]
        test_mats = [mats_file[k] for k in sorted(mats_file.files)]
        print(f"reusing {out / 'lm_spectra.npz'} and {out / 'lm_momenta.npz'}")
    else:
        records, matrices, history = record(cfg, args.every)
        train_sp = [s for r in records[0::2] for s in r]
        test_sp = [s for r in records[1::2] for s in r]
        test_mats = [m for r in matrices[1::2] for m in r]
        np.savez(out / "lm_spectra.npz",
                 **{f"train_{i:04d}": s for i, s in enumerate(train_sp)},
                 **{f"test_{i:04d}": s for i, s in enumerate(test_sp)})
        np.savez(out / "lm_momenta.npz", **{f"m{i:04d}": m for i, m in enumerate(test_mats)})
    shapes = sorted({m.shape for m in test_mats})
    print(f"\nhidden momenta {shapes} recorded every {args.every} of {args.steps} steps; fit "
          f"on {len(train_sp)} spectra (even records), test on {len(test_sp)} spectra / "
          f"matrices (odd records)")
    sigma_test = np.concatenate(test_sp)
    print(f"held-out normalized σ: median {np.median(sigma_test):.3g}, "
          f"1% quantile {np.quantile(sigma_test, 0.01):.3g}, max {sigma_test.max():.3g}")
    fitted = {}
    for t in args.fit_steps:
        sched = optorth.fit_schedule(t, optorth.ns.ScalarObjective(worst_weight=args.worst_weight),
                                     spectra=train_sp,
                                     name=f"fitted{t}_lm")
        fitted[t] = sched
        (out / f"lm_spectra_{t}.json").write_text(sched.to_json())
        print(f"\n== {t} steps (mean / max |σ − 1| on held-out momenta)")
        print(f"{'schedule':34s} {'exact mean':>10s} {'max':>7s} | {'f32 mean':>9s} {'max':>7s} | "
              f"{'bf16 mean':>9s} {'max':>7s}")
        for name, s in contenders(t, sched).items():
            e = np.abs(phi(s, sigma_test) - 1)
            f32 = engine_errors(s, test_mats, None)
            b16 = engine_errors(s, test_mats, jnp.bfloat16)
            print(f"{name:34s} {e.mean():10.4f} {e.max():7.3f} | {f32.mean():9.4f} "
                  f"{f32.max():7.3f} | {b16.mean():9.4f} {b16.max():7.3f}")
    if args.compare:
        compare(cfg, fitted, history or train("muon", cfg))
    return fitted


def compare(cfg, fitted, jordan_history):
    """Validation loss of muon with Jordan's vs fitted schedules at equal steps."""
    rows = [("muon (jordan, 5 steps)", jordan_history)]
    for t in fitted:
        path = pathlib.Path("out") / f"lm_spectra_{t}.json"
        rows.append((f"muon@fitted{t}_lm", train(f"muon@{path}", cfg)))
    print("\nvalidation loss (nats/char) at equal steps:")
    for name, h in rows:
        print(f"  {name:28s} " + "  ".join(f"step {s}: {v:.4f}" for s, v in
                                          zip(h.eval_steps, h.val_loss, strict=True)
                                          if s in cfg.table_steps()))


if __name__ == "__main__":
    main()
