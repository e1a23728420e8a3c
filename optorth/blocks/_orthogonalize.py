"""The spectral-norm dualizer as a transform: Newton–Schulz per matrix, table in the state.

See `orthogonalize`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optorth._checks import check_bool
from optorth._column_split import full_shape
from optorth._distribution import Distribution, as_distribution, observing
from optorth.blocks._ns_telemetry import init_telemetry, leaf_errors
from optorth.matrices import MatrixSpec, Specs, map_matrices, resolve_specs
from optorth.matrices._paths import flatten_with_paths, is_variable
from optorth.matrices._resolve import matrix_shapes
from optorth.matrices._sharding import call_replicated, map_sharded
from optorth.ns._config import NewtonSchulz, as_newton_schulz
from optorth.ns._fingerprint import STATE_VERSION, UNKNOWN_FINGERPRINT, coefficient_fingerprint
from optorth.ns._online import refine_coefficients
from optorth.ns._schedule import Schedule


class OrthogonalizeState(NamedTuple):
    """State of `orthogonalize`.

    ``coeffs``: the ``(T, 3)`` float32 Newton–Schulz table read at every update (so it can be
    learned, scheduled or checkpointed); for per-shape presets (``"root"``) a dict mapping
    ``"{min(m,n)}x{max(m,n)}"`` to that shape's table.
    ``fingerprint``: uint32 CRC32 of the table(s) the block was constructed with (constant in
    training); ``version``: the layout version. Both serve
    `optorth.reconcile_coefficients` after a checkpoint restore (``optorth.checkpoint``).
    ``count``: int32 number of updates, kept only when the block learns its table online
    (``learn=``; ``None`` otherwise).
    ``telemetry``: an ``NSTelemetry`` (per-leaf orthogonality error of the last update and
    the compute dtype) when ``ns.telemetry > 0``; ``None`` otherwise.
    """

    coeffs: Any
    fingerprint: Any = None
    version: Any = None
    count: Any = None
    telemetry: Any = None


def _shape_key(shape) -> str:
    m, n = sorted(int(d) for d in shape[-2:])
    return f"{m}x{n}"


def _initial_coeffs(ns: NewtonSchulz, shapes):
    if ns.per_shape:  # zero-sized matrices have nothing to orthogonalize and need no table
        return {_shape_key(s): jnp.asarray(ns.table(s), jnp.float32)
                for s in sorted(shapes) if min(s) > 0}
    return jnp.asarray(ns.table(), jnp.float32)


def _coeffs_for(coeffs, shape):
    if not isinstance(coeffs, dict):
        return coeffs
    key = _shape_key(shape)
    if key not in coeffs:
        raise ValueError(f"orthogonalize: no coefficient table for matrix shape {key} in the "
                         f"state; it was initialized for {sorted(coeffs)}. Re-run init with "
                         f"these params.")
    return coeffs[key]


def check_state(ns: NewtonSchulz, coeffs) -> None:
    """Raises ``ValueError`` when a state's table cannot drive ``ns`` (another step count,
    a per-shape state for a single table or the reverse): a state of another optimizer."""
    per_shape_state = isinstance(coeffs, dict)
    if per_shape_state != ns.per_shape:
        kinds = ("one table per matrix shape", "a single (T, 3) table")
        raise ValueError(
            f"orthogonalize: the state holds {kinds[not per_shape_state]} but {ns} uses "
            f"{kinds[not ns.per_shape]}. The state was built by another optimizer; call "
            f"tx.init(params) with this one (or restore into its state).")
    tables = coeffs.values() if per_shape_state else [coeffs]
    expected = None if ns.per_shape else ns.table().shape
    for table in tables:
        shape = tuple(getattr(table, "shape", ()))
        if len(shape) != 2 or shape[-1] != 3 or (expected and shape != expected):
            raise ValueError(
                f"orthogonalize: the state's coefficient table has shape {shape} but {ns} runs "
                f"a table of shape {expected or '(T, 3)'}. The state was built for another "
                f"step count or schedule; call tx.init(params) with this optimizer, or "
                f"restore into the state of the optimizer that wrote it and use "
                f"optorth.checkpoint.reconcile_coefficients(..., policy='override').")


def _concrete(x):
    return None if isinstance(x, jax.core.Tracer) or x is None else np.asarray(x)


def trusted_coeffs(ns: NewtonSchulz, state, shapes):
    """The state's table if it belongs to ``ns``, else ``ns``'s own table.

    A state belongs to ``ns`` when its fingerprint is that of ``ns``'s table (the table it
    was built with, or adopted by ``optorth.reconcile_coefficients``) or unknown, and its
    table is finite. A concrete state that does not belong raises ``ValueError``; under
    ``jit`` the choice is made on device, so a state of another optimizer or a NaN table
    never drives the iteration.
    """
    with jax.ensure_compile_time_eval():
        own = _initial_coeffs(ns, shapes)
        own_fp = int(coefficient_fingerprint(own))
    fp = _concrete(state.fingerprint)
    if fp is not None and int(fp) not in (own_fp, UNKNOWN_FINGERPRINT):
        raise ValueError(
            f"orthogonalize: the state's coefficient table (fingerprint {int(fp)}) was built "
            f"by another Newton–Schulz configuration than {ns} (fingerprint {own_fp}). Call "
            f"tx.init(params) with this optimizer, or reconcile a restored state with "
            f"optorth.reconcile_coefficients(restored, tx.init(params), policy=...).")
    tables = [_concrete(t) for t in jax.tree.leaves(state.coeffs)]
    if all(t is not None for t in tables) and not all(np.isfinite(t).all() for t in tables):
        raise ValueError("orthogonalize: the state's coefficient table holds NaN or inf; "
                         "every update would be NaN. Restore it with "
                         "optorth.reconcile_coefficients(..., policy='override').")
    belongs = jnp.asarray(True)
    for t in jax.tree.leaves(state.coeffs):
        belongs &= jnp.all(jnp.isfinite(t))
    if state.fingerprint is not None:
        fp = jnp.asarray(state.fingerprint, jnp.uint32)
        belongs &= (fp == jnp.uint32(own_fp)) | (fp == jnp.uint32(UNKNOWN_FINGERPRINT))
    return jax.tree.map(lambda mine, theirs: jnp.where(belongs, mine, theirs), state.coeffs,
                        own)


def _learned_coeffs(ns: NewtonSchulz, state, updates, specs_tree):
    """``state.coeffs`` refined on this update's matrices when due (``optorth.ns``)."""
    spec_leaves, treedef = jax.tree.flatten(specs_tree)
    mats = [g for s, x in zip(spec_leaves, treedef.flatten_up_to(updates), strict=True)
            if isinstance(s, MatrixSpec) for g in s.to_groups(x)]
    if not mats:
        return state.coeffs
    safety, precondition = ns.normalization(mats[0].shape[-2:])

    def refine(coeffs, count, mats):
        return refine_coefficients(coeffs, mats, ns.learn, count=count,
                                   precondition=precondition, safety=safety,
                                   dtype=ns.compute_dtype, method=ns.method, eps=ns.eps)[0]

    return call_replicated(refine, state.coeffs, state.count, mats)


