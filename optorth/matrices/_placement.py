"""Where each stack of whole matrices lives on a mesh: the static plan behind the sharding step.

Given the groups of equally shaped matrices (``optorth.matrices._grouping``), the mesh, the
leaves' layouts (visible under explicit axes only) and a `optorth.Distribution`, this
module decides, at trace time, for every stack:

* its *home*: the mesh axes its stack axis is sharded over (``P(home, None, None)``), never a
  replica axis;
* the *route* there: for a stack whose matrices are sharded over two axes (FSDP × tensor
  parallel), one all-to-all per axis (``P(a, None, b)`` then ``P((a, b), None, None)``)
  instead of a full gather;
* *locality*: a leaf that already holds whole matrices on each device (sharded only on its
  leading batch axis: experts, layers) keeps that layout, and a leaf whose matrices divide
  evenly over the devices forms its own stack, so no two leaves are concatenated and
  reshuffled across devices;
* the padding (zero matrices, mapped to zero) that makes the stack divide evenly, and the
  number of sequential chunks that keeps one device's working set within the memory budget;
* *balance*: when whole matrices leave devices idle, the stacks whose split helps most are
  split column-wise over groups of devices (``optorth._column_split``) until the busiest
  device's planned work is within ``max_imbalance`` of an even split.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from jax.sharding import PartitionSpec as P

from optorth._distribution import Distribution, entry_axes
from optorth.matrices._grouping import Group, regroup
from optorth.matrices._specs import MatrixSpec


class Placement(NamedTuple):
    """How one stack is placed: the constraints in order (the last is its home), padding,
    sequential chunks per device (``1``: the whole local stack at once), and whether it waits
    for the stack before it (under a memory budget the stacks run one after another)."""

    route: tuple[P, ...]
    pad: int
    chunks: int
    after_previous: bool = False
    split: int = 1  # devices sharing each matrix, each holding a block of its columns

    @property
    def home(self) -> P:
        return self.route[-1]


def usable_axes(mesh) -> tuple[str, ...]:
    """Mesh axes of size > 1 that are not manual (inside ``shard_map`` those are taken)."""
    manual = set(getattr(mesh, "manual_axes", ()))
    return tuple(name for name, size in zip(mesh.axis_names, mesh.axis_sizes, strict=True)
                 if size > 1 and name not in manual)


def _spec_axes(layout) -> tuple[str, ...]:
    return tuple(a for entry in layout for a in entry_axes(entry))


def mesh_size(mesh, axes) -> int:
    """How many devices the mesh axes ``axes`` span."""
    return math.prod(mesh.shape[a] for a in axes)


def _entry(axes):
    return None if not axes else (axes[0] if len(axes) == 1 else tuple(axes))


def check_axes(policy: Distribution, mesh) -> None:
    """Raises ``ValueError`` when the policy names an axis the mesh does not have."""
    named = set(policy.axes or ()) | set(policy.replica_axes)
    unknown = sorted(named - set(mesh.axis_names))
    if unknown:
        raise ValueError(f"Distribution: axes {unknown} are not axes of the mesh "
                         f"{dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True))}. Name "
                         f"axes of the mesh the parameters live on.")


class Layouts(NamedTuple):
    """What is known of the leaves: their ``PartitionSpec`` entries per axis (``None`` where
    the layouts are invisible, under automatic axes), specs and shapes, by flat leaf index."""

    specs: dict[int, MatrixSpec]
    shapes: dict[int, tuple[int, ...]]
    layouts: dict[int, tuple] | None

    def sharded(self, leaf: int) -> bool:
        return self.layouts is not None and bool(_spec_axes(self.layouts[leaf]))


def _candidate_axes(group: Group, policy: Distribution, mesh, known: Layouts):
    usable = [a for a in usable_axes(mesh) if a not in policy.replica_axes]
    if policy.axes is not None:
        return tuple(a for a in policy.axes if a in usable)
    if known.layouts is None:
        return tuple(usable)
    used = {a for m in group.members for a in _spec_axes(known.layouts[m.leaf])}
    inferred = tuple(a for a in usable if a in used)
    return inferred if inferred or policy.mode != "always" else tuple(usable)


def _batch_home(member, known: Layouts) -> tuple[str, ...] | None:
    """The mesh axes sharding a member's stack axis when its leaf is sharded on its leading
    batch axis only (``None``: not such a leaf, or the layout is not visible)."""
    if known.layouts is None:
        return None
    spec, shape, layout = (known.specs[member.leaf], known.shapes[member.leaf],
                           known.layouts[member.leaf])
    if spec.heads is not None or spec.blocks is not None:
        return None
    red, out, batch = spec._roles(shape)[:3]
    if not batch or any(entry_axes(layout[a]) for a in batch[1:]):
        return None
    return entry_axes(layout[batch[0]]) or None


def _extend(start, candidates, mesh, count) -> tuple[str, ...]:
    """``start`` plus the candidate axes, in order, while the stack still divides evenly."""
    home = list(start)
    for axis in candidates:
        if axis not in home and count % mesh_size(mesh, home + [axis]) == 0:
            home.append(axis)
    return tuple(home)


def _matrix_axes(group: Group, known: Layouts):
    """``(row axes, column axes)`` shared by every member's matrices, else ``None``."""
    if known.layouts is None:
        return None
    found = set()
    for m in group.members:
        spec, shape, layout = (known.specs[m.leaf], known.shapes[m.leaf],
                               known.layouts[m.leaf])
        red, out = spec._roles(shape)[:2]
        rows = tuple(a for ax in red for a in entry_axes(layout[ax]))
        cols = tuple(a for ax in out for a in entry_axes(layout[ax]))
        found.add((cols, rows) if m.transposed else (rows, cols))
    return found.pop() if len(found) == 1 else None


