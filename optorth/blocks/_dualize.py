"""The dualizer (lmo) of any norm per matrix, as a transform. See `dualize`."""

from __future__ import annotations

import optax

from optorth._checks import check_bool
from optorth._distribution import Distribution, as_distribution
from optorth.blocks._orthogonalize import orthogonalize, scale_by_dual
from optorth.matrices import Specs, map_matrices, resolve_specs
from optorth.norms._objects import Norm, Spectral, as_norm


def dualize(norm: Norm | str, *, adaptive: bool = False, specs: Specs = None,
            distribute: Distribution | bool | None = None) -> optax.GradientTransformation:
    """The dualizer (lmo) of ``norm`` per matrix, as a transform: M ↦ lmo(M).

    lmo(M) = argmax_{‖D‖ ≤ 1} ⟨M, D⟩; a step X ← X − η·lmo(M) is the trust-region step of
    radius η under the norm. For `optorth.norms.Spectral` this is
    `optorth.orthogonalize` with the norm's ``NewtonSchulz`` (its table in the state);
    the other norms are stateless. The norm's ``scale`` is not applied here (chain
    `optorth.scale_by_shape` with ``norm.scale``).

    Args:
      norm: an `optorth.norms.Norm` (``Spectral``, ``Frobenius``, ``Sign``, ``Row``,
        ``Column``, ``AuON``, ``HybridAuON``) or its name as shorthand (``"sign"``, ...).
      adaptive: multiply each matrix's direction by the dual norm ⟨M, lmo(M)⟩, per matrix.
      specs: how leaves become matrices (``optorth.matrices.resolve_specs``); leaves routed
        to the fallback pass through unchanged.
      distribute: for norms whose lmo multiplies whole matrices, how stacks of equally
        shaped matrices are divided over a device mesh (an `optorth.Distribution`;
        ``None``: the norm's ``ns.distribute`` where it has one, else the default policy).

    Returns:
      An ``optax.GradientTransformation`` returning lmo(M) (no minus sign).

    Example:
      >>> import optorth, jax.numpy as jnp
      >>> tx = optorth.dualize(optorth.norms.Sign())
      >>> updates, _ = tx.update({"w": jnp.array([[0.5, -2.0]])}, tx.init(None))
      >>> updates["w"].tolist()
      [[1.0, -1.0]]

    References:
      Kovalev, "Understanding Gradient Orthogonalization for Deep Learning via Non-Euclidean
      Trust-Region Optimization" (arXiv 2503.12645).
    """
    norm = as_norm(norm)
    check_bool("dualize", "adaptive", adaptive)
    if distribute is None:
        distribute = getattr(getattr(norm, "ns", None), "distribute", None)
    distribute = as_distribution(distribute, "dualize")
    if isinstance(norm, Spectral):  # the lmo keeps its coefficient table in the state
        return orthogonalize(norm.ns, specs=specs, adaptive=adaptive, distribute=distribute)

    def direction(mats):
        out = norm.lmo(mats)
        return scale_by_dual(mats, out) if adaptive else out

    def update_fn(updates, state, params=None):
        del params
        specs_tree = resolve_specs(specs, updates, who="dualize")
        if norm.whole_matrix:  # matrix products: stack and distribute as Newton–Schulz does
            return map_matrices(direction, updates, specs_tree, transpose_tall=True,
                                distribute=distribute), state
        return map_matrices(direction, updates, specs_tree, distribute=False), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
