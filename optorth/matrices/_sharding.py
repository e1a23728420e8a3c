"""Distributing the orthogonalization over a device mesh with JAX's own SPMD.

Newton–Schulz multiplies whole matrices (XXᵀ, A·X). A matrix sharded along one of its own
axes (FSDP shards the fan-in axis) makes every product contract a sharded axis, so XLA
inserts an all-reduce or all-gather into every iteration; under explicit axes
(``jax.sharding.AxisType.Explicit``) such a product does not even type-check
(``ShardingTypeError``: "contracting dimensions are sharded", the incumbent's failure).
The strategy here uses sharding constraints only, no communication code of our own:

1. group: the matrices of all leaves that share a shape ``(m, n)`` (tall ones transposed)
   form one stack ``(B, m, n)`` (``optorth.matrices._grouping``);
2. place: a static plan (``optorth.matrices._placement``, steered by an
   `optorth.Distribution`) gives each stack a *home*, the mesh axes its stack axis is
   sharded over (by default the axes the parameters are sharded on, never a replica axis),
   pads it with zero matrices (Newton–Schulz maps zero to zero) to a multiple of their
   device count, and keeps leaves that already hold whole matrices per device where they are;
3. move: ``jax.lax.with_sharding_constraint`` to ``P(home, None, None)``; XLA turns the change
   of layout (matrix axis → stack axis) into one all-to-all (one per axis for matrices
   sharded over two axes); each device then holds whole matrices;
4. iterate: Newton–Schulz runs on the local matrices, with no communication inside the loop
   (in sequential chunks when a memory budget is set);
5. return: constrain the result to the same layout, drop the padding, and tie every output
   leaf to its input leaf's sharding (``jax.experimental.shard_alike``), which XLA
   implements as the inverse all-to-all.

For an FSDP-sharded model this costs two all-to-alls per stack per update, each moving
(D−1)/D² of the stack per device, instead of collectives in every iteration
(``benchmarks/scale_out.py`` counts them in the compiled HLO for many meshes). Padding wastes
no time on real devices (a padded slot sits on a device that would otherwise wait); on
simulated CPU devices, which share the host's cores, it costs compute.

Explicit axes: the layouts are part of the types, so the plan sees them: a stack whose leaves
are all replicated stays local (redundant compute, no communication, as on one device), and
the computation runs inside ``jax.sharding.auto_axes`` with the output shardings set to the
input leaves' shardings, so the updates have exactly the parameters' shardings. Automatic
axes: the layouts are not visible at trace time, so every stack is distributed over every
usable axis unless the policy names the axes (``Distribution(axes=...)``,
``Distribution.for_params``); the output shardings are steered to the inputs' by
``shard_alike``.

References:
  Liu et al., "Muon is Scalable for LLM Training" (arXiv 2502.16982): distributed Muon
  gathers whole matrices per device the same way, with hand-written communication.
  Xu et al., "GSPMD: General and Scalable Parallelization for ML Computation Graphs"
  (arXiv 2105.04663): how sharding constraints become collectives.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from optorth._column_split import ColumnSplit, splitting
from optorth._distribution import Distribution, as_distribution, entry_axes
from optorth.matrices._grouping import Group, map_stacks
from optorth.matrices._paths import is_variable, unwrap
from optorth.matrices._placement import (
    Placement,
    check_axes,
    layouts_of,
    mesh_size,
    plan_placements,
    usable_axes,
)
from optorth.matrices._specs import MatrixSpec, is_spec_leaf


def _typeof(x):
    typeof = getattr(jax, "typeof", None)  # jax ≥ 0.6; older versions have no typed meshes
    return typeof(x) if typeof is not None else None


def _abstract_mesh(x):
    sharding = getattr(_typeof(x), "sharding", None)
    return getattr(sharding, "mesh", None)


def find_mesh(leaves):
    """The abstract mesh of the context (``jax.set_mesh``) or of the leaves' shardings.

    Returns ``None`` when there is none, or when it has no usable axis of size > 1.
    """
    if not hasattr(jax.sharding, "auto_axes"):  # older jax: XLA partitions on its own
        return None
    candidates = [jax.sharding.get_abstract_mesh()] + [_abstract_mesh(x) for x in leaves]
    for mesh in candidates:
        if mesh is not None and not mesh.empty and usable_axes(mesh):
            return mesh
    return None


def _has_explicit_axes(mesh) -> bool:
    """Whether some usable axis of ``mesh`` is explicit (layouts are part of the types)."""
    return bool(set(getattr(mesh, "explicit_axes", ())) & set(usable_axes(mesh)))


def _matrix_leaves(tree, specs):
    """``{flat spec-leaf index: array}`` (an NNX variable's or a Linen box's array), their specs
    and their paths (``jax.tree_util.keystr``), for the matrix-path leaves."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(specs, is_leaf=is_spec_leaf)
    leaves = treedef.flatten_up_to(tree)
    chosen = {i: (unwrap(x), s, jax.tree_util.keystr(path))
              for i, ((path, s), x) in enumerate(zip(with_paths, leaves, strict=True))
              if isinstance(s, MatrixSpec) and hasattr(x, "shape")}
    return ({i: c[0] for i, c in chosen.items()}, {i: c[1] for i, c in chosen.items()},
            {i: c[2] for i, c in chosen.items()})