def _same_tree(params, updates):
    """``params`` when it has the updates' structure (NNX variables as leaves), else ``None``:
    the updates then take the parameters' shardings (under automatic mesh axes the
    compiler would otherwise choose them)."""
    if params is None:
        return None
    same = (jax.tree.structure(params, is_leaf=is_variable)
            == jax.tree.structure(updates, is_leaf=is_variable))
    return params if same else None


def scale_by_dual(mats, direction):
    """direction · ⟨M, direction⟩ per matrix (Bernstein & Newhouse's adaptive scaling)."""
    f32 = jnp.promote_types(mats.dtype, jnp.float32)
    dual = jnp.sum(mats.astype(f32) * direction.astype(f32), axis=(-2, -1), keepdims=True)
    return (direction.astype(f32) * dual).astype(direction.dtype)


def orthogonalize(
    ns: NewtonSchulz | str | Schedule = NewtonSchulz(),
    *,
    specs: Specs = None,
    adaptive: bool = False,
    distribute: Distribution | bool | None = None,
) -> optax.GradientTransformation:
    """The spectral-norm dualizer: each matrix M = U S Vᵀ becomes ≈ U Vᵀ (Newton–Schulz).

    lmo(M) = argmax_{‖D‖₂ ≤ 1} ⟨M, D⟩ = U Vᵀ, approximated per matrix by the engine with the
    settings of ``ns``. The coefficient table lives in the state (`OrthogonalizeState`),
    so it can be learned online (``ns.learn``), scheduled or checkpointed. Matrices of equal
    shape (tall ones transposed) from all leaves are orthogonalized in one batched call per
    shape; the values equal those of one call per leaf.

    Args:
      ns: a `optorth.NewtonSchulz` (or a preset name / ``Schedule`` as shorthand).
      specs: how leaves become matrices (``optorth.matrices.resolve_specs``); leaves routed to
        the fallback pass through unchanged.
      adaptive: multiply each matrix's direction by ⟨M, O⟩ ≈ ‖M‖_* (its nuclear norm),
        computed per matrix.
      distribute: on a device mesh, how stacks of equally shaped matrices are divided so
        every device iterates on whole matrices (an `optorth.Distribution`, or
        ``True``/``False`` to force it on/off); ``None``: ``ns.distribute``.

    Returns:
      An ``optax.GradientTransformation`` with state `OrthogonalizeState`.

    Example:
      >>> import optax, optorth, jax.numpy as jnp
      >>> tx = optax.chain(optorth.orthogonalize(optorth.NewtonSchulz("polar_express5")),
      ...                  optax.scale_by_learning_rate(0.02))
      >>> params = {"w": jnp.ones((4, 8))}
      >>> updates, state = tx.update({"w": jnp.eye(4, 8)}, tx.init(params))

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024).
      Bernstein & Newhouse, "Old Optimizer, New Norm: An Anthology" (arXiv 2409.20325).
    """
    ns = as_newton_schulz(ns)
    check_bool("orthogonalize", "adaptive", adaptive)
    if adaptive and ns.telemetry:
        raise ValueError("orthogonalize: NewtonSchulz(telemetry=...) measures the "
                         "orthogonalized direction, which adaptive=True rescales by ⟨M, O⟩; "
                         "use telemetry with adaptive=False.")
    distribute = (ns.distribute if distribute is None
                  else as_distribution(distribute, "orthogonalize"))
    planned = [distribute]  # with the parameters' layouts once init has seen them placed

    def init_fn(params):
        observed = observing(distribute, params)
        if observed is not distribute:  # an init under jit (tracers) keeps what was seen
            planned[0] = observed
        specs_tree = resolve_specs(specs, params, who="orthogonalize")
        shapes = matrix_shapes(specs_tree, params)
        with jax.ensure_compile_time_eval():  # concrete tables (for the fingerprint) under jit
            coeffs = _initial_coeffs(ns, shapes)
            count = None if ns.learn is None else jnp.zeros([], jnp.int32)
            telemetry = None if not ns.telemetry else init_telemetry(
                ns.compute_dtype, specs_tree, params,
                [p for p, _ in flatten_with_paths(params)[0]])
            return OrthogonalizeState(coeffs, coefficient_fingerprint(coeffs),
                                      jnp.asarray(STATE_VERSION, jnp.int32), count, telemetry)

    def update_fn(updates, state, params=None):
        check_state(ns, state.coeffs)
        specs_tree = resolve_specs(specs, updates, who="orthogonalize")
        shapes = {s for s in matrix_shapes(specs_tree, updates) if min(s) > 0}
        state = state._replace(coeffs=trusted_coeffs(ns, state, shapes))
        if ns.learn is not None:
            coeffs = _learned_coeffs(ns, state, updates, specs_tree)
            state = state._replace(coeffs=coeffs, count=state.count + 1)

        def direction(coeffs, mats):
            if mats.size == 0:
                return mats
            out = ns.apply(mats, _coeffs_for(coeffs, full_shape(mats.shape)))
            return scale_by_dual(mats, out) if adaptive else out

        out = map_sharded(direction, updates, specs_tree, consts=state.coeffs,
                          transpose_tall=True, distribute=planned[0],
                          split_columns=not adaptive,  # the dual scale needs whole matrices
                          like=_same_tree(params, updates))
        if ns.telemetry:
            paths = [p for p, _ in flatten_with_paths(updates)[0]]
            errors = leaf_errors(out, specs_tree, paths, ns.telemetry)
            state = state._replace(telemetry=state.telemetry._replace(errors=errors))
        return out, state

    return optax.GradientTransformation(init_fn, update_fn)
