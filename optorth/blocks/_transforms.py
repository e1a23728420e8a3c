"""Per-matrix gradient transformations: dualizers, update-scale conventions, soft thresholding.

Each factory returns an ``optax.GradientTransformation`` that sees every leaf as a batch of
matrices through a :class:`optorth.MatrixSpec` (``specs`` argument) and works per matrix,
never over a whole stacked tensor. Like optax's ``scale_by_*`` blocks they return the
direction itself; the learning-rate block supplies the minus sign.

``specs`` may be ``None`` (every leaf must be 2-D: ``MatrixSpec()``; anything else raises
with the leaf's path), a pytree of ``MatrixSpec`` / ``"fallback"`` / ``None`` (fallback and
``None`` leaves pass through unchanged), or a callable ``params -> that pytree`` such as
``lambda p: optorth.route(p, rules)``, called on the params at init and on the updates at
update. Inside ``optax.partition`` / ``optax.masked`` the masked-out leaves are skipped.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optorth.ns._fingerprint import STATE_VERSION, coefficient_fingerprint
from optorth.ns._engine import newton_schulz
from optorth.norms._functions import get_norm
from optorth.ns._online import OnlineLearning, refine_coefficients
from optorth.matrices._paths import map_with_path, path_to_str, shape_of, unwrap
from optorth.ns._presets import _SHAPED, resolve_schedule
from optorth.ns._schedule import Schedule
from optorth.matrices._sharding import call_replicated, sharded_map_matrix_groups
from optorth.matrices._specs import MatrixSpec, is_spec_leaf, map_matrices

Specs = Any  # None | pytree of MatrixSpec / "fallback" / None | Callable[[params], pytree]


# ----- specs ----------------------------------------------------------------------------------
def _is_array(leaf) -> bool:
    return hasattr(unwrap(leaf), "shape")


def _default_spec(path, leaf):
    shape = shape_of(leaf)
    if len(shape) == 2:
        return MatrixSpec()
    raise ValueError(
        f"Leaf {path!r} of shape {shape} is not a 2-D matrix, and no specs were given. Pass "
        f"specs=optorth.route (or lambda p: optorth.route(p, rules)) or a pytree of "
        f"optorth.MatrixSpec / 'fallback', or apply this transform inside optax.partition "
        f"with labels from optorth.route."
    )


def _check_fit(specs_tree, tree):
    def check(path, spec, leaf):
        if isinstance(spec, MatrixSpec) and _is_array(leaf):
            spec.check(shape_of(leaf), path_to_str(path))
        return spec

    jax.tree_util.tree_map_with_path(check, specs_tree, tree, is_leaf=is_spec_leaf)


def resolve_specs(specs: Specs, tree):
    """The specs pytree for ``tree`` (see the module docstring), checked against its shapes."""
    if specs is None:
        return map_with_path(_default_spec, tree)
    specs_tree = specs(tree) if callable(specs) else specs
    _check_fit(specs_tree, tree)
    return specs_tree


def _matrix_shapes(specs_tree, tree) -> set[tuple[int, int]]:
    shapes = set()

    def collect(spec, leaf):
        if isinstance(spec, MatrixSpec) and _is_array(leaf):
            shapes.update(g[1:] for g in spec.matrix_shapes(shape_of(leaf)))
        return spec

    jax.tree.map(collect, specs_tree, tree, is_leaf=is_spec_leaf)
    return shapes


# ----- orthogonalize --------------------------------------------------------------------------
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


def _scale_by_dual(mats, direction):
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
        shapes = _matrix_shapes(specs_tree, params)
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
            return _scale_by_dual(mats, out) if adaptive else out

        return sharded_map_matrix_groups(direction, updates, specs_tree, consts=state.coeffs,
                                         transpose_tall=True, distribute=distribute), state

    return optax.GradientTransformation(init_fn, update_fn)


# ----- dualize (any norm) ---------------------------------------------------------------------
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
        return _scale_by_dual(mats, out) if adaptive else out

    def update_fn(updates, state, params=None):
        del params
        specs_tree = resolve_specs(specs, updates)
        if norm in _WHOLE_MATRIX_NORMS:  # matrix products: stack and distribute as NS does
            return sharded_map_matrix_groups(lambda _, m: direction(m), updates, specs_tree,
                                             transpose_tall=True), state
        return map_matrices(direction, updates, specs_tree), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


# ----- update-scale conventions ---------------------------------------------------------------
SCALE_CONVENTIONS = ("keller", "consistent_rms", "spectral")


def shape_scale(convention: str, fan_in: int, fan_out: int, rms_factor: Any = 0.2):
    """The per-matrix factor of :func:`scale_by_shape` for an ``fan_in × fan_out`` matrix."""
    if convention == "keller":
        return math.sqrt(max(1.0, fan_out / fan_in))
    if convention == "consistent_rms":
        return rms_factor * math.sqrt(max(fan_in, fan_out))
    if convention == "spectral":
        return math.sqrt(fan_out / fan_in)
    raise ValueError(f"Unknown scale convention {convention!r}; expected one of "
                     f"{SCALE_CONVENTIONS}.")


def scale_by_shape(convention: str = "keller", *, rms_factor: float = 0.2,
                   specs: Specs = None) -> optax.GradientTransformation:
    """Scales each matrix by a factor of its shape (fan-in m, fan-out n), per matrix.

    - ``"keller"``: sqrt(max(1, n/m)) (Muon reference; lr ≈ 0.02).
    - ``"consistent_rms"``: rms_factor · sqrt(max(m, n)) (Moonlight; an orthogonal update
      then has RMS ≈ rms_factor, so AdamW's learning rate and weight decay transfer).
    - ``"spectral"``: sqrt(n/m) (spectral-norm scaling, Bernstein et al.).

    Args:
      convention: one of the three names above.
      rms_factor: the target RMS of ``"consistent_rms"``.
      specs: how leaves become matrices (see the module docstring).

    References:
      Liu et al., "Muon is Scalable for LLM Training" (arXiv 2502.16982).
      Yang, Simon & Bernstein, "A Spectral Condition for Feature Learning" (arXiv 2310.17813).
    """
    shape_scale(convention, 1, 1, rms_factor)  # validates the name early

    def scale(mats):
        if mats.size == 0:  # a zero-sized axis: nothing to scale (and no fan-in to divide by)
            return mats
        factor = shape_scale(convention, mats.shape[-2], mats.shape[-1], rms_factor)
        return (mats * factor).astype(mats.dtype)

    def update_fn(updates, state, params=None):
        del params
        return map_matrices(scale, updates, resolve_specs(specs, updates)), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


# ----- soft thresholding (ROOT) ---------------------------------------------------------------
def clip_at_quantile(mats, quantile):
    """clip(M, −ε, ε) with ε the ``quantile`` of |M| per matrix (``mats``: ``(B, m, n)``)."""
    if mats.size == 0:  # a zero-sized axis: no entries, no quantile
        return mats
    f32 = jnp.promote_types(mats.dtype, jnp.float32)
    flat = jnp.abs(mats.astype(f32)).reshape(mats.shape[:-2] + (-1,))
    threshold = jnp.quantile(flat, quantile, axis=-1)[..., None, None]
    return jnp.clip(mats.astype(f32), -threshold, threshold).astype(mats.dtype)


def soft_threshold(quantile: float = 0.9, *, specs: Specs = None
                   ) -> optax.GradientTransformation:
    """ROOT's outlier split: keeps the clipped base B = clip(M, −ε, ε) of each matrix.

    ε is the ``quantile`` of |M| per matrix. The outliers O = sign(M)·max(|M| − ε, 0) (the
    soft-thresholding of M, the proximal map of the ℓ1 norm) are dropped, so M = B + O and only
    B goes on to the orthogonalization.

    References:
      "ROOT: Robust Orthogonalized Optimizer for Neural Network Training" (arXiv 2511.20626).
    """

    def update_fn(updates, state, params=None):
        del params
        # A quantile sorts each whole matrix: stack and distribute (``optorth.matrices._sharding``);
        # it and the clip commute with transposition.
        return sharded_map_matrix_groups(lambda _, m: clip_at_quantile(m, quantile), updates,
                                         resolve_specs(specs, updates),
                                         transpose_tall=True), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def route_specs(rules=None, **route_options) -> Callable[[Any], Any]:
    """A ``specs`` callable for the transforms: ``lambda p: optorth.route(p, rules, ...)``."""
    from optorth.matrices._routing import route

    return lambda tree: route(tree, rules, **route_options)
