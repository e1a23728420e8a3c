"""Reading the Newton–Schulz coefficient table out of an optimizer state."""

from __future__ import annotations

from typing import Any

import jax

from optorth.blocks._orthogonalize import OrthogonalizeState
from optorth.matrices._paths import unwrap


def coefficients(state) -> Any:
    """The Newton–Schulz coefficient table that the state's `orthogonalize` block runs.

    Works on the state of any optax transformation holding one `orthogonalize` block (every
    Muon-family ready optimizer, `trust_region` under a spectral norm, your own chain, inside
    ``optax.inject_hyperparams`` or ``optax.MultiSteps``) and on ``nnx.Optimizer.opt_state``.

    Args:
      state: an optimizer state (``tx.init(params)`` or a later one).

    Returns:
      The ``(T, 3)`` table (row t: the a, b, c of step t), or for per-shape tables (``"root"``)
      a dict ``{"{min(m,n)}x{max(m,n)}": table}``. Learned online, it changes during training.

    Raises:
      ValueError: when the state holds no `orthogonalize` block, or several (then read each
        with ``optorth.checkpoint.coefficient_states``).

    Example:
      >>> import jax.numpy as jnp, optorth
      >>> state = optorth.muon().init({"w": jnp.ones((4, 8))})
      >>> optorth.coefficients(state).shape
      (5, 3)
    """
    def is_block_state(x) -> bool:
        return isinstance(x, OrthogonalizeState)

    found = [x for x in jax.tree.leaves(state, is_leaf=is_block_state) if is_block_state(x)]
    if len(found) != 1:
        raise ValueError(
            f"optorth.coefficients: the state holds {len(found)} orthogonalize blocks, expected "
            f"exactly one. "
            + ("Pass the state of an optimizer with Newton–Schulz (e.g. optorth.muon; "
               "trust_region needs norm=Spectral())." if not found else
               "Read each with optorth.checkpoint.coefficient_states(state)."))
    table = unwrap(found[0].coeffs)
    if isinstance(table, dict):
        return {key: unwrap(value) for key, value in table.items()}
    return table
