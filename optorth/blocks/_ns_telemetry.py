"""Newton–Schulz telemetry: a cheap per-leaf estimate of how far the orthogonalized update
is from orthogonal, and the dtype the iteration ran in.

For each m × n matrix O (m ≤ n after transposing) the error is the RMS of σ_i² − 1 over its
m singular values, ‖O Oᵀ − I‖_F / √m, estimated from k Gaussian probe vectors Z (m × k):

    ‖A‖_F² ≈ (1/k) Σ_j ‖A z_j‖²,  A z = O (Oᵀ z) − z           (E‖A z‖² = ‖A‖_F²)

two thin products per matrix (2·m·n·k flops), against ≥ 10 m×m×n products for the
iteration. A leaf's value is the RMS over its matrices. Note that the tables that converge
fastest (Jordan's, You's) map singular values into a band around 1 on purpose (Jordan's
≈ [0.7, 1.2]): their error is not zero at float32 either; compare dtypes, schedules and
steps with each other, not with zero.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optorth.blocks._find_states import find_states
from optorth.matrices._paths import unwrap
from optorth.matrices._specs import MatrixSpec


class NSTelemetry(NamedTuple):
    """Telemetry kept in `optorth.blocks.OrthogonalizeState` (plain arrays).

    Attributes:
      errors: ``{leaf path: float32 scalar}``, RMS(σ² − 1) estimated on the last update
        (NaN before the first).
      dtype: a zero-size array in the iteration's effective compute dtype.
    """

    errors: dict
    dtype: jax.Array


def effective_dtype(ns_dtype, leaves) -> jnp.dtype:
    """The dtype the iteration runs in: ``ns_dtype``, else the first leaf's promoted to
    float32 (the engine's rule)."""
    if ns_dtype is not None:
        return jnp.dtype(ns_dtype)
    for leaf in leaves:
        return jnp.promote_types(unwrap(leaf).dtype, jnp.float32)
    return jnp.dtype(jnp.float32)


def init_telemetry(ns_dtype, specs_tree, params, paths) -> NSTelemetry:
    """NaN errors for every matrix leaf and the effective dtype."""
    specs = jax.tree.leaves(specs_tree)
    leaves = jax.tree.leaves(params)
    chosen = [(p, x) for p, s, x in zip(paths, specs, leaves, strict=True)
              if isinstance(s, MatrixSpec)]
    return NSTelemetry({p: jnp.full([], jnp.nan, jnp.float32) for p, _ in chosen},
                       jnp.zeros((0,), effective_dtype(ns_dtype, [x for _, x in chosen])))


def sketched_error_squares(mats, probes: int) -> jax.Array:
    """Per matrix of ``mats`` (``(B, m, n)``), the estimate of ‖O Oᵀ − I‖_F² / min(m, n)."""
    o = mats.astype(jnp.float32)
    if o.shape[-2] > o.shape[-1]:
        o = jnp.swapaxes(o, -1, -2)
    m = o.shape[-2]
    z = jax.random.normal(jax.random.key(0), (m, probes), jnp.float32)
    residual = jnp.einsum("bmn,bnp->bmp", o, jnp.einsum("bmn,mp->bnp", o, z)) - z  # O Oᵀ Z − Z
    return jnp.sum(jnp.square(residual), axis=(-2, -1)) / (probes * m)


def leaf_errors(out_tree, specs_tree, paths, probes: int) -> dict:
    """``{path: RMS over the leaf's matrices of the estimated RMS(σ² − 1)}``."""
    errors = {}
    specs = jax.tree.leaves(specs_tree)
    for path, spec, leaf in zip(paths, specs, jax.tree.leaves(out_tree), strict=True):
        if not isinstance(spec, MatrixSpec):
            continue
        squares = [sketched_error_squares(g, probes) for g in spec.to_groups(leaf)
                   if g.size]
        mean = jnp.mean(jnp.concatenate(squares)) if squares else jnp.float32(0.0)
        errors[path] = jnp.sqrt(mean).astype(jnp.float32)
    return errors


def _find(tree) -> list[NSTelemetry]:
    return find_states(tree, NSTelemetry)


def ns_telemetry(state) -> dict:
    """The Newton–Schulz telemetry of an optimizer state.

    Args:
      state: any optimizer state holding an ``orthogonalize`` state built with
        ``NewtonSchulz(telemetry=k)`` (also inside ``optax.chain``, ``optax.partition``,
        ``inject_hyperparams`` or an ``nnx.Optimizer``'s ``opt_state``).

    Returns:
      The iteration's compute dtype name and each leaf's RMS(σ² − 1) estimated on the last
      update, as ``{"dtype": name, "errors": {leaf path: error}}`` (several orthogonalize
      blocks: their errors merged).

    Example:
      >>> import jax.numpy as jnp, optorth
      >>> tx = optorth.muon(ns=optorth.NewtonSchulz("polar_express5", telemetry=8))
      >>> params = {"w": jnp.eye(8, 16) + 0.1}
      >>> _, state = tx.update(params, tx.init(params), params)
      >>> report = optorth.blocks.ns_telemetry(state)
      >>> report["dtype"], sorted(report["errors"])
      ('float32', ['w'])
    """
    found = _find(state)
    if not found:
        raise ValueError("ns_telemetry: the state holds no Newton–Schulz telemetry; build "
                         "the optimizer with ns=optorth.NewtonSchulz(..., telemetry=8).")
    errors = {}
    for t in found:
        errors.update({p: float(np.asarray(unwrap(v))) for p, v in t.errors.items()})
    return {"dtype": str(unwrap(found[0].dtype).dtype), "errors": errors}
