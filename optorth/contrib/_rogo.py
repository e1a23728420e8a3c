"""ROGO: restricted orthogonal gradient projection for continual learning (Yang et al. 2023).

GPM (Saha, Garg & Roy 2021) keeps, for every weight matrix, an orthonormal basis M of the
*frozen space*: the input (fan-in) directions that carried the representations of earlier tasks.
Updates for a new task are projected onto its orthogonal complement, so the outputs of the
layer on old inputs do not move. ROGO relaxes this hard constraint along a *relaxing space*
S ⊂ span(M): the frozen directions that the current task's gradient needs most. Along S the
weight may change, but only in a restricted form, a learned mixing of what the weight already
does on S, kept close to identity by a penalty.

Layout: a leaf with a ``MatrixSpec`` is a batch of ``(B, m, n)`` matrices W (m = fan-in,
n = fan-out; a Flax kernel ``(in, out)`` is one matrix). The layer computes ``y = x W``, so the
representations x live in the m-dimensional fan-in space and every projection acts on the
*left* (fan-in) side: P G = G − M Mᵀ G. This is GPM's choice (it projects the input space,
torch's ``grad @ (M Mᵀ)`` on an ``(out, in)`` weight): an update ΔW with Mᵀ ΔW = 0 leaves
x ΔW = 0 for every old input x ∈ span(M), whatever the output side does.

Equations followed (per matrix): those of the authors' released code (PyTorch, built on
GPM's), which trains the reparametrized layer W_eff = (I − S Sᵀ + S Λ Sᵀ) W with a learned
k × k "scale" Λ, initialised at I, penalised by λ ‖Λ − I‖²_F, and folds Λ into W at the end
of each task):

* update (here W denotes the effective weight, the parameter optax sees; G = ∂L/∂W; A = Sᵀ W₀
  is the *anchor*, the weight's action on S when S was relaxed, stored in the state):

      u = (I − M Mᵀ) G  +  S D A,     D = Sᵀ G Aᵀ + 2λ (Λ − I),     (Λ − I) A = Sᵀ W − A

  i.e. ``u = G − M Mᵀ G + S (Sᵀ G) Aᵀ A + 2λ S (Sᵀ W − A)``. This is *exactly* the change of
  W_eff that SGD with learning rate η (or heavy-ball momentum, both linear in the gradient)
  produces on the reparametrized model, divided by −η: W's own gradient is GPM-projected
  (and (I − M Mᵀ) S = 0 makes the Λ-part and the W-part add without a cross term), and Λ's
  gradient is D. So Λ is never stored: Λ A is read off the parameters. With no relaxed
  directions (or ``relax=False``) the update is GPM's ``G − M Mᵀ G``.

* relaxing-space search (`relax_subspace`, called between epochs of a task, as the
  official code does after each epoch while the previous search added directions): G's
  principal fan-in subspace U_g (left singular vectors of G, the fewest whose energy reaches
  ``grad_threshold``), and the frozen directions not yet relaxed, F = span(M) ⊖ span(S). The
  official code greedily takes the unit u ∈ F that maximises ‖U_g U_gᵀ u‖ (the top eigenvector
  of Fᵀ U_g U_gᵀ F), relaxes it if ‖U_g U_gᵀ u‖ ≥ ``relax_threshold``, deflates and repeats;
  that sequence is the eigenvectors of P_F U_g U_gᵀ P_F in decreasing order, i.e. the principal
  vectors between F and U_g whose cosine is at least ``relax_threshold``. Those are appended to
  S, with anchor rows sᵀ W (W the current parameters).

* GPM basis update (`add_task_subspace`, after each task), the paper's Eq. 8–9: with the
  task's representation matrix R (rows = samples, columns = fan-in),
  R̂ = R − R M Mᵀ, the left singular vectors of R̂ᵀ are appended, the fewest k for which
  (‖R M‖² + σ̂₁² + … + σ̂ₖ²) / ‖R‖² ≥ ``threshold``. The end of a task also ends its
  relaxation (Λ is folded into W, which here is already the parameter): S and A are cleared.

Choices the paper leaves open or its code does differently, made here:

* The first task uses the same "fewest directions reaching the threshold" rule as later
  tasks; GPM's code keeps one direction fewer on the first task (``sum(cumsum < threshold)``).
* The relaxing space lies inside span(M) by construction; GPM's basis itself is not changed
  by relaxation (as in the code: the projection always uses all of M).
* The official code halves the learning rate after each search that relaxed something; that
  is a schedule of the downstream optimizer here, not part of this transform.
* Equivalence with the reparametrized model holds for SGD / momentum downstream; an adaptive
  optimizer (Adam) after ``rogo`` preconditions u, as it would any gradient transform.

State layout (static shapes under ``jit``): per matrix leaf with ``B`` matrices ``m × n``, the
basis and the relaxing space are stored at full rank ``m`` with zero columns beyond their
counts (zero columns contribute nothing to M Mᵀ G, so no mask is needed in the update); the
counts are int32 arrays of shape ``(B,)``. Memory: 2 B m² + B m n floats per matrix leaf.

References:
  Yang, Yang, Li & Liu, "Restricted Orthogonal Gradient Projection for Continual Learning",
  AI Open 4 (2023), arXiv 2301.12131.
  Saha, Garg & Roy, "Gradient Projection Memory for Continual Learning", ICLR 2021,
  arXiv 2103.09762.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optorth._checks import check_bool, check_nonnegative, concrete_float, renamed_keywords
from optorth.matrices import MatrixSpec, resolve_specs

_WHO = "rogo"


class RogoState(NamedTuple):
    """State of `rogo`. Every field has the parameters' tree structure; a fallback
    (non-matrix) leaf holds ``optax.MaskedNode()`` in every field. For a matrix leaf with
    ``B`` matrices of fan-in ``m`` and fan-out ``n`` (``MatrixSpec.matrix_shape``):

    * ``basis``: ``(B, m, m)`` float32, GPM's frozen-space basis M; columns
      ``0 .. basis_rank − 1`` are orthonormal, the rest are zero.
    * ``basis_rank``: ``(B,)`` int32, the number k of basis columns.
    * ``relax``: ``(B, m, m)`` float32, the relaxing space S ⊂ span(M) of the current task;
      columns ``0 .. relax_rank − 1`` orthonormal, the rest zero.
    * ``relax_rank``: ``(B,)`` int32.
    * ``anchor``: ``(B, m, n)`` float32, A = Sᵀ W at the time each direction was relaxed
      (row i belongs to column i of ``relax``; rows beyond ``relax_rank`` are zero).
    """

    basis: Any
    basis_rank: Any
    relax: Any
    relax_rank: Any
    anchor: Any


# ----- tree helpers ----------------------------------------------------------------------------
def _is_masked(x) -> bool:
    return isinstance(x, optax.MaskedNode)


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _path(path) -> str:
    return "/".join(_key_name(k) for k in path)


def _by_path(tree) -> dict[str, Any]:
    """``{"a/b/kernel": leaf}`` for every array leaf of ``tree`` (MaskedNodes skipped)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_path(p): leaf for p, leaf in flat}


