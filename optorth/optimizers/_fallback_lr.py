"""The default fallback's learning rate follows the matrix path's schedule.

With ``learning_rate=optax.warmup_cosine_decay_schedule(...)`` a constant fallback would move
embeddings, heads and biases at full speed from step 0 of the warmup, and a trainer that
divides update sizes by its schedule would report wrong numbers. So when the learning rate is
a schedule, the default fallback runs the same shape at its own peak:

    lr_fallback(t) = peak_fallback · lr(t) / max_s lr(s)

The maximum is taken over steps 0 to 10,000 and a geometric grid up to 10⁸ (ratio 1.001), so
a schedule peaking between two grid points overshoots its fallback peak by at most 0.1%. The
same samples are checked: a schedule giving a negative, NaN or infinite value, or zero
everywhere, raises ``ValueError`` at construction (it would ascend or give NaN updates).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

_DENSE = 10_000
_STOP, _RATIO = 1e8, 1.001


def sample_steps() -> np.ndarray:
    """The steps at which a schedule is sampled: 0..10,000, then a 0.1% geometric grid."""
    geometric = np.unique(np.round(np.geomspace(_DENSE, _STOP, int(
        np.log(_STOP / _DENSE) / np.log(_RATIO)) + 1)))
    return np.concatenate([np.arange(_DENSE), geometric]).astype(np.int64)


def _sample(schedule, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(values, steps)``: vectorized, or step by step on a coarser grid for a schedule
    with Python control flow."""
    try:
        values = np.asarray(schedule(jnp.asarray(steps, jnp.int32)), np.float64)
        return np.broadcast_to(values, steps.shape), steps
    except Exception:  # noqa: BLE001 - not vectorizable: sample it step by step
        coarse = steps[:: max(1, len(steps) // 2000)]
        return np.array([float(schedule(int(s))) for s in coarse]), coarse


def check_schedule(who: str, schedule) -> float:
    """The schedule's peak over `sample_steps`; ``ValueError`` for negative / non-finite
    values or a schedule that is zero everywhere."""
    values, steps = _sample(schedule, sample_steps())
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{who}: the learning-rate schedule gives {values[i]:.3g} at step {int(steps[i])}; a "
            f"learning rate must be finite and ≥ 0 (a negative one ascends the loss, NaN "
            f"gives NaN updates). Check the schedule's arguments, e.g. "
            f"optax.warmup_cosine_decay_schedule(0.0, 0.02, 100, 10_000).")
    peak = float(values.max())
    if peak <= 0:
        raise ValueError(f"{who}: the learning-rate schedule is 0 at every step sampled up to "
                         f"{int(steps[-1])}; nothing would train. Check its arguments.")
    return peak


def fallback_learning_rate(who: str, learning_rate: Any, peak: float) -> Any:
    """``peak`` for a constant ``learning_rate``; for a schedule, ``t ↦ peak·lr(t)/max lr``.

    Args:
      who: the optimizer's name, for error messages.
      learning_rate: the matrix path's learning rate (a number, array or schedule).
      peak: the default fallback's own learning rate.

    Returns:
      A number or an optax schedule.

    Example:
      >>> import optax
      >>> sched = optax.warmup_cosine_decay_schedule(0.0, 0.02, 10, 100)
      >>> lr = fallback_learning_rate("demo", sched, 3e-3)
      >>> float(lr(0)), round(float(lr(10)), 6)
      (0.0, 0.003)
    """
    if not (callable(learning_rate) and not hasattr(learning_rate, "dtype")):
        return peak
    scale = peak / check_schedule(who, learning_rate)

    def schedule(count):
        return learning_rate(count) * scale

    return schedule
