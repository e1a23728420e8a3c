"""The spectral-norm dualizer as a transform: Newton–Schulz per matrix, table in the state.

See :func:`orthogonalize`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optorth.matrices._resolve import Specs, matrix_shapes, resolve_specs
from optorth.matrices._sharding import call_replicated, sharded_map_matrix_groups
from optorth.matrices._specs import map_matrices
from optorth.ns._engine import newton_schulz
from optorth.ns._fingerprint import STATE_VERSION, coefficient_fingerprint
from optorth.ns._online import OnlineLearning, refine_coefficients
from optorth.ns._presets import _SHAPED, resolve_schedule
from optorth.ns._schedule import Schedule


class OrthogonalizeState(NamedTuple):
    """State of :func:`orthogonalize`.

    ``coeffs``: the ``(T, 3)`` float32 Newton–Schulz table read at every update (so it can be
    learned, scheduled or checkpointed); for per-shape presets (``"root"``) a dict mapping
    ``"{min(m,n)}x{max(m,n)}"`` to that shape's table.
    ``fingerprint``: uint32 CRC32 of the table(s) the block was constructed with (constant in
    training); ``version``: the layout version. Both serve
    :func:`optorth.reconcile_coefficients` after a checkpoint restore (``optorth.checkpoint``).
    ``count``: int32 number of updates, kept only when the block learns its table online
    (``learn=``; ``None`` otherwise).
    """

    coeffs: Any
    fingerprint: Any = None
    version: Any = None
    count: Any = None


def _static_int(value, name):
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, jax.core.Tracer):
        raise ValueError(
            f"{name} must be a static int, got a traced value (optax.inject_hyperparams turns "
            f"ints into arrays). Pass static_args=('{name}',) to optax.inject_hyperparams.")
    return int(value)


def _shape_key(shape) -> str:
    m, n = sorted(int(d) for d in shape[-2:])
    return f"{m}x{n}"


def _initial_coeffs(schedule, steps, shapes):
    if isinstance(schedule, str) and schedule in _SHAPED:
        return {_shape_key(s): jnp.asarray(resolve_schedule(schedule, shape=s).rows(steps),
                                           jnp.float32) for s in sorted(shapes)}
    if isinstance(schedule, (str, Schedule)):
        return jnp.asarray(resolve_schedule(schedule).rows(steps), jnp.float32)
    table = jnp.asarray(schedule, jnp.float32)
    if table.ndim != 2 or table.shape[-1] != 3:
        raise ValueError(f"A raw coefficient table must have shape (T, 3); got {table.shape}.")
    if steps is not None and steps != table.shape[0]:
        raise ValueError(f"steps={steps} but the raw table has {table.shape[0]} rows; wrap it in "
                         f"optorth.Schedule(..., extend='repeat_last') to change the count.")
    return table


def _ns_static(schedule, shape, precondition):
    """(safety, precondition) for a matrix shape: the schedule's own unless overridden."""
    if isinstance(schedule, (str, Schedule)):
        sched = resolve_schedule(schedule, shape=shape)
        return sched.safety, precondition or sched.precondition
    return 1.0, precondition or "frobenius"


def _coeffs_for(coeffs, shape):
    if not isinstance(coeffs, dict):
        return coeffs
    key = _shape_key(shape)
    if key not in coeffs:
        raise ValueError(f"No coefficient table for matrix shape {key} in the state; it was "
                         f"initialized for {sorted(coeffs)}. Re-run init with these params.")
    return coeffs[key]


def _check_learn(learn, schedule):
    if learn is None:
        return
    if not isinstance(learn, OnlineLearning):
        raise ValueError(f"learn must be an optorth.OnlineLearning (or None); got "
                         f"{type(learn).__name__}. Example: "
                         f"learn=optorth.OnlineLearning(every=100).")
    if isinstance(schedule, str) and schedule in _SHAPED:
        raise ValueError(f"learn= refines one (T, 3) table, but schedule={schedule!r} keeps one "
                         f"table per matrix shape. Pick a single-table schedule (e.g. 'jordan' "
                         f"or 'polar_express5') to learn it online.")


def _learned_coeffs(learn, state, updates, specs_tree, schedule, precondition, method, dtype,
                    eps):
    """``state.coeffs`` refined on this update's matrices when due (``optorth.ns._online``)."""
    mats = []
    map_matrices(lambda m: mats.append(m) or m, updates, specs_tree)
    if not mats:
        return state.coeffs
    safety, precond = _ns_static(schedule, mats[0].shape[-2:], precondition)

    def refine(coeffs, count, mats):
        return refine_coefficients(coeffs, mats, learn, count=count, precondition=precond,
                                   safety=safety, dtype=dtype, method=method, eps=eps)[0]

    return call_replicated(refine, state.coeffs, state.count, mats)


