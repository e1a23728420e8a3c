"""Test tiers, for every test path (``tests/``, ``benchmarks/tests/`` and optorth's docstrings).

``python -m pytest`` runs the fast tier: every test without a tier marker. ``--tier=slow`` adds
the tests marked ``slow``; ``--tier=all`` adds those marked ``extensive`` as well (what
``.ci/run`` runs). An explicit ``-m`` expression without ``--tier`` selects from all tiers, so
``python -m pytest -m slow`` runs exactly the slow tests. Which marker a test takes is
described in ``tests/conftest.py``.
"""

from __future__ import annotations

import os

import pytest

#: Tier name -> the markers whose tests it leaves out.
TIERS: dict[str, frozenset[str]] = {
    "fast": frozenset({"slow", "extensive"}),
    "slow": frozenset({"extensive"}),
    "all": frozenset(),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--tier", choices=tuple(TIERS), default=None,
        help="fast (the default): unmarked tests; slow: also tests marked slow; all: also "
             "tests marked extensive. Without --tier, an explicit -m selects from all tiers.")
    parser.addoption(
        "--fast-compile", action="store_true",
        help="compile with XLA's expensive optimization passes off (about a third less CPU "
             "time; tests that compare two programs bit for bit may then differ in rounding)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fast-compile"):
        compile_quickly()


def compile_quickly() -> None:
    """Compile with XLA's expensive passes off, here and in child processes.

    The tests run tiny shapes, so XLA's compile time dominates and its optimizations save
    next to nothing at run time. ``jax_disable_most_optimizations`` lowers the LLVM backend's
    optimization level and skips its expensive passes; the programs compute the same
    operations, but rounding may differ where XLA would have fused them, so tests that
    assert two programs agree bit for bit (``tests/test_grouping.py``) can fail. Opt-in with
    ``--fast-compile``.
    """
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # xdist workers, subprocesses
    import jax

    jax.config.update("jax_disable_most_optimizations",
                      os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] not in ("0", "false", ""))


def selected_tier(config: pytest.Config) -> str:
    """The tier this run selects: ``--tier``, else ``all`` under ``-m``, else ``fast``."""
    return config.getoption("--tier") or ("all" if config.getoption("-m") else "fast")


def pytest_report_header(config: pytest.Config) -> str:
    return f"test tier: {selected_tier(config)} (choose with --tier=fast|slow|all)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    left_out = TIERS[selected_tier(config)]
    keep, drop = [], []
    for item in items:
        marked = {mark.name for mark in item.iter_markers()}
        (drop if marked & left_out else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
