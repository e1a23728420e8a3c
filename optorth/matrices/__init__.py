"""How a parameter tree becomes matrices, and which leaves take the matrix path.

The ground floor under the blocks (it imports nothing from ``ns``, ``norms``, ``blocks`` or
``optimizers``). What it offers:

- **Seeing a leaf as matrices.** `MatrixSpec`: the fan-in, fan-out, batch, head and
  fused-block axes of a weight, and the exact conversions between the leaf and its
  ``(B, m, n)`` matrices.
- **Routing (which leaf takes which path).** `route`, `routing_decisions`, `Decision`,
  `describe_routing` and `routing_report` (never raise: every leaf, suggested rules for the
  leaves route refuses, `RoutingWarning` s for likely mistakes), `nnx_attention_rules` and
  the default name patterns `EMBEDDING_PATTERNS`, `HEAD_PATTERNS`, `BIAS_PATTERNS`,
  `ADAPTER_PATTERNS`. ``FALLBACK`` is the target ``"fallback"``.
- **Specs (the one resolver).** `resolve_specs` reads the ``specs`` argument of every block
  the same way: ``None`` is `route`; otherwise a pytree (or prefix) of ``MatrixSpec`` /
  ``"fallback"`` / ``None`` or a callable ``tree -> such a pytree``, such as `route_specs`
  ``(rules)``. Specs are matched to leaves by path, so they work inside ``optax.partition`` /
  ``optax.masked`` and under Flax NNX.
- **Mapping (the one per-matrix mapper).** `map_matrices` applies a per-matrix function to
  every matrix of a tree, one batched call per matrix shape and dtype, distributed over a
  device mesh when there is one; `describe_groups` prints the stacks it forms.

Example:
  >>> import jax.numpy as jnp
  >>> from optorth import matrices
  >>> params = {"embed": jnp.ones((10, 4)), "w": jnp.ones((4, 8)), "b": jnp.ones(8)}
  >>> print(matrices.describe_routing(params).splitlines()[-1])
  1 matrix leaves, 2 fallback leaves
  >>> out = matrices.map_matrices(lambda m: 2 * m, params, None)   # specs=None: route
  >>> float(out["w"][0, 0]), float(out["embed"][0, 0])
  (2.0, 1.0)
"""

from optorth.matrices._grouping import describe_groups
from optorth.matrices._map import map_matrices
from optorth.matrices._report import (
    RoutingReport,
    RoutingWarning,
    describe_routing,
    routing_report,
)
from optorth.matrices._resolve import Specs, resolve_specs, route_specs
from optorth.matrices._routing import (
    ADAPTER_PATTERNS,
    BIAS_PATTERNS,
    EMBEDDING_PATTERNS,
    FALLBACK,
    HEAD_PATTERNS,
    Decision,
    nnx_attention_rules,
    route,
    routing_decisions,
)
from optorth.matrices._specs import MatrixSpec

__all__ = [
    "ADAPTER_PATTERNS",
    "BIAS_PATTERNS",
    "EMBEDDING_PATTERNS",
    "FALLBACK",
    "HEAD_PATTERNS",
    "Decision",
    "MatrixSpec",
    "RoutingReport",
    "RoutingWarning",
    "Specs",
    "describe_groups",
    "describe_routing",
    "map_matrices",
    "nnx_attention_rules",
    "resolve_specs",
    "route",
    "route_specs",
    "routing_decisions",
    "routing_report",
]