def _leaves_specs(tree, specs, who):
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_is_masked)
    spec_tree = resolve_specs(specs, tree, who=who)
    spec_list = treedef.flatten_up_to(spec_tree)
    out = []
    for leaf, spec in zip(leaves, spec_list, strict=True):
        out.append(spec if isinstance(spec, MatrixSpec) and not _is_masked(leaf) else None)
    return leaves, treedef, out


def _matrix_shape(spec: MatrixSpec, shape, who) -> tuple[int, int, int]:
    try:
        return spec.matrix_shape(shape)
    except ValueError as err:
        raise ValueError(f"{who}: {err} rogo needs one fan-in per leaf; route this leaf with "
                         f"a spec without blocks of different shapes, or 'fallback'.") from None


# ----- the transform ----------------------------------------------------------------------------
@renamed_keywords("optorth.contrib.rogo", beta="penalty")
def rogo(
    *,
    penalty: float = 1.0,
    relax: bool = True,
    specs: Any = None,
) -> optax.GradientTransformation:
    r"""Restricted orthogonal gradient projection (ROGO; GPM when ``relax=False``).

    Per matrix W (fan-in m × fan-out n) with frozen-space basis M and relaxing space S ⊂ span(M)
    (see the module docstring for the derivation):

        u = G − M Mᵀ G + S (Sᵀ G) Aᵀ A + 2λ S (Sᵀ W − A)

    where A (the anchor) is Sᵀ W when S was relaxed. Without relaxed directions (the state
    `init` returns, or ``relax=False``) this is GPM's projection u = G − M Mᵀ G, exactly
    orthogonal to every basis column. The relaxed part is exactly what SGD on the paper's
    reparametrized layer (I − S Sᵀ + S Λ Sᵀ) W with penalty λ ‖Λ − I‖² moves, so chain it
    before ``optax.sgd``: ``optax.chain(rogo(), optax.sgd(lr, momentum=0.9))``.

    The bases come from outside the training step: `add_task_subspace` after each task
    (GPM's SVD threshold on the task's layer inputs) and `relax_subspace` between epochs
    of the next task (ROGO's search). Fallback (non-matrix) leaves pass through unchanged.

    Args:
      penalty: λ ≥ 0, the weight of the penalty λ ‖Λ − I‖²_F that keeps the relaxed mixing
        near identity (the official code's ``--weight``, default 1; injectable). Formerly
        ``beta=``, still accepted with a ``DeprecationWarning``.
      relax: use the relaxing space; ``False`` is plain GPM whatever the state holds.
      specs: which leaves are matrices and how (``optorth.matrices.resolve_specs``); ``None``
        is ``optorth.route``.

    Returns:
      An ``optax.GradientTransformation`` with state `RogoState`. ``update`` needs
      ``params`` when ``relax=True`` (the penalty reads Sᵀ W off them).

    Example:
      >>> import jax.numpy as jnp
      >>> from optorth.contrib import rogo, add_task_subspace
      >>> params = {"w": jnp.zeros((3, 2))}
      >>> tx = rogo()
      >>> state = tx.init(params)
      >>> acts = {"w": jnp.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])}  # inputs of task 1
      >>> state = add_task_subspace(state, acts, 0.9)
      >>> u, _ = tx.update({"w": jnp.ones((3, 2))}, state, params)
      >>> u["w"].tolist()   # nothing moves along the frozen input direction e1
      [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]

    References:
      Yang, Yang, Li & Liu, "Restricted Orthogonal Gradient Projection for Continual
      Learning", arXiv 2301.12131. Saha, Garg & Roy, "Gradient Projection Memory for
      Continual Learning", arXiv 2103.09762.
    """
    check_nonnegative(_WHO, "penalty", penalty)
    relax = check_bool(_WHO, "relax", relax)

    def init_fn(params):
        leaves, treedef, specs_ = _leaves_specs(params, specs, _WHO)
        fields = [[] for _ in range(5)]
        for p, s in zip(leaves, specs_, strict=True):
            if s is None:
                for f in fields:
                    f.append(optax.MaskedNode())
                continue
            b, m, n = _matrix_shape(s, jnp.shape(p), _WHO)
            zeros_r = jnp.zeros((b,), jnp.int32)
            for f, v in zip(fields, (jnp.zeros((b, m, m)), zeros_r, jnp.zeros((b, m, m)),
                                     zeros_r, jnp.zeros((b, m, n))), strict=True):
                f.append(v)
        return RogoState(*(treedef.unflatten(f) for f in fields))

    def leaf(g, s, w, basis, rel, anchor):
        view = s.to_matrices(g).astype(jnp.float32)
        out = view - basis @ (jnp.swapaxes(basis, -1, -2) @ view)
        if relax:
            w_view = s.to_matrices(w).astype(jnp.float32)
            rel_t = jnp.swapaxes(rel, -1, -2)
            mix = (rel_t @ view) @ jnp.swapaxes(anchor, -1, -2) @ anchor
            out = out + rel @ (mix + 2.0 * penalty * (rel_t @ w_view - anchor))
        return s.from_matrices(out, jnp.shape(g)).astype(g.dtype)

    def update_fn(updates, state, params=None):
        if relax and params is None:
            raise ValueError("rogo: update needs params (the relaxed penalty reads Sᵀ W off "
                             "them): call tx.update(grads, state, params); inside optax.chain "
                             "pass params to the chain's update. Or use rogo(relax=False) "
                             "(plain GPM), which does not need them.")
        leaves, treedef, specs_ = _leaves_specs(updates, specs, _WHO)
        w_leaves = (treedef.flatten_up_to(params) if params is not None
                    else [None] * len(leaves))
        if jax.tree.structure(state.basis, is_leaf=_is_masked) != treedef:
            want = [_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(
                state.basis, is_leaf=_is_masked)[0]]
            got = [_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(
                updates, is_leaf=_is_masked)[0]]
            raise ValueError(
                f"{_WHO}: the updates' leaves {got} differ from those the state was built for "
                f"{want} (extra: {sorted(set(got) - set(want))}, missing: "
                f"{sorted(set(want) - set(got))}). Call tx.init(params) on the same tree "
                f"that update receives.")
        fields = [treedef.flatten_up_to(getattr(state, f)) for f in ("basis", "relax", "anchor")]
        out = [
            g if s is None else leaf(g, s, w, basis, rel, anchor)
            for g, s, w, basis, rel, anchor in zip(leaves, specs_, w_leaves, *fields,
                                                   strict=True)
        ]
        return treedef.unflatten(out), state

    return optax.GradientTransformation(init_fn, update_fn)


