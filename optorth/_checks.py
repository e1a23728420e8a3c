"""Validation of hyperparameters where they enter (constructors and config objects).

Every check raises ``ValueError`` that names the callee (``who``), the argument, the value
and the fix. Values that are traced (``optax.inject_hyperparams`` passes arrays, which are
tracers inside ``jax.jit``) cannot be inspected and are let through; concrete arrays are
checked like Python numbers.
"""

from __future__ import annotations

import functools
import math
import types
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def concrete_float(value) -> float | None:
    """``value`` as a Python float, or ``None`` when it is traced or not a real scalar."""
    if isinstance(value, jax.core.Tracer) or isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if hasattr(value, "shape") and hasattr(value, "dtype") and np.shape(value) == ():
        if np.issubdtype(np.dtype(value.dtype), np.number) and not np.iscomplexobj(value):
            return float(np.asarray(value))
    return None


def _number(who: str, name: str, value) -> float | None:
    """Float value, ``None`` if traced; raises for anything that is not a real scalar."""
    if isinstance(value, jax.core.Tracer):
        return None
    number = concrete_float(value)
    if number is None:
        raise ValueError(f"{who}: {name} must be a real number; got {value!r} "
                         f"({type(value).__name__}).")
    return number


def check_positive(who: str, name: str, value) -> Any:
    """``value`` if it is a finite number > 0 (or traced)."""
    number = _number(who, name, value)
    if number is not None and not (math.isfinite(number) and number > 0):
        raise ValueError(f"{who}: {name} must be a finite number > 0; got {value!r}.")
    return value


def check_nonnegative(who: str, name: str, value) -> Any:
    """``value`` if it is a finite number ≥ 0 (or traced)."""
    number = _number(who, name, value)
    if number is not None and not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{who}: {name} must be a finite number >= 0; got {value!r}.")
    return value


def nan_outside(value, lo: float, hi: float, *, include_hi: bool):
    """A traced ``value`` (``optax.inject_hyperparams`` state, a schedule under ``jit``) as
    NaN where it leaves [lo, hi] (or [lo, hi)): it cannot raise there, so the update turns
    NaN, which ``optax.apply_if_finite`` skips, instead of silently ascending or diverging.
    Concrete values are returned unchanged (they are checked where they enter)."""
    if not isinstance(value, jax.core.Tracer):
        return value
    upper = value <= hi if include_hi else value < hi
    return jnp.where((value >= lo) & upper, value, jnp.nan)


def check_decay(who: str, name: str, value) -> Any:
    """``value`` if it lies in [0, 1) (a momentum or EMA coefficient; 1 never forgets the
    first gradient and gives zero or constant updates, > 1 diverges); a traced value comes
    back NaN outside that range (`nan_outside`)."""
    number = _number(who, name, value)
    if number is not None and not 0.0 <= number < 1.0:
        raise ValueError(f"{who}: {name} must lie in [0, 1); got {value!r}. "
                         f"(1 keeps the first gradient forever, above 1 the average diverges.)")
    return nan_outside(value, 0.0, 1.0, include_hi=False)


def check_fraction(who: str, name: str, value) -> Any:
    """``value`` if it lies in [0, 1] (a quantile or a probability)."""
    number = _number(who, name, value)
    if number is not None and not 0.0 <= number <= 1.0:
        raise ValueError(f"{who}: {name} must lie in [0, 1]; got {value!r}.")
    return value


def check_positive_int(who: str, name: str, value, *, allow_none: bool = False) -> Any:
    """``value`` if it is a positive int (``None`` when allowed); refuses floats such as 2.5
    (which would silently run 2 steps) and traced values (which must be static)."""
    if value is None and allow_none:
        return None
    if isinstance(value, jax.core.Tracer):
        raise ValueError(f"{who}: {name} must be a static int, got a traced value (optax."
                         f"inject_hyperparams turns numbers into arrays); pass "
                         f"static_args=('{name}',) to optax.inject_hyperparams.")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive int; got {value!r}.")
    return int(value)


