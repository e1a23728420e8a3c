"""Adapting and merging a whole NNX model: find its dense layers, swap them in place."""

from __future__ import annotations

import re
from collections.abc import Callable

from flax import nnx

from optorth.nn._adapter import Frozen, OrthogonalAdapter


def _path_text(path) -> str:
    return "/".join(str(key) for key in path)


def _compile(who: str, name: str, pattern) -> re.Pattern | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except (TypeError, re.error) as err:
        raise ValueError(f"{who}: {name}={pattern!r} is not a regular expression ({err}); "
                         r"pass e.g. r'attn|mlp'") from None


def _replace(model: nnx.Module, path: tuple, module: nnx.Module) -> None:
    parent = model
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) else getattr(parent, key)
    if isinstance(path[-1], int) or isinstance(parent, (nnx.List, nnx.Dict)):
        parent[path[-1]] = module
    else:
        setattr(parent, path[-1], module)


def adapt(model: nnx.Module, make_adapter: Callable[[nnx.Linear], nnx.Module], *,
          include: str | None = None, exclude: str | None = None) -> list[str]:
    """Replace, in place, the model's ``nnx.Linear`` layers by ``make_adapter(layer)``.

    A layer is adapted when its ``/``-joined path (e.g. ``"blocks/0/mlp/up"``) matches the
    regular expression ``include`` (``re.search``; every layer when ``None``) and not
    ``exclude``. Layers already inside an adapter are skipped.

    Args:
      model: the NNX model (changed in place).
      make_adapter: called with each selected layer, e.g.
        ``lambda layer: optorth.nn.OFTLinear(layer, block_size=16)``.
      include: regex of paths to adapt (default: all dense layers).
      exclude: regex of paths to leave alone (e.g. ``"head"``).

    Returns:
      The adapted paths, in traversal order.

    Raises:
      ValueError: for a bad regex, or when nothing matches (naming the dense layers found).
        ``make_adapter`` runs on every selected layer before any is replaced, so an error
        it raises leaves the model unchanged.

    Example:
      >>> from flax import nnx
      >>> import optorth
      >>> model = nnx.Sequential(nnx.Linear(8, 8, rngs=nnx.Rngs(0)),
      ...                        nnx.Linear(8, 2, rngs=nnx.Rngs(1)))
      >>> optorth.nn.adapt(model, lambda layer: optorth.nn.OFTLinear(layer, block_size=4),
      ...                  exclude="^layers/1$")
      ['layers/0']
    """
    who = "optorth.nn.adapt"
    if not callable(make_adapter):
        raise ValueError(f"{who}: make_adapter must be callable (layer -> adapter), got "
                         f"{type(make_adapter).__name__}")
    keep, drop = _compile(who, "include", include), _compile(who, "exclude", exclude)
    dense = [(path, module) for path, module in nnx.iter_modules(model)
             if isinstance(module, nnx.Linear) and not isinstance(module.kernel, Frozen)
             and path]
    chosen = [(path, module) for path, module in dense
              if (keep is None or keep.search(_path_text(path)))
              and not (drop is not None and drop.search(_path_text(path)))]
    if not chosen:
        found = ", ".join(_path_text(path) for path, _ in dense) or "none"
        raise ValueError(f"{who}: no nnx.Linear matched include={include!r}, "
                         f"exclude={exclude!r}; dense layers found: {found}")
    # Build every adapter first: a layer make_adapter refuses leaves the model unchanged.
    adapters = [(path, make_adapter(module)) for path, module in chosen]
    for path, adapter in adapters:
        _replace(model, path, adapter)
    return [_path_text(path) for path, _ in chosen]


def merge(model: nnx.Module) -> list[str]:
    """Replace, in place, every adapter in ``model`` by its merged ``nnx.Linear``.

    The merged model computes the same function with plain ``nnx.Param`` kernels (the
    adapter parameters are folded in), so it runs at the original cost.

    Returns:
      The merged paths.

    Example:
      >>> from flax import nnx
      >>> import optorth
      >>> model = nnx.Sequential(nnx.Linear(8, 8, rngs=nnx.Rngs(0)))
      >>> optorth.nn.adapt(model, optorth.nn.GivensLinear)
      ['layers/0']
      >>> optorth.nn.merge(model), type(model.layers[0]).__name__
      (['layers/0'], 'Linear')
    """
    adapters = [(path, module) for path, module in nnx.iter_modules(model)
                if isinstance(module, OrthogonalAdapter) and path]
    for path, module in adapters:
        _replace(model, path, module.merge())
    return [_path_text(path) for path, _ in adapters]