# ----- between tasks: GPM basis ----------------------------------------------------------------
def _check_threshold(who, name, value) -> float:
    number = concrete_float(value)
    if number is None or not 0.0 < number < 1.0:
        raise ValueError(f"{who}: {name} must lie strictly between 0 and 1 (the fraction of "
                         f"energy to capture, GPM uses 0.95-0.99); got {value!r}.")
    return number


def _gpm_extend(basis, rank, reps, threshold):
    """One matrix: basis (m, m) with ``rank`` columns, reps (N, m); GPM's Eq. 8–9."""
    m = basis.shape[0]
    act = reps.T  # (m, N), GPM's representation matrix (columns = samples)
    total = jnp.sum(jnp.square(act))
    residual = act - basis @ (basis.T @ act)
    u, sv, _ = jnp.linalg.svd(residual, full_matrices=True)
    energy = jnp.zeros((m,), jnp.float32).at[: sv.shape[0]].set(jnp.square(sv))
    safe_total = jnp.where(total > 0, total, 1.0)
    captured = (total - jnp.sum(energy)) / safe_total
    before = captured + jnp.concatenate([jnp.zeros(1), jnp.cumsum(energy)[:-1]]) / safe_total
    wanted = jnp.sum((before < threshold) & (energy > 0) & (total > 0)).astype(jnp.int32)
    new = jnp.minimum(wanted, m - rank)
    return _append(basis, rank, u, new), rank + new


