"""Fixtures shared by several test modules."""

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