def _route(group: Group, home, known: Layouts) -> tuple[P, ...]:
    """One all-to-all per matrix axis for matrices sharded over both of their axes."""
    final = P(_entry(home), None, None)
    axes = _matrix_axes(group, known)
    if axes is None or not (axes[0] and axes[1]) or set(axes[0] + axes[1]) != set(home):
        return (final,)
    rows, cols = axes
    return (P(_entry(rows), None, _entry(cols)), final)


def _fits(group: Group, policy: Distribution) -> int | None:
    """How many matrices of ``group`` one device may hold at once (``None``: no budget)."""
    if policy.memory_budget is None:
        return None
    itemsize = max(np.dtype(group.dtype).itemsize, 4)  # the iteration runs in float32 or wider
    return max(1, policy.memory_budget // (group.shape[0] * group.shape[1] * itemsize))


def _chunks(local: int, group: Group, policy: Distribution) -> int:
    fits = _fits(group, policy)
    return 1 if fits is None or local <= 1 else math.ceil(local / fits)


def _budget_batches(members, per_batch: int | None) -> list[list]:
    """Consecutive members in batches of at most ``per_batch`` matrices (a larger member
    alone); one batch without a budget."""
    if per_batch is None:
        return [list(members)]
    batches, current, size = [], [], 0
    for m in members:
        if current and size + m.count > per_batch:
            batches.append(current)
            current, size = [], 0
        current.append(m)
        size += m.count
    return batches + [current]


def _per_batch(pooled, fits: int | None, devices: int, policy: Distribution) -> int | None:
    """Matrices per pooled batch: what the memory budget lets the devices hold at once; with
    no budget, the whole matrices that divide evenly (``q·devices``) apart from the remainder,
    so that balancing splits only the remainder's matrices, not every one of the stack."""
    if fits is not None:
        return fits * devices
    total = sum(m.count for m in pooled)
    whole = total // devices * devices
    return whole if policy.max_imbalance is not None and 0 < whole < total else None


def _placement(group, home, route, mesh, policy) -> Placement:
    devices = mesh_size(mesh, home)
    local = -(-group.size // devices)
    chunks = _chunks(local, group, policy)
    local = -(-local // chunks) * chunks
    return Placement(route, local * devices - group.size, chunks)


def plan_placements(groups, mesh, policy: Distribution, known: Layouts):
    """``[(group, Placement or None)]``: each stack, split for locality, and where it goes.

    ``None`` leaves the stack where XLA puts it (no mesh axis to use, or nothing to gain).
    """
    plan = []
    for group in groups:
        plan.extend(_plan_group(group, mesh, policy, known))
    plan = balance(plan, mesh, policy.max_imbalance)
    return plan if policy.memory_budget is None else _in_sequence(plan)


def _in_sequence(plan):
    """Under a memory budget every placed stack waits for the one before it, across groups,
    so that one device holds one piece's gathered matrices at a time."""
    placed = [i for i, (_, p) in enumerate(plan) if p is not None]
    return [(g, p._replace(after_previous=True) if p is not None and i != placed[0] else p)
            for i, (g, p) in enumerate(plan)]


def _plan_group(group, mesh, policy, known):
    if policy.mode == "never":  # each leaf where it lies: concatenating would reshuffle
        return [(g, None) for g in regroup(group, [[m] for m in group.members])]
    if (policy.mode == "auto" and known.layouts is not None
            and not any(known.sharded(m.leaf) for m in group.members)):
        return [(group, None)]
    candidates = _candidate_axes(group, policy, mesh, known)
    if not candidates:
        return [(group, None)]
    own, pooled = _split_local(group, candidates, mesh, policy, known)
    fits = _fits(group, policy)
    devices = mesh_size(mesh, candidates)
    batches = _budget_batches(pooled, _per_batch(pooled, fits, devices, policy)) if pooled else []
    subgroups = regroup(group, [[m] for m, _ in own] + batches)
    homes = [home for _, home in own] + [candidates] * len(batches)
    pooled_flags = [False] * len(own) + [True] * len(batches)
    return [(g, _placement(g, home, _route(g, home, known), mesh, policy)._replace(
                split=0 if pooled else 1))
            for g, home, pooled in zip(subgroups, homes, pooled_flags, strict=True)]


def _split_local(group, candidates, mesh, policy, known):
    """``([(member, home)], pooled members)``: with ``keep_local``, a member already sharded
    on its leading batch axis keeps that home (extended by the other candidate axes while it
    divides evenly), and one whose matrices divide evenly over the candidates gets its own
    stack; the rest are pooled into one stack."""
    if not policy.keep_local:
        return [], list(group.members)
    devices = mesh_size(mesh, candidates)
    own, pooled = [], []
    for member in group.members:
        batch = _batch_home(member, known)
        if batch is not None:
            own.append((member, _extend(batch, candidates, mesh, member.count)))
        elif member.count > 1 and member.count % devices == 0:
            own.append((member, candidates))
        else:
            pooled.append(member)
    return own, pooled


def layouts_of(leaves: dict, specs: dict, paths: dict, typeof, explicit: bool,
               policy: Distribution) -> Layouts:
    """The `Layouts` of the matrix leaves ``{flat index: array}``: from their types
    under explicit axes, else from the layouts ``policy`` recorded (when it has every leaf)."""
    shapes = {i: tuple(x.shape) for i, x in leaves.items()}
    layouts = {}
    for i, x in leaves.items():
        if explicit:
            spec = getattr(getattr(typeof(x), "sharding", None), "spec", None) or ()
        else:
            spec = policy.layout_of(paths[i])
            if spec is None or len(spec) != np.ndim(x):
                return Layouts(specs, shapes, None)
        layouts[i] = tuple(spec) + (None,) * (np.ndim(x) - len(spec))
    return Layouts(specs, shapes, layouts)


#: The narrowest column block a split leaves on a device (narrower blocks make small, slow
#: matrix products and more collectives per FLOP).
MIN_SPLIT_COLUMNS = 128


def _work(shape) -> int:
    """Dot FLOPs of five quintic Newton–Schulz steps on one wide m×n matrix (a weight)."""
    m, n = sorted(shape)
    return 10 * m ** 3 + 20 * m * m * n


def _cost(group, placement, mesh, split: int) -> float:
    """Planned dot work of the busiest device for ``group`` split over ``split`` devices."""
    devices = mesh_size(mesh, entry_axes(placement.home[0]))
    return _work(group.shape) * math.ceil(group.size * split / devices) / split


def _splits(group, placement, mesh) -> list[int]:
    """The column splits a stack allows: powers of two dividing its devices and both sides
    of its wide matrices, leaving at least `MIN_SPLIT_COLUMNS` columns per block."""
    if placement is None or placement.split != 0 or len(placement.route) != 1:
        return []
    if placement.chunks != 1 or group.shape[0] > group.shape[1]:
        return []
    devices, (m, n) = mesh_size(mesh, entry_axes(placement.home[0])), group.shape
    found, k = [], 2
    while k <= devices and devices % k == 0 and m % k == 0 and n % k == 0 and \
            n // k >= MIN_SPLIT_COLUMNS:
        found.append(k)
        k *= 2
    return found


def _best_gain(group, placement, mesh, current: int):
    """``(work saved, split)`` of the best larger split of one stack (``(0, current)``)."""
    best, splits = (0.0, current), _splits(group, placement, mesh)
    now = _cost(group, placement, mesh, current) if splits else 0.0
    for k in splits:
        if k > current and now - _cost(group, placement, mesh, k) > best[0] * (1 + 1e-9):
            best = (now - _cost(group, placement, mesh, k), k)
    return best


def planned_work(plan, mesh) -> tuple[float, float]:
    """``(busiest, even)``: the planned dot work of the busiest device for ``plan`` (every
    stack on every device: stacks run one after another, and a stack homed on some axes
    repeats on the others) and that of an even split (each stack's work divided by its
    home's device count)."""
    placed = [(g, p) for g, p in plan if p is not None]
    busiest = sum(_cost(g, p, mesh, max(p.split, 1)) for g, p in placed)
    even = sum(_work(g.shape) * g.size / mesh_size(mesh, entry_axes(p.home[0]))
               for g, p in placed)
    return busiest, even


def balance(plan, mesh, max_imbalance: float | None):
    """Splits the pooled stacks of ``plan`` column-wise, greedily by work saved, until the
    busiest device's planned work (`planned_work`) is within ``max_imbalance`` of an even
    split."""
    splits = [1] * len(plan)
    while max_imbalance is not None:
        current = [(g, p if p is None else p._replace(split=k))
                   for (g, p), k in zip(plan, splits, strict=True)]
        busiest, even = planned_work(current, mesh)
        if busiest <= max_imbalance * even:
            break
        gains = [_best_gain(g, p, mesh, k) for (g, p), k in zip(plan, splits, strict=True)]
        i = max(range(len(plan)), key=lambda j: gains[j][0], default=None)
        if i is None or gains[i][0] <= 0:
            break
        splits[i] = gains[i][1]
    return [(g, p if p is None else _with_split(g, p, mesh, k))
            for (g, p), k in zip(plan, splits, strict=True)]


def _with_split(group, placement, mesh, split: int) -> Placement:
    if split == 1:
        return placement._replace(split=1)
    slots = mesh_size(mesh, entry_axes(placement.home[0])) // split
    per_slot = -(-group.size // slots)
    return placement._replace(split=split, pad=per_slot * slots - group.size)
