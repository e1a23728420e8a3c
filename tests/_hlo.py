"""Counting collectives in compiled HLO text (``jax.jit(f).lower(...).compile().as_text()``).

Used by ``test_sharding.py`` and ``test_distribution.py``. An instruction is counted where it
is defined (``... = f32[...] all-to-all(%operand), ...``, or its async ``-start`` half), so
each appears once however often a loop runs it. ``benchmarks/micro/_hlo.py`` builds its cost
analysis on these functions; the library's tests do not import the benchmarks.
"""

from __future__ import annotations

import math
import re

import numpy as np

COLLECTIVES = ("all-gather", "all-to-all", "collective-permute", "reduce-scatter", "all-reduce")


def collective_counts(hlo: str) -> dict[str, int]:
    """Collectives in compiled HLO text (each instruction once; loop bodies not unrolled)."""
    return {name: len(re.findall(rf"\s{name}(-start)?\(%", hlo)) for name in COLLECTIVES}


def entry_collectives(hlo: str) -> list[str]:
    """The collectives of the entry computation of scheduled (compiled) HLO text, in the order
    the schedule runs them."""
    entry = hlo[hlo.index("\nENTRY"):]
    entry = entry[:entry.index("\n}")]
    pattern = r"\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(%"
    return re.findall(pattern, entry)


def collectives_in_loops(hlo: str) -> int:
    """Collectives inside while-loop bodies (each runs once per iteration)."""
    computations = dict(re.findall(r"^(?:ENTRY )?(%[\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo,
                                   re.S | re.M))
    pattern = r"\s(" + "|".join(COLLECTIVES) + r")(-start)?\(%"
    return sum(len(re.findall(pattern, computations.get(body, "")))
               for body in set(re.findall(r"\bbody=(%[\w.\-]+)", hlo)))


def iota_ids(text: str) -> np.ndarray:
    """``[d0,d1,...]T(p0,p1,...)`` (transpose optional): the iota tile assignment, flat."""
    match = re.fullmatch(r"\[([\d,]+)\](?:T\(([\d,]+)\))?", text.strip())
    if match is None:
        return np.array([int(v) for v in re.findall(r"\d+", text)])
    dims = [int(d) for d in match.group(1).split(",")]
    perm = [int(p) for p in match.group(2).split(",")] if match.group(2) else range(len(dims))
    return np.arange(math.prod(dims)).reshape(dims).transpose(list(perm)).ravel()


def mesh_axes_groups(sizes: str, device_ids: str | None, axes: str) -> list[list[int]]:
    """Groups of ``mesh['a'=2,'b'=4], device_ids=(...) {'a', 'b':(1)2}``: devices that agree on
    every coordinate (and sub-axis coordinate) not listed share a group."""
    names = re.findall(r"'([^']*)'=\d+", sizes)
    dims = [int(v) for v in re.findall(r"'[^']*'=(\d+)", sizes)]
    ids = iota_ids(device_ids) if device_ids else np.arange(math.prod(dims))
    coords = np.stack(np.unravel_index(np.arange(ids.size), dims), axis=1)
    residual = coords.copy()
    for name, pre, size in re.findall(r"'([^']*)'(?::\((\d+)\)(\d+))?", axes):
        axis = names.index(name)
        if not pre:
            residual[:, axis] = 0
            continue
        rest = dims[axis] // (int(pre) * int(size))
        residual[:, axis] -= (coords[:, axis] // rest) % int(size) * rest
    groups: dict[tuple, list[int]] = {}
    for position, key in enumerate(map(tuple, residual)):
        groups.setdefault(key, []).append(int(ids[position]))
    return list(groups.values())


def device_groups(line: str) -> list[list[int]]:
    """The device groups of one collective instruction: its ``replica_groups`` (in any of
    XLA's three spellings) or its ``source_target_pairs`` (each pair a group)."""
    pairs = re.search(r"source_target_pairs=\{(.*?)\}\}", line)
    if pairs:
        return [[int(a), int(b)] for a, b in re.findall(r"(\d+),(\d+)", pairs.group(1))]
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\](?:, device_ids=\((.*?)\))? "
                     r"\{([^}]*)\}", line)
    if mesh:
        return mesh_axes_groups(*mesh.groups())
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=(\[[\d,]+\](?:T\([\d,]+\))?)", line)
    if iota:
        return iota_ids(iota.group(3)).reshape(int(iota.group(1)), int(iota.group(2))).tolist()
    listed = re.search(r"replica_groups=\{((?:\{[\d,]*\},?)*)\}", line)
    return [[int(v) for v in g.split(",") if v]
            for g in re.findall(r"\{([\d,]*)\}", listed.group(1) if listed else "")]


def collective_groups(hlo: str) -> list[list[int]]:
    """The device groups of every collective instruction in compiled HLO text."""
    pattern = r"\s(" + "|".join(COLLECTIVES) + r")(-start)?\(%"
    return [g for line in hlo.splitlines() if re.search(pattern, line)
            for g in device_groups(line)]
