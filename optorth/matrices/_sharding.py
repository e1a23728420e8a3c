"""Distributing the orthogonalization over a device mesh with JAX's own SPMD.

Newton–Schulz multiplies whole matrices (XXᵀ, A·X). A matrix sharded along one of its own
axes (FSDP shards the fan-in axis) makes every product contract a sharded axis, so XLA
inserts an all-reduce or all-gather into every iteration; under explicit axes
(``jax.sharding.AxisType.Explicit``) such a product does not even type-check
(``ShardingTypeError``: "contracting dimensions are sharded", the incumbent's failure).
The strategy here uses sharding constraints only, no communication code of our own:

1. group: the matrices of all leaves that share a shape ``(m, n)`` (tall ones transposed)
   form one stack ``(B, m, n)`` (``optorth.matrices._grouping``);
2. distribute: pad the stack with zero matrices to a multiple of the device count D
   (Newton–Schulz maps zero to zero) and constrain it to be sharded on its *stack* axis
   over every usable mesh axis, ``P(axes, None, None)``
   (``jax.lax.with_sharding_constraint``). XLA turns this change of layout (matrix axis →
   stack axis) into one all-to-all; each device then holds ⌈B/D⌉ whole matrices;
3. iterate: Newton–Schulz runs on the local matrices, with no communication inside the loop;
4. return: constrain the result to the same layout, drop the padding, and tie every output
   leaf to its input leaf's sharding (``jax.experimental.shard_alike``), which XLA
   implements as the inverse all-to-all.

For an FSDP-sharded model this costs two all-to-alls per matrix shape per update, each
moving (D−1)/D² of the stack per device, instead of collectives in every iteration
(``benchmarks/step_time.py --devices 8`` counts them in the compiled HLO). Padding wastes
no time on real devices (a padded slot sits on a device that would otherwise wait); on
simulated CPU devices, which share the host's cores, it costs compute.

Explicit axes: the layouts are part of the types, so a stack whose leaves are all
replicated stays local (redundant compute, no communication, as on one device), and the
computation runs inside ``jax.sharding.auto_axes`` with the output shardings set to the
input leaves' shardings: the updates have exactly the parameters' shardings, and any
``MatrixSpec`` (merged axes, heads, blocks) type-checks. Automatic axes: the layouts are
not visible at trace time, so every stack is distributed; for replicated parameters that
trades redundant compute for two all-to-alls and a broadcast, and the output shardings are
the compiler's choice as always under automatic axes (``shard_alike`` steers them to the
inputs'; a stack mixing replicated and sharded leaves of one shape may return a replicated
leaf sharded). Leaves sharded over two mesh axes at once (FSDP × tensor parallel) work, but
XLA moves them through a full gather ("involuntary full rematerialization" warning).

References:
  Liu et al., "Muon is Scalable for LLM Training" (arXiv 2502.16982): distributed Muon
  gathers whole matrices per device the same way, with hand-written communication.
  Xu et al., "GSPMD: General and Scalable Parallelization for ML Computation Graphs"
  (arXiv 2105.04663): how sharding constraints become collectives.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from optorth.matrices._grouping import Group, map_stacks
from optorth.matrices._specs import MatrixSpec, is_spec_leaf

DISTRIBUTE = (None, True, False)


def _typeof(x):
    typeof = getattr(jax, "typeof", None)  # jax ≥ 0.6; older versions have no typed meshes
    return typeof(x) if typeof is not None else None


def _abstract_mesh(x):
    sharding = getattr(_typeof(x), "sharding", None)
    return getattr(sharding, "mesh", None)


def _usable_axes(mesh) -> tuple[str, ...]:
    """Mesh axes of size > 1 that are not manual (inside ``shard_map`` those are taken)."""
    manual = set(getattr(mesh, "manual_axes", ()))
    return tuple(name for name, size in zip(mesh.axis_names, mesh.axis_sizes, strict=True)
                 if size > 1 and name not in manual)


def find_mesh(leaves):
    """The abstract mesh of the context (``jax.set_mesh``) or of the leaves' shardings.

    Returns ``None`` when there is none, or when it has no usable axis of size > 1.
    """
    if not hasattr(jax.sharding, "auto_axes"):  # older jax: XLA partitions on its own
        return None
    candidates = [jax.sharding.get_abstract_mesh()] + [_abstract_mesh(x) for x in leaves]
    for mesh in candidates:
        if mesh is not None and not mesh.empty and _usable_axes(mesh):
            return mesh
    return None


def _is_sharded(x) -> bool:
    """Whether a leaf's (explicit) sharding splits any of its axes."""
    sharding = getattr(_typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", None)
    return spec is not None and any(entry is not None for entry in spec)


def _matrix_leaves(tree, specs) -> dict[int, Any]:
    """``{flat spec-leaf index: array}`` for the leaves that take the matrix path."""
    spec_leaves, treedef = jax.tree.flatten(specs, is_leaf=is_spec_leaf)
    leaves = treedef.flatten_up_to(tree)
    return {i: x for i, (s, x) in enumerate(zip(spec_leaves, leaves, strict=True))
            if isinstance(s, MatrixSpec) and hasattr(x, "shape")}


def _pad(stack, pad):
    if not pad:
        return stack
    return jnp.concatenate([stack, jnp.zeros((pad,) + stack.shape[1:], stack.dtype)], axis=0)


def _stack_wrapper(axes, mesh, distribute_group: Callable[[Group], bool]):
    spec = P(axes if len(axes) > 1 else axes[0], None, None)
    devices = math.prod(mesh.shape[a] for a in axes)

    def wrap(group: Group, fn):
        if not distribute_group(group):
            return fn
        pad = -group.size % devices  # zero matrices (mapped to zero) so every device has
        # the same number of whole matrices: XLA keeps uneven stacks' loops less local

        def call(*stacks):
            context = jax.sharding.get_abstract_mesh()  # inside auto_axes: the Auto view
            with jax.sharding.use_abstract_mesh(mesh if context.empty else context):
                stacks = [jax.lax.with_sharding_constraint(_pad(s, pad), spec) for s in stacks]
                out = jax.lax.with_sharding_constraint(fn(*stacks), spec)
            return out[:group.size] if pad else out

        return call

    return wrap


def _tie_to_inputs(out_tree, in_tree, specs):
    """Gives every matrix leaf of ``out_tree`` the sharding of its leaf in ``in_tree``."""
    from jax.experimental.shard_alike import shard_alike

    def tie(spec, out, inp):
        if isinstance(spec, MatrixSpec) and hasattr(out, "shape"):
            return shard_alike(out, inp)[0]
        return out

    return jax.tree.map(tie, specs, out_tree, in_tree, is_leaf=is_spec_leaf)


def map_sharded(fn: Callable[..., Any], tree, specs_tree, rest=(), *, consts=None,
                transpose_tall: bool = False, distribute: bool | None = None):
    """The grouping and distribution steps of :func:`optorth.matrices.map_matrices`.

    ``fn(consts, stack, *rest_stacks)`` runs once per group of equal matrix shapes (see the
    module docstring for how each stack is placed on the mesh). ``specs_tree`` is a resolved
    specs tree (a prefix of ``tree``). Without a mesh of more than one device (neither in the
    context nor on the leaves) this is exactly the grouping step,
    :func:`optorth.matrices._grouping.map_stacks`.

    Returns:
      The mapped tree; its matrix leaves keep their input shardings.
    """
    if distribute not in DISTRIBUTE:
        raise ValueError(f"map_matrices: distribute={distribute!r}; expected None (distribute "
                         f"sharded stacks), True (every stack) or False (none).")
    matrix_leaves = _matrix_leaves(tree, specs_tree)
    mesh = find_mesh(list(matrix_leaves.values()))
    if mesh is None:
        return map_stacks(lambda *s: fn(consts, *s), tree, specs_tree, rest,
                          transpose_tall=transpose_tall)
    axes = _usable_axes(mesh)
    explicit = bool(set(getattr(mesh, "explicit_axes", ())) & set(axes))
    sharded = {i: _is_sharded(x) for i, x in matrix_leaves.items()}

    def distribute_group(group: Group) -> bool:
        if distribute is not None:
            return distribute
        # Explicit axes show the layouts: replicated stacks stay local. Automatic ones hide
        # them at trace time, so every stack is distributed.
        return any(sharded[m.leaf] for m in group.members) if explicit else True

    wrap = _stack_wrapper(axes, mesh, distribute_group)

    def run(consts, tree, *rest):
        out = map_stacks(lambda *s: fn(consts, *s), tree, specs_tree, rest,
                         transpose_tall=transpose_tall, wrap_stack=wrap)
        return _tie_to_inputs(out, tree, specs_tree)

    if not explicit:
        return run(consts, tree, *rest)
    out_shardings = jax.tree.map(lambda x: _typeof(x).sharding, tree)
    return jax.sharding.auto_axes(run, out_sharding=out_shardings)(consts, tree, *rest)


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
    if mesh is None or not set(getattr(mesh, "explicit_axes", ())) & set(_usable_axes(mesh)):
        return fn(*args)
    replicated = jax.sharding.NamedSharding(mesh, P())
    return jax.sharding.auto_axes(fn, out_sharding=replicated)(*args)
