"""Counting collectives in compiled HLO text (``jax.jit(f).lower(...).compile().as_text()``).

Used by ``test_sharding.py``. An instruction is counted where it is defined
(``... = f32[...] all-to-all(%operand), ...``, or its async ``-start`` half), so each appears
once however often a loop runs it. (``benchmarks/_hlo.py`` reports the same counts for the
step-time benchmark; the library's tests do not import the benchmarks.)
"""

from __future__ import annotations

import re

COLLECTIVES = ("all-gather", "all-to-all", "collective-permute", "reduce-scatter", "all-reduce")


def collective_counts(hlo: str) -> dict[str, int]:
    """Collectives in compiled HLO text (each instruction once; loop bodies not unrolled)."""
    return {name: len(re.findall(rf"\s{name}(-start)?\(%", hlo)) for name in COLLECTIVES}


def collectives_in_loops(hlo: str) -> int:
    """Collectives inside while-loop bodies (each runs once per iteration)."""
    computations = dict(re.findall(r"^(?:ENTRY )?(%[\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo,
                                   re.S | re.M))
    pattern = r"\s(" + "|".join(COLLECTIVES) + r")(-start)?\(%"
    return sum(len(re.findall(pattern, computations.get(body, "")))
               for body in set(re.findall(r"\bbody=(%[\w.\-]+)", hlo)))
