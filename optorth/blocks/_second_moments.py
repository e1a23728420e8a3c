"""Second-moment normalizations of orthogonalized updates, per matrix, statistics in float32.

Blocks that follow a dualizer (``optorth.orthogonalize``) in the NorMuon / AdaMuon family. For
each matrix O (m × n; m = fan-in, n = fan-out, as ``MatrixSpec.to_matrices`` lays it out):

* `scale_by_neuron_rms` (NorMuon): one statistic per output neuron (column),
  v ← β2 v + (1 − β2) · mean_rows(O²);  O ← O / (√v + ε).
* `scale_by_elementwise_rms` (AdaMuon): one per entry, bias-corrected,
  v ← β2 v + (1 − β2) O²;  O ← O / (√(v / (1 − β2^t)) + ε).
* `keep_matrix_norm`: wraps a block so each matrix leaves it with the Frobenius norm it
  entered with (NorMuon's rescaling).
* `scale_to_rms`: O ← ρ · sqrt(mn) · O / (‖O‖_F + ε), i.e. RMS ρ (AdaMuon's
  "RMS-aligned" rescaling, ρ = 0.2).

The factored (row and column) statistics are `optorth.scale_by_factored_rms`.

``specs`` is read by ``optorth.matrices.resolve_specs``, as for ``optorth.orthogonalize``:
``None`` (``optorth.route``), a pytree (or prefix) of ``MatrixSpec`` / ``"fallback"`` /
``None``, or a callable ``tree -> that pytree``. These blocks normalize what the matrix path
produced, so they follow it: ``"fallback"`` leaves pass through unchanged and have no state
(unlike the factored and per-matrix RMS statistics, which see a fallback leaf over its last
two axes). A complex leaf sent to the matrix path is refused.

Why not ``optax.scale_by_rms``: it keeps ν in the parameter dtype; with bf16 parameters an
EMA with β2 = 0.999 stalls (0.999·ν rounds back to ν in bf16, 8 mantissa bits).

References:
  Li et al., "NorMuon: Making Muon more efficient and scalable" (arXiv 2510.05491).
  Si, Zhang & Shen, "AdaMuon: Adaptive Muon Optimizer" (arXiv 2507.11005).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax.numpy as jnp
import optax

from optorth._checks import check_decay, check_dtype, check_positive
from optorth.matrices._per_matrix import matrix_shape, statistics_leaves, to_view
from optorth.matrices._specs import MatrixSpec


def _specs_for(tree, specs, who):
    """(leaves, treedef, per-leaf MatrixSpec or None) for ``tree``: these blocks follow the
    matrix path, so a ``"fallback"`` leaf (``None`` here) passes through without state."""
    leaves, treedef, spec_list, _ = statistics_leaves(tree, specs, who=who,
                                                         fallback_stats=False)
    return leaves, treedef, [s if isinstance(s, MatrixSpec) else None for s in spec_list]


def _frobenius(view):
    return jnp.sqrt(jnp.sum(jnp.square(view.astype(jnp.float32)), axis=(-2, -1), keepdims=True))


def _neuron_shape(spec, leaf) -> tuple[int, ...]:
    """``(B, n)``: one statistic per output neuron of each matrix of the leaf."""
    b, _, n = matrix_shape(spec, jnp.shape(leaf))
    return (b, n)


# ----- NorMuon: per-neuron second moment -------------------------------------------------------
class ScaleByNeuronRMSState(NamedTuple):
    """State of `scale_by_neuron_rms`: per matrix leaf, v of shape ``(B, n)``."""

    v: Any


def scale_by_neuron_rms(
    beta2: float = 0.95,
    eps: float = 1e-10,
    *,
    specs: Any = None,
    stats_dtype: Any = "float32",
) -> optax.GradientTransformation:
    """Divides each output neuron (column) of each matrix by the RMS of its EMA'd entries.

    v ← β2 v + (1 − β2) · mean over fan-in of O²  (n values per matrix, v₀ = 0, no bias
    correction: a common factor that `keep_matrix_norm` removes);  O ← O / (√v + ε).

    Args:
      beta2: β2 of the EMA (NorMuon: 0.95).
      eps: ε added to √v (NorMuon: 1e-10).
      specs: see the module docstring.
      stats_dtype: dtype of v (default float32).

    Returns:
      An ``optax.GradientTransformation`` with state `ScaleByNeuronRMSState`; n floats
      per m × n matrix.

    References:
      Li et al., "NorMuon" (arXiv 2510.05491).
    """
    who = "scale_by_neuron_rms"
    check_decay(who, "beta2", beta2)
    check_positive(who, "eps", eps)
    stats_dtype = jnp.dtype(check_dtype(who, "stats_dtype", stats_dtype))

    def init_fn(params):
        leaves, treedef, specs_ = _specs_for(params, specs, who)
        v = [
            optax.MaskedNode() if s is None else jnp.zeros(_neuron_shape(s, p), stats_dtype)
            for p, s in zip(leaves, specs_, strict=True)
        ]
        return ScaleByNeuronRMSState(v=treedef.unflatten(v))

    def leaf(u, s, v):
        view, back = to_view(u, s)
        chex.assert_shape(v, view.shape[:-2] + view.shape[-1:])
        o = view.astype(jnp.float32)
        fan_in = max(o.shape[-2], 1)  # an empty fan-in axis gives 0, not mean([]) = NaN
        neuron_mean = jnp.sum(jnp.square(o), axis=-2) / fan_in
        v32 = beta2 * v.astype(jnp.float32) + (1.0 - beta2) * neuron_mean
        out = o / (jnp.sqrt(v32)[..., None, :] + eps)
        return back(out).astype(u.dtype), v32.astype(v.dtype)

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef, specs_ = _specs_for(updates, specs, who)
        vs = treedef.flatten_up_to(state.v)
        out = [
            (u, v) if s is None else leaf(u, s, v)
            for u, s, v in zip(leaves, specs_, vs, strict=True)
        ]
        return (
            treedef.unflatten([o[0] for o in out]),
            ScaleByNeuronRMSState(v=treedef.unflatten([o[1] for o in out])),
        )

    return optax.GradientTransformation(init_fn, update_fn)


# ----- AdaMuon: element-wise second moment ----------------------------------------------------
class ScaleByElementwiseRMSState(NamedTuple):
    """State of `scale_by_elementwise_rms`: the step count and v (leaf-shaped)."""

    count: chex.Array
    v: Any


def scale_by_elementwise_rms(
    beta2: float = 0.999,
    eps: float = 1e-8,
    *,
    bias_correction: bool = True,
    specs: Any = None,
    stats_dtype: Any = "float32",
) -> optax.GradientTransformation:
    """Adam's second moment on the (orthogonalized) update, for matrix leaves only.

    v ← β2 v + (1 − β2) O²;  v̂ = v / (1 − β2^t) (if ``bias_correction``);  O ← O / (√v̂ + ε).

    Args:
      beta2: β2 (AdaMuon: 0.999).
      eps: ε added to √v̂ (AdaMuon: 1e-8).
      bias_correction: divide v by 1 − β2^t.
      specs: see the module docstring (only leaves with a ``MatrixSpec`` are scaled).
      stats_dtype: dtype of v (default float32).

    Returns:
      An ``optax.GradientTransformation`` with state `ScaleByElementwiseRMSState`; one
      float per matrix entry.

    References:
      Si, Zhang & Shen, "AdaMuon: Adaptive Muon Optimizer" (arXiv 2507.11005).
    """
    who = "scale_by_elementwise_rms"
    check_decay(who, "beta2", beta2)
    check_positive(who, "eps", eps)
    stats_dtype = jnp.dtype(check_dtype(who, "stats_dtype", stats_dtype))

    def init_fn(params):
        leaves, treedef, specs_ = _specs_for(params, specs, who)
        v = [
            optax.MaskedNode() if s is None else jnp.zeros_like(p, stats_dtype)
            for p, s in zip(leaves, specs_, strict=True)
        ]
        return ScaleByElementwiseRMSState(jnp.zeros([], jnp.int32), treedef.unflatten(v))

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef, specs_ = _specs_for(updates, specs, who)
        vs = treedef.flatten_up_to(state.v)
        count = optax.safe_increment(state.count)
        debias = 1.0 - beta2 ** count.astype(jnp.float32) if bias_correction else 1.0
        out_u, out_v = [], []
        for u, s, v in zip(leaves, specs_, vs, strict=True):
            if s is not None:
                o = u.astype(jnp.float32)
                v32 = beta2 * v.astype(jnp.float32) + (1.0 - beta2) * jnp.square(o)
                u, v = (o / (jnp.sqrt(v32 / debias) + eps)).astype(u.dtype), v32.astype(v.dtype)
            out_u.append(u)
            out_v.append(v)
        return treedef.unflatten(out_u), ScaleByElementwiseRMSState(count, treedef.unflatten(out_v))

    return optax.GradientTransformation(init_fn, update_fn)


# ----- norm matching ---------------------------------------------------------------------------
def keep_matrix_norm(
    inner: optax.GradientTransformation, *, eps: float = 1e-10, specs: Any = None
) -> optax.GradientTransformationExtraArgs:
    """Runs ``inner`` and rescales each output matrix to the Frobenius norm of its input.

    O_out ← O_out · ‖O_in‖_F / (‖O_out‖_F + ε), per matrix; leaves without a ``MatrixSpec``
    are returned as ``inner`` left them. This is NorMuon's step after the per-neuron
    normalization: the second moment redistributes the update across neurons but does not
    change its size.

    Args:
      inner: the normalization to wrap (e.g. `scale_by_neuron_rms`).
      eps: ε in the denominator (NorMuon: 1e-10).
      specs: see the module docstring.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with ``inner``'s state.
    """
    check_positive("keep_matrix_norm", "eps", eps)
    inner = optax.with_extra_args_support(inner)

    def leaf(before, after, s):
        if s is None:
            return after
        v_in, _ = to_view(before, s)
        v_out, back = to_view(after, s)
        factor = _frobenius(v_in) / (_frobenius(v_out) + eps)
        return back(v_out.astype(jnp.float32) * factor).astype(after.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        new, state = inner.update(updates, state, params, **extra_args)
        leaves, treedef, specs_ = _specs_for(updates, specs, "keep_matrix_norm")
        outs = treedef.flatten_up_to(new)
        return treedef.unflatten(
            [leaf(b, a, s) for b, a, s in zip(leaves, outs, specs_, strict=True)]
        ), state

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def scale_to_rms(
    rms: float = 0.2, *, eps: float = 1e-8, specs: Any = None
) -> optax.GradientTransformation:
    """Rescales each matrix to RMS ``rms``: O ← rms · sqrt(mn) · O / (‖O‖_F + ε).

    AdaMuon's "RMS-aligned rescaling" (ρ = 0.2, Moonlight's AdamW-matching RMS), computed from
    the actual norm of each matrix (``optorth.scale_by_shape("consistent_rms")`` instead
    multiplies by a shape factor that assumes an exactly orthogonal input).

    Args:
      rms: the target RMS ρ of each matrix.
      eps: ε in the denominator.
      specs: see the module docstring.

    Returns:
      A stateless ``optax.GradientTransformation``.

    References:
      Si, Zhang & Shen, "AdaMuon: Adaptive Muon Optimizer" (arXiv 2507.11005).
      Liu et al., "Muon is Scalable for LLM Training" (arXiv 2502.16982).
    """
    check_positive("scale_to_rms", "rms", rms)
    check_positive("scale_to_rms", "eps", eps)

    def leaf(u, s):
        if s is None:
            return u
        view, back = to_view(u, s)
        size = jnp.sqrt(jnp.asarray(view.shape[-2] * view.shape[-1], jnp.float32))
        out = view.astype(jnp.float32) * (rms * size / (_frobenius(view) + eps))
        return back(out).astype(u.dtype)

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef, specs_ = _specs_for(updates, specs, "scale_to_rms")
        return treedef.unflatten([leaf(u, s) for u, s in zip(leaves, specs_, strict=True)]), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
