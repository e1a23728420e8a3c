"""What a compiled program costs per device, read from its HLO text.

Input: ``compiled = jax.jit(f).lower(...).compile()``; ``compiled.as_text()`` is the
partitioned per-device program (SPMD: every device runs the same one).

* `collective_counts` / `collectives_in_loops` (from ``tests/_hlo.py``, which the
  library's tests use): each collective instruction counted once where it is defined (loop
  bodies not unrolled).
* `analyze` / `analyze_compiled`: the cost of one *execution*. Every computation is
  weighted by how often it runs: the entry once, a ``while`` body × its trip count (XLA's
  ``known_trip_count``, else read off the loop condition's ``compare`` against a constant),
  nested loops multiplying, fusions and calls × their caller. ``cost_analysis()`` counts a
  loop body once, which is why this exists. Per device it gives

  - dot FLOPs: 2 · (result elements) · (product of the contracting dimensions);
  - each collective's executions and the bytes it moves per device, from its operand bytes B and
    its group size g: all-to-all (g−1)/g·B (sent), all-gather (g−1)·B = (g−1)/g of its result
    (received), all-reduce 2(g−1)/g·B (ring: reduce-scatter then all-gather), reduce-scatter
    (g−1)/g·B, collective-permute B for a device that sends to another device;
  - the bytes crossing each mesh axis: a device's bytes in a group are split evenly over its
    g−1 peers, and the share of a peer whose mesh coordinate differs on axis ``a`` crosses
    ``a`` (a collective-permute pair likewise). Replica-group device ids are the positions in
    the mesh's device list (``mesh.devices.flat``), mapped to coordinates by ``mesh.shape``.

  Bytes are reported for the busiest device (the maximum over devices), which equals every
  device's for the symmetric programs SPMD partitioning makes.

Example::

    compiled = jax.jit(tx.update).lower(grads, state, params).compile()
    cost = analyze_compiled(compiled, mesh)   # HloCost(dot_flops=..., ...)
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Iterator, NamedTuple

import numpy as np

from tests._hlo import (  # noqa: E402, F401, I001 - the tests' parsing, written once
    COLLECTIVES,
    collective_counts,
    collectives_in_loops,
    iota_ids,
    mesh_axes_groups,
)

DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2,
               "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
               "c128": 16}
_FP8 = re.compile(r"f8e\w+")


# ----------------------------------------------------------------------------- parsing
class Instruction(NamedTuple):
    """One HLO instruction: ``%name = type opcode(operands), attributes``."""

    name: str
    type: str
    opcode: str
    operands: tuple[str, ...]
    args: str  # the text between the opcode's parentheses (a constant's literal)
    attributes: str


class Computation(NamedTuple):
    """A named list of instructions (a fusion, a loop body, the entry, ...)."""

    name: str
    instructions: tuple[Instruction, ...]

    def by_name(self) -> dict[str, Instruction]:
        return {i.name: i for i in self.instructions}


def _closing(text: str, start: int) -> int:
    """Index of the bracket closing the one at ``text[start]``."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    depth, opening, closing = 0, text[start], pairs[text[start]]
    for i in range(start, len(text)):
        depth += (text[i] == opening) - (text[i] == closing)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced {opening!r} in HLO line: {text[:200]}")


_ASSIGN = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+) = ")


def parse_instruction(line: str) -> Instruction | None:
    """The instruction on one line of a computation body (``None`` for other lines)."""
    head = _ASSIGN.match(line)
    if head is None:
        return None
    rest = line[head.end():]
    type_end = _closing(rest, 0) + 1 if rest.startswith("(") else rest.index(" ")
    opcode_match = re.match(r"\s*([\w\-]+)\(", rest[type_end:])
    if opcode_match is None:
        return None
    open_at = type_end + opcode_match.end() - 1
    close_at = _closing(rest, open_at)
    operands = tuple(re.findall(r"%([\w.\-]+)", rest[open_at:close_at]))
    return Instruction(head.group(1), rest[:type_end], opcode_match.group(1), operands,
                       rest[open_at + 1:close_at], rest[close_at + 1:])