def _append(columns, rank, candidates, new):
    """``columns`` with ``candidates[:, :new]`` written at ``rank .. rank + new − 1``."""
    m = columns.shape[-1]
    j = jnp.arange(m)
    pick = jnp.clip(j - rank, 0, m - 1)
    placed = candidates[:, pick] * ((j >= rank) & (j < rank + new))[None, :]
    return jnp.where((j < rank)[None, :], columns, placed)


def _find(state):
    return isinstance(state, RogoState)


def _map_rogo(fn, state, who):
    found = []

    def apply(x):
        if _find(x):
            found.append(True)
            return fn(x)
        return x

    out = jax.tree.map(apply, state, is_leaf=_find)
    if not found:
        raise ValueError(f"{who}: no RogoState found in the state given ({type(state).__name__}); "
                         f"pass the optimizer state that rogo() (alone, in optax.chain, "
                         f"optax.partition or optax.inject_hyperparams) returned.")
    return out


def add_task_subspace(state, activations, threshold: float) -> Any:
    r"""Extends every frozen-space basis with a finished task's representations (GPM).

    For each matrix leaf named in ``activations`` with representation matrix R (rows =
    samples, columns = the layer's inputs, i.e. fan-in): R̂ = R − R M Mᵀ, and the fewest left
    singular vectors of R̂ᵀ are appended for which
    (‖R‖² − ‖R̂‖² + σ̂₁² + … + σ̂ₖ²) / ‖R‖² ≥ ``threshold`` (Saha et al., Eq. 5 and 8–9),
    never more than the fan-in. The task's relaxing space is cleared (the task is over; its
    relaxed weights are already in the parameters). Pure and ``jit``-able for a fixed
    ``threshold``.

    Args:
      state: a `RogoState`, or any optimizer state holding RogoStates (an
        ``optax.chain``, ``optax.partition`` or ``optax.inject_hyperparams`` state): each one
        found is updated.
      activations: a dict (flat with ``"/"``-joined paths such as ``{"dense/kernel": R}``, or
        nested like the parameters) of representation matrices, each ``(N, m)`` (shared by
        the leaf's B matrices) or ``(B, N, m)``. Matrix leaves not named keep their basis.
      threshold: the energy fraction ε_th ∈ (0, 1) (GPM: 0.95–0.99).

    Returns:
      The state with extended bases and cleared relaxing spaces.

    Raises:
      ValueError: a threshold outside (0, 1), a path that is not a matrix leaf of the state,
        a representation matrix whose last axis is not the leaf's fan-in, or one holding NaN
        or inf (under ``jit``, where it cannot be inspected, that leaf keeps its basis).
    """
    who = "add_task_subspace"
    threshold = _check_threshold(who, "threshold", threshold)
    if not isinstance(activations, dict):
        raise ValueError(f"{who}: activations must be a dict from leaf path (e.g. "
                         f"'dense/kernel') to a (samples, fan_in) matrix; got "
                         f"{type(activations).__name__}.")
    acts = _by_path(activations)

    def one(st: RogoState) -> RogoState:
        bases = _by_path(st.basis)
        for path in acts:
            if path not in bases:
                raise ValueError(f"{who}: activations name {path!r}, which is not a matrix "
                                 f"leaf of the rogo state (matrix leaves: {sorted(bases)}); "
                                 f"use the parameter path joined by '/'.")
        flat, treedef = jax.tree.flatten(st.basis, is_leaf=_is_masked)
        paths = [_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(
            st.basis, is_leaf=_is_masked)[0]]
        ranks = treedef.flatten_up_to(st.basis_rank)
        new_basis, new_rank = [], []
        for path, basis, rank in zip(paths, flat, ranks, strict=True):
            if _is_masked(basis) or path not in acts:
                new_basis.append(basis)
                new_rank.append(rank)
                continue
            b, m, _ = basis.shape
            reps = jnp.asarray(acts[path])
            given = tuple(reps.shape)
            if reps.ndim == 2:
                reps = jnp.broadcast_to(reps, (b,) + reps.shape)
            if reps.ndim != 3 or reps.shape[0] != b or reps.shape[-1] != m:
                raise ValueError(f"{who}: activations[{path!r}] has shape {given}; "
                                 f"expected (samples, {m}) or ({b}, samples, {m}): rows are "
                                 f"samples, columns the layer's {m} inputs (its fan-in).")
            if not isinstance(reps, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(reps))):
                raise ValueError(f"{who}: activations[{path!r}] of shape {given} holds NaN "
                                 f"or inf; the basis would become NaN and every later update "
                                 f"NaN. Pass the representations of a finite forward pass.")
            nb, nr = jax.vmap(_gpm_extend, in_axes=(0, 0, 0, None))(
                basis, rank, reps.astype(jnp.float32), threshold)
            finite = jnp.all(jnp.isfinite(reps))  # under jit: keep the basis instead
            nb, nr = jnp.where(finite, nb, basis), jnp.where(finite, nr, rank)
            new_basis.append(nb)
            new_rank.append(nr)
        return RogoState(
            treedef.unflatten(new_basis), treedef.unflatten(new_rank),
            jax.tree.map(jnp.zeros_like, st.relax), jax.tree.map(jnp.zeros_like, st.relax_rank),
            jax.tree.map(jnp.zeros_like, st.anchor))

    return _map_rogo(one, state, who)