def check_learning_rate(who: str, value, name: str = "learning_rate") -> Any:
    """``value`` if it is a finite number ≥ 0, a concrete or traced scalar, or a callable
    schedule ``count -> value`` (an ``optax.Schedule``); a traced value comes back NaN where
    it is negative or not finite (`nan_outside`)."""
    if callable(value) and not hasattr(value, "dtype"):
        return value
    if isinstance(value, (str, bytes)) or concrete_float(value) is None:
        if isinstance(value, jax.core.Tracer):
            return nan_outside(value, 0.0, math.inf, include_hi=False)
        raise ValueError(f"{who}: {name} must be a number or an optax schedule (a callable "
                         f"step -> value, e.g. optax.cosine_decay_schedule(0.02, 1000)); got "
                         f"{value!r}.")
    return check_nonnegative(who, name, value)


def check_dtype(who: str, name: str, value) -> str | None:
    """A canonical floating dtype name (``"bfloat16"``, ``"float32"``, ...) or ``None``.

    Refuses arrays: ``optax.inject_hyperparams`` takes a dtype class such as
    ``jnp.bfloat16`` (a callable) for a schedule and passes an array in its place.
    """
    if value is None:
        return None
    if hasattr(value, "shape") and not isinstance(value, (type, np.dtype)):
        raise ValueError(f"{who}: {name} got an array ({value!r}), not a dtype. Under "
                         f"optax.inject_hyperparams pass dtypes as strings ({name}='bfloat16') "
                         f"or list {name!r} in static_args.")
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise ValueError(f"{who}: {name}={value!r} is not a dtype; pass e.g. 'float32' or "
                         f"'bfloat16' (or None).") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{who}: {name}={dtype.name} is not a floating dtype; pass e.g. "
                         f"'float32' or 'bfloat16' (or None).")
    return dtype.name


def check_choice(who: str, name: str, value, choices) -> Any:
    """``value`` if it is one of ``choices`` (with the closest names in the error)."""
    if value not in choices:
        import difflib

        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{who}: {name}={value!r}; expected one of {tuple(choices)}.{hint}")
    return value


def check_bool(who: str, name: str, value) -> bool:
    """``value`` if it is a bool (a truthy string such as ``"no"`` is not silently ``True``)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{who}: {name} must be True or False; got {value!r}.")
    return bool(value)


def check_loss_value(who: str, value) -> None:
    """Raises unless ``value`` (the ``value=`` extra argument of an update) is a scalar loss."""
    if value is None:
        raise ValueError(
            f"{who}: update needs the loss value at the current params as the keyword "
            f"argument value, e.g. loss, grads = jax.value_and_grad(loss_fn)(params); "
            f"tx.update(grads, state, params, value=loss). Inside optax.chain pass value= to "
            f"the chain's update, which hands it on.")
    if np.ndim(value) != 0:
        raise ValueError(f"{who}: value must be the scalar loss; got an array of shape "
                         f"{np.shape(value)} (reduce the per-example losses, e.g. .mean()).")


def renamed_keywords(who: str, **renames: str):
    """A decorator: the function also takes each old keyword (``old=new`` in ``renames``),
    passed on as the new one with a ``DeprecationWarning`` naming the new name.

    The decorated function keeps its own signature (the new names only), docstring and
    module globals, so ``inspect.signature``, ``help`` and doctest see the function itself.
    Passing both names raises ``TypeError``.
    """

    warn = warnings.warn  # a closure variable: the wrapper runs with the function's globals

    def decorate(function):
        def renaming(*args, **kwargs):
            for old, new in renames.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(f"{who}: pass {new}= only ({old}= is its deprecated name).")
                warn(f"{who}: {old}= is deprecated; pass {new}= (the same value).",
                     DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        wrapper = types.FunctionType(renaming.__code__, function.__globals__, function.__name__,
                                     None, renaming.__closure__)
        functools.update_wrapper(wrapper, function)
        return wrapper

    return decorate