def parse_module(hlo: str) -> tuple[dict[str, Computation], str]:
    """``({name: computation}, entry name)`` of an HLO module's text."""
    computations, entry = {}, None
    for match in re.finditer(r"^(ENTRY )?%([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.S | re.M):
        body = [parse_instruction(line) for line in match.group(3).splitlines()]
        name = match.group(2)
        computations[name] = Computation(name, tuple(i for i in body if i is not None))
        if match.group(1):
            entry = name
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text; pass compiled.as_text()")
    return computations, entry


def array_shapes(type_text: str) -> list[tuple[str, tuple[int, ...]]]:
    """``[(dtype, dims)]`` of every array in an HLO type (tuples flattened)."""
    return [(dtype, tuple(int(d) for d in dims.split(",") if d))
            for dtype, dims in re.findall(r"\b([a-z]\w*)\[([\d,]*)\]", type_text)]


def type_bytes(type_text: str) -> float:
    """Bytes of every array in an HLO type (``token[]`` and unknown types count 0)."""
    total = 0.0
    for dtype, dims in array_shapes(type_text):
        size = DTYPE_BYTES.get(dtype, 1 if _FP8.fullmatch(dtype) else 0)
        total += size * math.prod(dims)
    return total


def _attr(attributes: str, key: str) -> str | None:
    """The value of ``key=...`` in an attribute list (balanced brackets kept whole)."""
    match = re.search(rf"(?:^|[,\s]){key}=", attributes)
    if match is None:
        return None
    start = match.end()
    if attributes[start] in "{[(":
        return attributes[start:_closing(attributes, start) + 1]
    end = re.search(r",\s|$", attributes[start:])
    return attributes[start:start + end.start()]


# ----------------------------------------------------------------------------- dot FLOPs
def dot_flops(instr: Instruction, scope: dict[str, Instruction]) -> float:
    """2 · result elements · contracted size of one ``dot``."""
    (_, result), = array_shapes(instr.type)[:1]
    (_, lhs), = array_shapes(scope[instr.operands[0]].type)[:1]
    dims = _attr(instr.attributes, "lhs_contracting_dims") or "{}"
    contracted = math.prod(lhs[int(d)] for d in re.findall(r"\d+", dims))
    return 2.0 * math.prod(result) * contracted


# ----------------------------------------------------------------------------- loops
def _callees(instr: Instruction) -> list[str]:
    """Computations an instruction runs once per execution (not reducers' ``to_apply``)."""
    keys = ["calls", "true_computation", "false_computation", "branch_computations"]
    if instr.opcode == "call":
        keys.append("to_apply")
    names = []
    for key in keys:
        value = _attr(instr.attributes, key)
        if value:
            names += re.findall(r"%([\w.\-]+)", value)
    return names


def _reachable(comp: Computation, computations) -> Iterator[Computation]:
    yield comp
    for instr in comp.instructions:
        for callee in _callees(instr):
            if callee in computations:
                yield from _reachable(computations[callee], computations)


def _is_int_scalar(instr: Instruction) -> bool:
    return re.fullmatch(r"[su]\d+\[\]", instr.type) is not None


def _constant(name: str, scope: dict[str, Instruction]) -> int | None:
    """The integer a scalar value holds when it is a constant (through copies)."""
    instr = scope.get(name)
    while instr is not None and instr.opcode == "copy":
        instr = scope.get(instr.operands[0])
    if instr is None or instr.opcode != "constant" or not _is_int_scalar(instr):
        return None
    return int(instr.args)


def _trip_from_condition(loop: Instruction, condition: Computation, computations,
                         scope: dict[str, Instruction]) -> int | None:
    """``i < K`` or ``i ≤ K`` with ``i`` a constant-initialized counter stepping by 1."""
    comps = list(_reachable(condition, computations))
    bounds = [int(i.args) for c in comps for i in c.instructions
              if i.opcode == "constant" and _is_int_scalar(i)]
    directions = [_attr(i.attributes, "direction") for c in comps for i in c.instructions
                  if i.opcode == "compare"]
    counters = [i for i in condition.instructions
                if i.opcode == "get-tuple-element" and _is_int_scalar(i)]
    init_tuple = scope.get(loop.operands[0]) if loop.operands else None
    if (len(bounds), len(directions), len(counters)) != (1, 1, 1) or init_tuple is None:
        return None
    index = int(_attr(counters[0].attributes, "index"))
    start = (_constant(init_tuple.operands[index], scope)
             if init_tuple.opcode == "tuple" and index < len(init_tuple.operands) else None)
    if start is None or directions[0] not in ("LT", "LE"):
        return None
    return max(0, bounds[0] - start + (directions[0] == "LE"))


def trip_count(loop: Instruction, computations: dict[str, Computation],
               scope: dict[str, Instruction]) -> int | None:
    """Iterations of a ``while``: XLA's ``known_trip_count``, else read off its condition.

    ``scope`` maps names to the instructions of the computation holding the loop. ``None``
    when neither tells (the loop is then counted once and reported).
    """
    known = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', loop.attributes)
    if known:
        return int(known.group(1))
    condition = computations.get((_attr(loop.attributes, "condition") or "").lstrip("%"))
    if condition is None:
        return None
    return _trip_from_condition(loop, condition, computations, scope)


def executions(computations: dict[str, Computation], entry: str
               ) -> tuple[dict[str, float], list[str]]:
    """How often each computation runs per execution of the entry, and the loops whose trip
    count is unknown (counted once)."""
    runs: dict[str, float] = {}
    unknown: list[str] = []

    def visit(name: str, times: float):
        if name not in computations:
            return
        runs[name] = runs.get(name, 0.0) + times
        comp = computations[name]
        scope = comp.by_name()
        for instr in comp.instructions:
            if instr.opcode == "while":
                trips = trip_count(instr, computations, scope)
                if trips is None:
                    unknown.append(instr.name)
                    trips = 1
                visit(_attr(instr.attributes, "body").lstrip("%"), times * trips)
                visit(_attr(instr.attributes, "condition").lstrip("%"), times * (trips + 1))
            for callee in _callees(instr):
                visit(callee, times)

    visit(entry, 1.0)
    return runs, unknown


# ----------------------------------------------------------------------------- device groups
def device_groups(attributes: str, num_devices: int) -> list[list[int]]:
    """The device groups of a collective's ``replica_groups`` (any of XLA's three spellings)
    or ``source_target_pairs`` (each pair a group of two, source first)."""
    pairs = _attr(attributes, "source_target_pairs")
    if pairs is not None:
        return [[int(a), int(b)] for a, b in re.findall(r"\{(\d+),(\d+)\}", pairs)]
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\](?:, device_ids=\((.*?)\))? "
                     r"\{([^}]*)\}", attributes)
    if mesh:
        return mesh_axes_groups(*mesh.groups())
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=(\[[\d,]+\](?:T\([\d,]+\))?)",
                     attributes)
    if iota:
        return iota_ids(iota.group(3)).reshape(int(iota.group(1)), int(iota.group(2))).tolist()
    listed = _attr(attributes, "replica_groups")
    groups = [[int(v) for v in g.split(",") if v]
              for g in re.findall(r"\{([\d,]*)\}", listed or "")]
    return [g for g in groups if g] or [list(range(num_devices))]


