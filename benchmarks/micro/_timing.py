"""A small timing helper shared by the benchmarks: compile, warm up, then the median of repeats.

Wall-clock timings on a shared machine are noisy, so every benchmark reports ratios against
a baseline timed in the same process (ideally interleaved with it), never absolute seconds
alone.
"""

from __future__ import annotations

import dataclasses
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


def time_fn(
    fn: Callable[..., Any], *args: Any, repeats: int = 5, warmup: int = 1, jit: bool = True
) -> Timing:
    """Times ``fn(*args)``: one compiling call, ``warmup`` untimed calls, ``repeats`` timed ones.

    Args:
      fn: the function; it is wrapped in ``jax.jit`` unless ``jit=False`` (pass an already
        jitted function to reuse its compilation cache).
      *args: its arguments (arrays already on the device).
      repeats: timed calls; the median is reported.
      warmup: extra untimed calls after compilation.
      jit: whether to wrap ``fn`` in ``jax.jit``.

    Returns:
      A `Timing`; outputs are waited on with ``jax.block_until_ready``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    fn = jax.jit(fn) if jit else fn
    compile_s = _run(fn, args)
    for _ in range(warmup):
        _run(fn, args)
    times = tuple(_run(fn, args) for _ in range(repeats))
    return Timing(statistics.median(times), min(times), times, compile_s)


def time_interleaved(
    fns: dict[str, Callable[..., Any]], *args: Any, repeats: int = 5, warmup: int = 1
) -> dict[str, Timing]:
    """Times several jitted functions round-robin so that load drifts hit them all alike.

    Each function is compiled and warmed first; then every round calls each function once.
    Use it to compare candidates against a baseline in the same process.
    """
    jitted = {name: jax.jit(fn) for name, fn in fns.items()}
    compile_s = {name: _run(fn, args) for name, fn in jitted.items()}
    for _ in range(warmup):
        for fn in jitted.values():
            _run(fn, args)
    times: dict[str, list[float]] = {name: [] for name in jitted}
    for _ in range(repeats):
        for name, fn in jitted.items():
            times[name].append(_run(fn, args))
    return {
        name: Timing(statistics.median(t), min(t), tuple(t), compile_s[name])
        for name, t in times.items()
    }


def compiled_temp_bytes(fn: Callable[..., Any], *args) -> int:
    """XLA's temporary buffer bytes of ``jax.jit(fn)`` compiled for ``args``."""
    return int(jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes)