# ----- during a task: ROGO's relaxing space ----------------------------------------------------
def _relax_extend(basis, rel, rel_rank, anchor, g, w, relax_threshold, grad_threshold):
    """One matrix: basis/rel (m, m), anchor (m, n), g and w (m, n)."""
    m = basis.shape[0]
    u, sv, _ = jnp.linalg.svd(g, full_matrices=False)
    energy = jnp.square(sv)
    total = jnp.sum(energy)
    before = jnp.concatenate([jnp.zeros(1), jnp.cumsum(energy)[:-1]])
    # the fewest directions whose energy reaches grad_threshold (at least one)
    keep = jnp.maximum(jnp.sum(before < grad_threshold * total), 1)
    u = u * (jnp.arange(u.shape[1]) < keep)[None, :]
    proj_g = u @ u.T
    proj_f = basis @ basis.T - rel @ rel.T  # span(M) ⊖ span(S), S ⊂ span(M)
    h = proj_f @ proj_g @ proj_f
    eigval, eigvec = jnp.linalg.eigh(0.5 * (h + h.T))
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    new = jnp.sum(eigval >= relax_threshold**2).astype(jnp.int32) * (total > 0)
    new = jnp.minimum(new, m - rel_rank)
    new_rel = _append(rel, rel_rank, eigvec, new)
    rows = eigvec.T @ w  # candidate anchor rows sᵀ W
    j = jnp.arange(m)
    pick = jnp.clip(j - rel_rank, 0, m - 1)
    placed = rows[pick] * ((j >= rel_rank) & (j < rel_rank + new))[:, None]
    new_anchor = jnp.where((j < rel_rank)[:, None], anchor, placed)
    return new_rel, rel_rank + new, new_anchor