def _pad(stack, pad):
    if not pad:
        return stack
    return jnp.concatenate([stack, jnp.zeros((pad,) + stack.shape[1:], stack.dtype)], axis=0)


def _constrain(x, route):
    for spec in route:
        x = jax.lax.with_sharding_constraint(x, spec)
    return x


def _moved(fn, stacks, route):
    """``fn`` on the stacks moved home along ``route``, its result moved back the same way."""
    return _constrain(fn(*[_constrain(s, route) for s in stacks]), route[::-1])


def _chunked(fn, stacks, placement: Placement, devices: int):
    """``fn`` on the stacks in ``placement.chunks`` sequential pieces, each moved on its own.

    The stack ``(D·c·k, m, n)`` is viewed as ``(D, c, k, m, n)``; step ``i`` takes the
    ``D·k`` matrices ``[:, i]`` where they lie (the second axis is never sharded: a slice of
    it is local whatever the layout), moves them home, iterates and moves the result back
    into place, so one device holds ``k`` gathered matrices at a time.
    """
    chunks, route = placement.chunks, placement.route
    total, m, n = stacks[0].shape
    per = total // (devices * chunks)
    views = [jnp.reshape(s, (devices, chunks, per, m, n)) for s in stacks]

    def body(i, carry):  # the first stack's buffer is overwritten chunk by chunk, in place
        pieces = [jnp.reshape(jax.lax.dynamic_index_in_dim(v, i, axis=1, keepdims=False),
                              (devices * per, m, n)) for v in [carry] + views[1:]]
        result = jnp.reshape(_moved(fn, pieces, route), (devices, 1, per, m, n))
        return jax.lax.dynamic_update_index_in_dim(carry, result.astype(carry.dtype), i, axis=1)

    out = jax.lax.fori_loop(0, chunks, body, views[0])
    return jnp.reshape(out, (total, m, n))