# ----------------------------------------------------------------------------- bytes moved
def bytes_per_device(kind: str, operand_bytes: float, group_size: int) -> float:
    """Bytes one device of a group of ``group_size`` moves in one collective (module doc)."""
    g = group_size
    if g <= 1:
        return 0.0
    factor = {"all-to-all": (g - 1) / g, "all-gather": g - 1, "all-reduce": 2 * (g - 1) / g,
              "reduce-scatter": (g - 1) / g, "collective-permute": 1.0}[kind]
    return factor * operand_bytes


def _collective_kind(opcode: str) -> str | None:
    base = opcode[:-len("-start")] if opcode.endswith("-start") else opcode
    return base if base in COLLECTIVES else None


class Collective(NamedTuple):
    """One collective instruction: its kind, name, executions per run, largest group, bytes a
    device moves per execution (the mean over devices: a permute's non-senders count 0), and
    the JAX operation it came from (``op_name`` metadata, e.g.
    ``jit(update)/sharding_constraint``; empty when XLA made it up)."""

    kind: str
    instruction: str
    executions: float
    group_size: int
    bytes: float
    source: str


@dataclasses.dataclass
class HloCost:
    """Per-device cost of one execution of a compiled program (see the module docstring).

    ``bytes``/``axis_bytes``/``total_bytes`` are the busiest device's; ``collectives`` lists
    every collective instruction (`Collective`).
    """

    dot_flops: float
    counts: dict[str, float]
    bytes: dict[str, float]
    axis_bytes: dict[str, float]
    total_bytes: float
    collectives: list[Collective]
    unknown_trip_loops: list[str]
    temp_bytes: int | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


