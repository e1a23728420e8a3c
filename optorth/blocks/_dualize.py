"""The dualizer (lmo) of any norm per matrix, as a transform. See :func:`dualize`.
"""

from __future__ import annotations

import inspect

import optax

from optorth.blocks._orthogonalize import orthogonalize, scale_by_dual
from optorth.matrices._resolve import Specs, resolve_specs
from optorth.matrices._sharding import sharded_map_matrix_groups
from optorth.matrices._specs import map_matrices
from optorth.norms._functions import get_norm

#: Norms whose lmo multiplies whole matrices (Newton–Schulz) and commutes with transposition:
#: they run grouped and distributed like :func:`orthogonalize`; the others are elementwise
#: maps and reductions that XLA partitions with scalar-sized all-reduces.
_WHOLE_MATRIX_NORMS = frozenset({"hybrid_auon"})


def _check_options(name, lmo, options):
    try:
        inspect.signature(lmo).bind(None, **options)
    except TypeError as err:
        accepted = [p for p in inspect.signature(lmo).parameters][1:]
        raise ValueError(f"dualize({name!r}) got options {sorted(options)}; it accepts "
                         f"{accepted}. ({err})") from None


def dualize(norm: str, *, adaptive: bool = False, specs: Specs = None,
            **options) -> optax.GradientTransformation:
    """The dualizer (lmo) of ``norm`` per matrix, as a transform.

    ``norm`` is one of ``"spectral"`` (delegates to :func:`orthogonalize`, ``options`` are its
    arguments), ``"frobenius"``, ``"sign"``, ``"row"``, ``"column"``, ``"auon"`` and
    ``"hybrid_auon"`` (``options``: ``gamma``, ``eps``). See ``optorth.norms._functions`` for the
    formulas and dual norms.

    Args:
      norm: the norm's name.
      adaptive: multiply each matrix's direction by the dual norm ⟨M, lmo(M)⟩, per matrix.
      specs: how leaves become matrices (see the module docstring).
      **options: keyword options of the norm's lmo.

    Returns:
      An ``optax.GradientTransformation`` returning lmo(M) (no minus sign).

    References:
      Kovalev, "Understanding Gradient Orthogonalization for Deep Learning via Non-Euclidean
      Trust-Region Optimization" (arXiv 2503.12645).
    """
    if norm == "spectral":
        return orthogonalize(specs=specs, adaptive=adaptive, **options)
    lmo = get_norm(norm).lmo
    _check_options(norm, lmo, options)

    def direction(mats):
        out = lmo(mats, **options)
        return scale_by_dual(mats, out) if adaptive else out

    def update_fn(updates, state, params=None):
        del params
        specs_tree = resolve_specs(specs, updates)
        if norm in _WHOLE_MATRIX_NORMS:  # matrix products: stack and distribute as NS does
            return sharded_map_matrix_groups(lambda _, m: direction(m), updates, specs_tree,
                                             transpose_tall=True), state
        return map_matrices(direction, updates, specs_tree), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