def _to_blocks(stack, split: int, devices: int):
    """``(S, m, n)`` → ``(S·split, m, n/split)``: with ``L = S·split/devices`` matrices per
    slot, matrix ``l`` of slot ``s`` gives entry ``(s·split + j)·L + l`` its column block
    ``j``, so that sharded on the first axis, device ``s·split + j`` holds block ``j`` of its
    slot's matrices."""
    total, m, n = stack.shape
    slots = devices // split
    per = total // slots
    blocks = jnp.reshape(stack, (slots, per, m, split, n // split))
    return jnp.reshape(jnp.transpose(blocks, (0, 3, 1, 2, 4)), (total * split, m, n // split))


def _from_blocks(blocks, split: int, devices: int):
    """The inverse of `_to_blocks`."""
    total, m, width = blocks.shape
    slots = devices // split
    per = total // (slots * split)
    stack = jnp.transpose(jnp.reshape(blocks, (slots, split, per, m, width)), (0, 2, 3, 1, 4))
    return jnp.reshape(stack, (slots * per, m, width * split))


def _column_split(fn, stacks, placement: Placement, mesh):
    """``fn`` on the stacks with each matrix split column-wise over ``placement.split``
    consecutive devices of its home (``optorth._column_split``)."""
    home = placement.home
    axes = entry_axes(home[0])
    devices = mesh_size(mesh, axes)
    split = ColumnSplit(axes, devices, placement.split)

    def local(*blocks):
        with splitting(split):
            return fn(*blocks)

    # Through columns sharded over all of home (an all-to-all from any FSDP layout) both ways:
    # moved to or from the blocks directly, the stack would be gathered whole on every device.
    columns = P(None, None, home[0])
    blocks = [jax.lax.with_sharding_constraint(
        _to_blocks(jax.lax.with_sharding_constraint(s, columns), split.parts, devices), home)
        for s in stacks]
    out = jax.shard_map(local, in_specs=home, out_specs=home)(*blocks)
    stack = _from_blocks(jax.lax.with_sharding_constraint(out, home), split.parts, devices)
    return jax.lax.with_sharding_constraint(stack, columns)


def _after(inputs, result):
    """``inputs`` made to depend on ``result`` through a zero that XLA cannot fold away.

    ``jax.lax.optimization_barrier`` does not order the stacks: XLA's CPU pipeline removes
    barriers before it schedules, and its scheduler then moves every stack's all-to-all to
    the front, so all gathered stacks are alive at once. A data dependence survives: each
    input gains ``0·isnan(Σ result)`` (zero whatever ``result`` holds; a float product with
    zero is never folded, because of NaN), which costs one reduction of ``result`` and one
    scalar all-reduce, and makes the stack wait for the previous one.
    """
    zero = jnp.isnan(jnp.sum(result, dtype=jnp.float32)).astype(jnp.float32) * 0.0
    return jax.tree.map(lambda x: x + zero.astype(x.dtype), inputs)


def _placed(group: Group, placement: Placement, mesh, fn, previous: list):
    """``fn`` on a stack placed as planned; ``previous`` holds the last placed stack's result
    (a stack ``after_previous`` starts only when that result exists)."""
    devices = mesh_size(mesh, entry_axes(placement.home[0]))

    def call(inputs, stacks_of):
        context = jax.sharding.get_abstract_mesh()  # inside auto_axes: the Auto view
        with jax.sharding.use_abstract_mesh(mesh if context.empty else context):
            if placement.after_previous and previous:  # built only once the last one is done
                inputs = _after(inputs, previous[-1])
            stacks = [_pad(s, placement.pad) for s in stacks_of(inputs)]
            if placement.split > 1:
                out = _column_split(fn, stacks, placement, mesh)
            elif placement.chunks == 1:
                out = _moved(fn, stacks, placement.route)
            else:
                out = _chunked(fn, stacks, placement, devices)
        previous.append(out)
        return out[:group.size] if placement.pad else out

    return call


def _tie_to_inputs(out_tree, in_tree, specs):
    """Gives every matrix leaf of ``out_tree`` the sharding of its leaf in ``in_tree``."""
    from jax.experimental.shard_alike import shard_alike

    def tie(spec, out, inp):
        if isinstance(spec, MatrixSpec) and hasattr(out, "shape"):
            return shard_alike(out, unwrap(inp))[0]  # an NNX variable's array
        return out

    return jax.tree.map(tie, specs, out_tree, in_tree, is_leaf=is_spec_leaf)


def _constrain_to(out_tree, specs, layouts: dict, mesh):
    """Constrains every matrix leaf of ``out_tree`` to its recorded layout."""
    leaves, treedef = jax.tree.flatten(specs, is_leaf=is_spec_leaf)
    outs = treedef.flatten_up_to(out_tree)
    context = jax.sharding.get_abstract_mesh()
    with jax.sharding.use_abstract_mesh(mesh if context.empty else context):
        placed = [jax.lax.with_sharding_constraint(x, P(*layouts[i])) if i in layouts else x
                  for i, x in enumerate(outs)]
    return treedef.unflatten(placed)


def map_sharded(fn: Callable[..., Any], tree, specs_tree, rest=(), *, consts=None,
                transpose_tall: bool = False,
                distribute: Distribution | bool | None = None,
                split_columns: bool = False, like=None):
    """The grouping and distribution steps of `optorth.matrices.map_matrices`.

    ``fn(consts, stack, *rest_stacks)`` runs once per stack of equal matrix shapes (see the
    module docstring for how each stack is placed on the mesh). ``specs_tree`` is a resolved
    specs tree (a prefix of ``tree``). Without a mesh of more than one device (neither in the
    context nor on the leaves) this is exactly the grouping step,
    `optorth.matrices._grouping.map_stacks`.

    ``like`` (a tree with ``tree``'s structure, e.g. the parameters) gives the output leaves
    its leaves' shardings under automatic axes; ``None``: those of ``tree``.

    ``split_columns=True`` declares that ``fn`` reduces over a matrix only through
    ``optorth._column_split`` (as the Newton–Schulz engine does), so the plan may split single
    matrices column-wise over devices; any other ``fn`` always sees whole matrices.

    Returns:
      The mapped tree; its matrix leaves keep their input shardings.
    """
    policy = as_distribution(distribute, "map_matrices")
    if not split_columns and policy.max_imbalance is not None:
        policy = dataclasses.replace(policy, max_imbalance=None)
    matrix_leaves, matrix_specs, paths = _matrix_leaves(tree, specs_tree)
    mesh = find_mesh(list(matrix_leaves.values()))
    if mesh is None:
        return map_stacks(lambda *s: fn(consts, *s), tree, specs_tree, rest,
                          transpose_tall=transpose_tall)
    check_axes(policy, mesh)
    explicit = _has_explicit_axes(mesh)
    known = layouts_of(matrix_leaves, matrix_specs, paths, _typeof, explicit, policy)

    def schedule(groups):
        previous = []
        return [(g, None if p is None else (lambda f, g=g, p=p: _placed(g, p, mesh, f, previous)))
                for g, p in plan_placements(groups, mesh, policy, known)]

    def run(consts, tree, *rest):
        out = map_stacks(lambda *s: fn(consts, *s), tree, specs_tree, rest,
                         transpose_tall=transpose_tall, schedule=schedule)
        if known.layouts is not None and not explicit:  # recorded layouts: put them back
            return _constrain_to(out, specs_tree, known.layouts, mesh)
        return _tie_to_inputs(out, tree if like is None else like, specs_tree)

    if not explicit:
        return run(consts, tree, *rest)
    out_shardings = jax.tree.map(lambda x: _typeof(unwrap(x)).sharding, tree,
                                 is_leaf=is_variable)  # one sharding per NNX variable / box
    return jax.sharding.auto_axes(run, out_sharding=out_shardings)(consts, tree, *rest)


def keep_shardings(new_tree, old_tree):
    """``new_tree`` with each array leaf given the sharding of its leaf in ``old_tree`` (same
    structure), under automatic mesh axes; elsewhere unchanged (explicit axes carry the
    shardings in the types, one device has none). For optimizer states: the new state then
    keeps the incoming state's layout instead of the compiler's choice."""
    leaves = jax.tree.leaves(old_tree)
    mesh = find_mesh(leaves)
    if mesh is None or _has_explicit_axes(mesh):
        return new_tree
    from jax.experimental.shard_alike import shard_alike

    return jax.tree.map(lambda new, old: shard_alike(new, old)[0]
                        if getattr(new, "shape", None) == getattr(old, "shape", ()) else new,
                        new_tree, old_tree)


def call_replicated(fn: Callable[..., Any], *args):
    """``fn(*args)`` for a small side computation with an unsharded (replicated) result.

    Under explicit mesh axes the layouts of sharded ``args`` are part of their types, and
    slicing or multiplying them may not type-check (e.g. one matrix out of a stack sharded on
    its stack axis). There ``fn`` runs inside ``jax.sharding.auto_axes`` so that XLA
    partitions it and returns a replicated result; anywhere else ``fn`` is called directly.
    Used for online coefficient learning, which runs every ``every`` updates on a few
    matrices.
    """
    mesh = find_mesh(jax.tree.leaves(args))
    if mesh is None or not _has_explicit_axes(mesh):
        return fn(*args)
    replicated = jax.sharding.NamedSharding(mesh, P())
    return jax.sharding.auto_axes(fn, out_sharding=replicated)(*args)
