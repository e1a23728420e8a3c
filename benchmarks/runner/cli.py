"""``python -m benchmarks run|report|list``: run an experiment's missing runs, render its tables.

    python -m benchmarks list
    python -m benchmarks run sweep [--smoke] [--set seeds=1 --set tasks=cnn] [--fresh]
    python -m benchmarks report sweep

``run`` trains every run of the experiment's plan that its record store
(``--out``/<experiment>.jsonl; ``benchmarks/results/`` by default, ``out/smoke/`` with
``--smoke``) does not hold yet, appending each as it finishes, then reports. ``report``
writes the experiment's tables to ``--out``/<experiment>_<platform>.md and, when ``docs/results.md``
marks a place for them (``<!-- results:NAME -->`` … ``<!-- /results:NAME -->``), there too.
``--set field=value`` changes a field of the experiment's grid (comma-separated for lists).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import pathlib
import re
import sys
import types
import typing

from benchmarks.experiments import NAMES

from .experiment import run_spec
from .store import Store

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
DOCS_PAGE = ROOT / "docs" / "results.md"


def experiment(name: str):
    if name not in NAMES:
        raise SystemExit(f"unknown experiment {name!r}; choose from {', '.join(NAMES)}")
    return importlib.import_module(f"benchmarks.experiments.{name}")


def _value(text: str, kind):
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):  # X | None
        if text.lower() == "none":
            return None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
        origin = typing.get_origin(kind)
    if origin is tuple:
        inner = typing.get_args(kind)[0]
        return tuple(_value(t.strip(), inner) for t in text.split(",") if t.strip())
    if kind is bool:
        return text.lower() in ("1", "true", "yes")
    return kind(text)


def make_grid(module, smoke: bool, settings: list[str]):
    """The experiment's grid (smoke or full) with ``field=value`` changes."""
    grid = module.Grid.smoke() if smoke else module.Grid()
    hints = typing.get_type_hints(module.Grid)
    changes = {}
    for item in settings:
        field, sep, text = item.partition("=")
        if not sep or field not in hints:
            raise SystemExit(f"--set {item!r}: expected field=value with a field of "
                             f"{', '.join(hints)}")
        changes[field] = _value(text, hints[field])
    return dataclasses.replace(grid, **changes)


def run(module, grid, store: Store, *, fresh: bool = False) -> int:
    """Train what ``store`` lacks of ``module.plan(grid, store)``; the number of runs."""
    execute = getattr(module, "execute", run_spec)
    ran, seen = 0, set()
    for _ in range(getattr(module, "rounds", lambda g: 1)(grid)):
        todo = [s for s in module.plan(grid, store)
                if s.key not in seen and (fresh or store.get(s) is None)]
        todo = list({s.key: s for s in todo}.values())
        for i, spec in enumerate(todo, 1):
            result = store.add(spec, execute(spec))["result"]
            seen.add(spec.key)
            loss = result.get("final_val_loss", float("nan"))
            print(f"[{i}/{len(todo)}] {spec.task} {spec.optimizer} lr={spec.lr} "
                  f"seed={spec.seed} {dict(spec.options) or ''}: final {loss:.4f}, "
                  f"{result.get('seconds', 0):.0f} s", flush=True)
        ran += len(todo)
        if not todo:
            break
    return ran


def write_report(name: str, text: str, out: pathlib.Path, docs: pathlib.Path | None) -> None:
    """``text`` to ``out``/<name>.md and between the page's markers for ``name``."""
    import jax

    path = out / f"{name}_{jax.devices()[0].platform}.md"
    path.write_text(text if text.endswith("\n") else text + "\n")
    if docs is not None and docs.exists():
        page = docs.read_text()
        begin, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        body = re.sub(r"^#+ (.*)$", r"**\1**", text.strip(), flags=re.M)  # page headings stay
        if pattern.search(page):
            docs.write_text(pattern.sub(lambda _: f"{begin}\n{body}\n{end}", page))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split(
        "\n\n")[0], epilog="experiments: " + ", ".join(NAMES))
    parser.add_argument("command", choices=("run", "report", "list"))
    parser.add_argument("experiment", nargs="?")
    parser.add_argument("--smoke", action="store_true", help="the experiment's tiny grid")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--fresh", action="store_true", help="rerun recorded runs too")
    parser.add_argument("--out", default=None, help="store and tables (benchmarks/results; "
                                                    "smoke: out/smoke)")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in NAMES:
            print(f"{name:<18} {(experiment(name).__doc__ or '').splitlines()[0]}")
        return {}
    module = experiment(args.experiment or "")
    grid = make_grid(module, args.smoke, args.set)
    out = pathlib.Path(args.out) if args.out else (
        pathlib.Path("out/smoke") if args.smoke else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / f"{args.experiment}.jsonl")
    ran = run(module, grid, store, fresh=args.fresh) if args.command == "run" else 0
    text = module.report(grid, store)
    name = getattr(module, "table_name", lambda g: args.experiment)(grid)
    write_report(name, text, out, None if args.smoke or args.out else DOCS_PAGE)
    print(text)
    print(f"{ran} new runs; records in {store.path}", file=sys.stderr)
    return {"ran": ran, "report": text, "store": store, "grid": grid}
