"""A small timing helper shared by the benchmarks: compile, warm up, then the median of repeats.

Wall-clock timings on a shared machine are noisy, so every benchmark reports ratios against
a baseline timed in the same process (ideally interleaved with it), never absolute seconds
alone.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from typing import Any, Callable, Sequence

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per call of a jitted function.

    Attributes:
      median: the median over ``times`` (the number to report).
      best: the fastest repeat (a lower bound less sensitive to other load).
      times: every timed repeat, in order.
      compile_s: time of the first call (tracing + compilation + one run).
    """

    median: float
    best: float
    times: tuple[float, ...]
    compile_s: float


def _run(fn: Callable[..., Any], args: Sequence[Any]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def time_round_robin(fns: dict[str, Callable[..., Any]], args: dict[str, Sequence[Any]],
                     repeats: int = 5, warmup: int = 1) -> dict[str, Timing]:
    """Times already compiled functions, ``fns[name](*args[name])``, round-robin so that load
    drifts hit them all alike: ``warmup`` untimed rounds, then ``repeats`` timed ones."""
    for _ in range(warmup):
        for name, fn in fns.items():
            _run(fn, args[name])
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_run(fn, args[name]))
    return {name: Timing(statistics.median(t), min(t), tuple(t), float("nan"))
            for name, t in times.items()}


def time_interleaved(
    fns: dict[str, Callable[..., Any]], *args: Any, repeats: int = 5, warmup: int = 1
) -> dict[str, Timing]:
    """`time_round_robin` of ``jax.jit(fn)(*args)`` for each function, its first (compiling)
    call timed as ``compile_s``. Use it to compare candidates against a baseline."""
    jitted = {name: jax.jit(fn) for name, fn in fns.items()}
    compile_s = {name: _run(fn, args) for name, fn in jitted.items()}
    timings = time_round_robin(jitted, dict.fromkeys(jitted, args), repeats, warmup)
    return {name: dataclasses.replace(t, compile_s=compile_s[name])
            for name, t in timings.items()}


def compiled_temp_bytes(fn: Callable[..., Any], *args) -> int:
    """XLA's temporary buffer bytes of ``jax.jit(fn)`` compiled for ``args``."""
    return int(jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes)


def cost_cells(fns: dict[str, Callable[..., Any]], args: dict[str, Sequence[Any]],
               repeats: int, baseline: str) -> dict[str, str]:
    """``ms/step | × time | temp MiB | × temp`` table cells of each ``fns[name](*args[name])``:
    interleaved median time and compiled temporary bytes, ratios to ``baseline``'s."""
    jitted = {name: jax.jit(fn) for name, fn in fns.items()}
    for name, fn in jitted.items():
        _run(fn, args[name])  # compile
    timings = time_round_robin(jitted, args, repeats)
    memory = {name: compiled_temp_bytes(fn, *args[name]) for name, fn in fns.items()}
    base_t, base_m = timings[baseline].median, max(memory[baseline], 1)
    return {name: f"{timings[name].median * 1e3:.2f} | {timings[name].median / base_t:.2f} | "
                  f"{memory[name] / 2**20:.2f} | {memory[name] / base_m:.2f}" for name in fns}


def machine() -> str:
    """The backend, machine, core count and load average, for a benchmark's header."""
    return (f"{jax.default_backend()} ({platform.machine()}, {os.cpu_count()} cores, load "
            f"average {os.getloadavg()[0]:.1f})")
