"""Fixtures shared by several test modules, and which tier a test belongs to.

A test takes one of three tiers (``conftest.py`` at the repository root selects them):

* no marker, the fast tier that ``python -m pytest`` runs while working (about 3 minutes on
  2 cores): unit tests, docstring examples, static checks (layering, public surface) and one
  ready optimizer per code path (``FAST`` in ``_ready.py``);
* ``@pytest.mark.slow`` (``--tier=slow``): every other ready optimizer, fits, training runs,
  multi-device subprocesses, the README's examples; anything over a few seconds;
* ``@pytest.mark.extensive`` (``--tier=all``): notebooks and the benchmarks' own tests that run
  a benchmark (in ``benchmarks/tests/``).

Marking is all it takes, for a function, a ``pytest.param(..., marks=pytest.mark.slow)`` case
or a whole module (``pytestmark = pytest.mark.slow``). ``python -m pytest --tier=all`` runs
every tier (what ``.ci/run`` runs); library tests never import ``benchmarks``.
"""

import jax
import pytest


@pytest.fixture
def float32_matmuls():
    """Run float32 matmuls at float32 precision. XLA's CPU always does; on GPU/TPU the default
    rounds operands to TF32/bf16 (on an H200 half of the Newton–Schulz tests then fail with
    deviations of 5e-3 for the standard iteration), which is a different numerical regime.

    Use it for a whole module with ``pytestmark = pytest.mark.usefixtures("float32_matmuls")``.
    """
    with jax.default_matmul_precision("highest"):
        yield