class _Traffic:
    """Accumulates bytes per device, per collective kind and per crossed mesh axis."""

    def __init__(self, mesh_shape: dict[str, int]):
        self.axes = list(mesh_shape)
        n = math.prod(mesh_shape.values())
        self.coords = np.stack(np.unravel_index(np.arange(n), tuple(mesh_shape.values())), 1)
        self.by_kind = {k: np.zeros(n) for k in COLLECTIVES}
        self.by_axis = np.zeros((n, len(self.axes)))

    def add(self, kind: str, groups: list[list[int]], operand_bytes: float,
            times: float) -> float:
        """One collective run ``times`` times over ``groups`` (pairs for a permute); returns
        the bytes it moves per execution, averaged over the devices."""
        before = self.by_kind[kind].sum()
        for group in groups:
            if kind == "collective-permute":
                senders, peers, share = group[:1], group[1:], operand_bytes
                if group[0] == group[1]:
                    continue  # a device keeping its own block moves nothing
            else:
                if len(group) < 2:
                    continue
                senders, peers = group, group
                share = bytes_per_device(kind, operand_bytes, len(group)) / (len(group) - 1)
            differs = self.coords[senders][:, None, :] != self.coords[peers][None, :, :]
            self.by_axis[senders] += times * share * differs.sum(axis=1)
            moved = share * (len(peers) if kind == "collective-permute" else len(group) - 1)
            self.by_kind[kind][senders] += times * moved
        return (self.by_kind[kind].sum() - before) / max(times, 1e-300) / len(self.coords)


def analyze(hlo: str, mesh_shape: dict[str, int] | None = None) -> HloCost:
    """Dot FLOPs and collective traffic per device of one execution (module docstring).

    Args:
      hlo: ``compiled.as_text()``.
      mesh_shape: ``{axis name: size}`` in the mesh's order (``dict(mesh.shape)``); device id
        ``i`` sits at ``np.unravel_index(i, sizes)``. Default: one axis ``"devices"`` as large
        as the largest device id named.
    """
    computations, entry = parse_module(hlo)
    runs, unknown = executions(computations, entry)
    if mesh_shape is None:
        ids = [int(v) for v in re.findall(r"\d+", " ".join(
            re.findall(r"(?:replica_groups|source_target_pairs)=\{[\d,{}]*\}", hlo)))]
        mesh_shape = {"devices": max(ids, default=0) + 1}
    num_devices = math.prod(mesh_shape.values())
    traffic = _Traffic(mesh_shape)
    flops, counts, listed = 0.0, dict.fromkeys(COLLECTIVES, 0.0), []
    for name, times in runs.items():
        scope = computations[name].by_name()
        for instr in computations[name].instructions:
            if instr.opcode == "dot":
                flops += times * dot_flops(instr, scope)
            kind = _collective_kind(instr.opcode)
            if kind is None:
                continue
            groups = device_groups(instr.attributes, num_devices)
            operand = sum(type_bytes(scope[o].type) for o in instr.operands if o in scope)
            moved = traffic.add(kind, groups, operand, times)
            counts[kind] += times
            size = max(map(len, groups))
            source = re.search(r'op_name="([^"]*)"', instr.attributes)
            listed.append(Collective(kind, instr.name, times, size, moved,
                                     source.group(1) if source else ""))
    by_kind = {k: float(v.max()) for k, v in traffic.by_kind.items()}
    total = sum(traffic.by_kind.values())
    return HloCost(flops, counts, by_kind,
                   {a: float(traffic.by_axis[:, i].max()) for i, a in enumerate(traffic.axes)},
                   float(total.max()), listed, unknown)


def analyze_compiled(compiled, mesh=None) -> HloCost:
    """`analyze` of ``compiled.as_text()`` plus ``memory_analysis().temp_size_in_bytes``.

    ``mesh``: the ``jax.sharding.Mesh`` the program's shardings use (``None``: one device or
    an unknown mesh, see `analyze`).
    """
    cost = analyze(compiled.as_text(), None if mesh is None else dict(mesh.shape))
    stats = compiled.memory_analysis()
    cost.temp_bytes = None if stats is None else int(stats.temp_size_in_bytes)
    return cost
