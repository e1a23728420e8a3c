"""Reading a routed ready optimizer's state: its matrix path and its fallback.

A routed ready optimizer's state is ``optax.partition``'s, nested in the guard that gives
integer leaves a zero update (and, with ``qk_clip``, chained with QK-clip's). These readers find
the partition wherever it sits (also inside ``optax.inject_hyperparams``, ``optax.MultiSteps``
or ``nnx.Optimizer.opt_state``), so code that inspects a state does not spell out the nesting.
The nesting itself stays: its paths are the keys of every saved checkpoint (Orbax restores by
path into ``tx.init(params)``'s structure), so a flatter state would not restore them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from optorth.optimizers._assemble import FALLBACK, MATRIX


def _is_routed(x) -> bool:
    inner = getattr(x, "inner_states", None)
    return isinstance(inner, Mapping) and set(inner) == {MATRIX, FALLBACK}


def _routed(who: str, state):
    found = [x for x in jax.tree.leaves(state, is_leaf=_is_routed) if _is_routed(x)]
    if len(found) != 1:
        raise ValueError(
            f"optorth.optimizers.{who}: the state holds {len(found)} partitions into a matrix "
            f"path and a fallback, expected one. Pass the state of one routed ready optimizer "
            f"(tx.init(params) or a later state); optorth.adafactor has no matrix path.")
    return found[0].inner_states


def matrix_state(state) -> tuple[Any, ...]:
    """The states of the matrix path's blocks, in pipeline order.

    Args:
      state: the state of a routed ready optimizer (every one but `optorth.adafactor`).

    Returns:
      A tuple with one entry per block of the matrix path: the momentum's
      (`optorth.blocks.MomentumState`) first, then the direction's (e.g.
      `optorth.blocks.OrthogonalizeState`), the second moments' where there are any, then
      the weight decay's and learning rate's (empty states). Leaves that take the fallback
      hold ``optax.MaskedNode()``.

    Example:
      >>> import jax.numpy as jnp, optorth
      >>> state = optorth.muon().init({"w": jnp.ones((4, 8)), "b": jnp.zeros(8)})
      >>> optorth.optimizers.matrix_state(state)[0].mu["w"].shape
      (4, 8)
    """
    return tuple(_routed("matrix_state", state)[MATRIX].inner_state)


def fallback_state(state) -> Any:
    """The state of the fallback optimizer (by default AdamW's) of the non-matrix leaves.

    Args:
      state: the state of a routed ready optimizer (every one but `optorth.adafactor`).

    Returns:
      The fallback's own state; leaves on the matrix path hold ``optax.MaskedNode()``.

    Example:
      >>> import jax.numpy as jnp, optorth
      >>> state = optorth.muon().init({"w": jnp.ones((4, 8)), "b": jnp.zeros(8)})
      >>> adam = optorth.optimizers.fallback_state(state)[0]
      >>> adam.mu["b"].shape
      (8,)
    """
    return _routed("fallback_state", state)[FALLBACK].inner_state