def relax_subspace(
    state,
    grads,
    params,
    *,
    relax_threshold: float = 0.9,
    grad_threshold: float = 0.99,
    specs: Any = None,
) -> Any:
    r"""ROGO's relaxing-space search: frees the frozen directions the current task needs.

    For each matrix leaf: U_g, the fewest left singular vectors of the current-task gradient G
    (fan-in side) whose energy reaches ``grad_threshold``; F = span(M) ⊖ span(S), the frozen
    directions not yet relaxed. The eigenvectors of P_F U_g U_gᵀ P_F with eigenvalue
    ≥ ``relax_threshold``² (frozen directions whose cosine to the gradient subspace is at least
    ``relax_threshold``) are appended to S, with anchor rows sᵀ W. The official code runs this
    after every epoch of a new task while the previous call relaxed something (and halves the
    learning rate when it did); the returned ``relax_rank`` fields tell whether it did.

    Args:
      state: a `RogoState` or any optimizer state holding RogoStates.
      grads: the current task's gradient at ``params`` (e.g. on a batch), a tree like
        ``params`` (only its matrix leaves are read; matched by path).
      params: the current parameters (the full tree the optimizer sees).
      relax_threshold: in (0, 1); the cosine a frozen direction needs with the gradient's
        principal subspace to be relaxed (official code: 0.9). Higher relaxes less.
      grad_threshold: in (0, 1); energy fraction for the gradient's principal subspace
        (official code: 0.97 for the first layer, 0.99 for the others).
      specs: as given to `rogo` (resolved against ``params``).

    Returns:
      The state with extended relaxing spaces and anchors.

    Raises:
      ValueError: a threshold outside (0, 1), or grads / params that miss a matrix leaf of the
        state or do not match its shapes.
    """
    who = "relax_subspace"
    relax_threshold = _check_threshold(who, "relax_threshold", relax_threshold)
    grad_threshold = _check_threshold(who, "grad_threshold", grad_threshold)
    leaves, treedef, specs_ = _leaves_specs(params, specs, who)
    paths = [_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        params, is_leaf=_is_masked)[0]]
    spec_by_path = {p: s for p, s in zip(paths, specs_, strict=True) if s is not None}
    w_by_path = dict(zip(paths, leaves, strict=True))
    g_by_path = _by_path(grads)

    def one(st: RogoState) -> RogoState:
        flat, tdef = jax.tree.flatten(st.basis, is_leaf=_is_masked)
        st_paths = [_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(
            st.basis, is_leaf=_is_masked)[0]]
        rels = tdef.flatten_up_to(st.relax)
        ranks = tdef.flatten_up_to(st.relax_rank)
        anchors = tdef.flatten_up_to(st.anchor)
        out_rel, out_rank, out_anchor = [], [], []
        for path, basis, rel, rank, anchor in zip(st_paths, flat, rels, ranks, anchors,
                                                  strict=True):
            if _is_masked(basis):
                out_rel.append(rel)
                out_rank.append(rank)
                out_anchor.append(anchor)
                continue
            if path not in spec_by_path or path not in g_by_path:
                raise ValueError(f"{who}: the rogo state has matrix leaf {path!r}, but "
                                 f"{'params' if path not in spec_by_path else 'grads'} "
                                 f"lack it (or route it to 'fallback'); pass the full "
                                 f"parameter tree, its gradient and the specs given to rogo.")
            s = spec_by_path[path]
            g, w = g_by_path[path], w_by_path[path]
            if jnp.shape(g) != jnp.shape(w):
                raise ValueError(f"{who}: grads[{path!r}] has shape {jnp.shape(g)}, params "
                                 f"{jnp.shape(w)}; pass the gradient of the same params.")
            bmn = _matrix_shape(s, jnp.shape(w), who)
            if tuple(anchor.shape) != bmn:
                raise ValueError(f"{who}: leaf {path!r} is {bmn} matrices for these specs, "
                                 f"but the rogo state holds {tuple(anchor.shape)}; pass the "
                                 f"specs given to rogo.")
            g_m = s.to_matrices(jnp.asarray(g)).astype(jnp.float32)
            w_m = s.to_matrices(jnp.asarray(w)).astype(jnp.float32)
            r, k, a = jax.vmap(_relax_extend, in_axes=(0, 0, 0, 0, 0, 0, None, None))(
                basis, rel, rank, anchor, g_m, w_m, relax_threshold, grad_threshold)
            out_rel.append(r)
            out_rank.append(k)
            out_anchor.append(a)
        return st._replace(relax=tdef.unflatten(out_rel), relax_rank=tdef.unflatten(out_rank),
                           anchor=tdef.unflatten(out_anchor))

    return _map_rogo(one, state, who)