def scale_by_dual(mats, direction):
    """direction · ⟨M, direction⟩ per matrix (Bernstein & Newhouse's adaptive scaling)."""
    f32 = jnp.promote_types(mats.dtype, jnp.float32)
    dual = jnp.sum(mats.astype(f32) * direction.astype(f32), axis=(-2, -1), keepdims=True)
    return (direction.astype(f32) * dual).astype(direction.dtype)


def orthogonalize(
    schedule: str | Schedule | Any = "jordan",
    *,
    steps: int | None = None,
    precondition: str | None = None,
    method: str = "standard",
    dtype: Any = None,
    eps: float = 1e-7,
    specs: Specs = None,
    adaptive: bool = False,
    distribute: bool | None = None,
    learn: OnlineLearning | None = None,
) -> optax.GradientTransformation:
    """The spectral-norm dualizer: each matrix M = U S Vᵀ becomes ≈ U Vᵀ (Newton–Schulz).

    lmo(M) = argmax_{‖D‖₂ ≤ 1} ⟨M, D⟩ = U Vᵀ, approximated by ``optorth.newton_schulz`` per
    matrix. The coefficient table lives in the state (:class:`OrthogonalizeState`) and is
    passed to the engine as a raw ``(T, 3)`` array with the schedule's safety factor and
    preconditioning.

    Matrices of equal shape (tall ones transposed) from all leaves are orthogonalized in
    one batched call per shape (``optorth.matrices._grouping``); the values equal those of one call
    per leaf.

    Args:
      schedule: a preset name, an ``optorth.Schedule`` or a raw ``(T, 3)`` table.
      steps: number of steps (the schedule's ``extend`` rule applies); ``None``: its own.
      precondition: overrides the schedule's (``"frobenius"``, ``"schatten"``, ``"spectral"``,
        ``"aol"``).
      method: ``"standard"``, ``"gram"`` or ``"auto"`` (see ``optorth.newton_schulz``).
      dtype: compute dtype of the iteration (e.g. ``jnp.bfloat16``); ``None``: float32.
      eps: added to the normalizer.
      specs: how leaves become matrices (module docstring).
      adaptive: multiply each matrix's direction by ⟨M, O⟩ ≈ ‖M‖_* (its nuclear norm),
        computed per matrix.
      distribute: on a device mesh, shard each stack of equally shaped matrices on its
        stack axis so every device iterates on whole matrices (``optorth.matrices._sharding``);
        ``None`` decides from the layouts, ``True``/``False`` force it on/off.
      learn: an :class:`optorth.OnlineLearning` to refine the table in the state every
        ``learn.every`` updates on this update's matrices (``optorth.ns._online``; the step
        count stays static, rejected candidates keep the last valid table). ``None``: the
        table stays fixed.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`OrthogonalizeState`.

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024).
      Bernstein & Newhouse, "Old Optimizer, New Norm: An Anthology" (arXiv 2409.20325).
    """
    _check_learn(learn, schedule)

    def init_fn(params):
        specs_tree = resolve_specs(specs, params)
        shapes = matrix_shapes(specs_tree, params)
        with jax.ensure_compile_time_eval():  # concrete tables (for the fingerprint) under jit
            coeffs = _initial_coeffs(schedule, _static_int(steps, "steps"), shapes)
            count = None if learn is None else jnp.zeros([], jnp.int32)
            return OrthogonalizeState(coeffs, coefficient_fingerprint(coeffs),
                                      jnp.asarray(STATE_VERSION, jnp.int32), count)

    def update_fn(updates, state, params=None):
        del params
        specs_tree = resolve_specs(specs, updates)
        if learn is not None:
            coeffs = _learned_coeffs(learn, state, updates, specs_tree, schedule, precondition,
                                     method, dtype, eps)
            state = state._replace(coeffs=coeffs, count=state.count + 1)

        def direction(coeffs, mats):
            safety, precond = _ns_static(schedule, mats.shape[-2:], precondition)
            out = newton_schulz(mats, _coeffs_for(coeffs, mats.shape),
                                precondition=precond, method=method, dtype=dtype, eps=eps,
                                safety=safety)
            return scale_by_dual(mats, out) if adaptive else out

        return sharded_map_matrix_groups(direction, updates, specs_tree, consts=state.coeffs,
                                         transpose_tall=True, distribute=distribute), state

    return optax.GradientTransformation(init_fn, update_fn)
