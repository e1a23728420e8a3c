"""Ready optimizers as presets: one parameter catalogue, one docstring source, many defaults.

A ready optimizer is a `Preset`: the parameters it takes from
`optorth.optimizers._parameters.catalogue`, its defaults, its builder and its prose.
`make_optimizer` turns it into a real function: ``inspect.signature`` shows its own
parameters and defaults, ``help`` and the API docs its own docstring (the ``Args:`` entries
filled in from the catalogue's text), and its doctests run in the module that defines it.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import textwrap
import types
from typing import Any, Callable

import optax

from optorth.optimizers._parameters import ARGS, COMMON, catalogue


@dataclasses.dataclass(frozen=True)
class Preset:
    """One ready optimizer.

    Attributes:
      name: the public name (``optorth.<name>``).
      build: ``build(name, **arguments) -> optax.GradientTransformation``.
      takes: the parameters it takes besides `COMMON` (signature order is the catalogue's).
      defaults: ``{parameter: default}`` where the catalogue's default is not its own.
      doc: the docstring; an ``Args:`` line with nothing under it is filled with one entry per
        parameter.
      args: ``{parameter: text}`` where the catalogue's ``Args:`` text is not enough.
    """

    name: str
    build: Callable[..., optax.GradientTransformation]
    takes: tuple[str, ...]
    defaults: dict[str, Any]
    doc: str
    args: dict[str, str] = dataclasses.field(default_factory=dict)


def _signature(preset: Preset) -> inspect.Signature:
    signature = inspect.signature(catalogue)
    takes = set(COMMON) | set(preset.takes)
    unknown = (takes | set(preset.defaults) | set(preset.args)) - set(signature.parameters)
    if unknown or not set(preset.defaults) | set(preset.args) <= takes:
        raise ValueError(f"{preset.name}: parameters {sorted(unknown)} are not in the "
                         f"catalogue, or it sets defaults or text for parameters it lacks")
    return signature.replace(parameters=[
        p.replace(default=preset.defaults.get(p.name, p.default))
        for p in signature.parameters.values() if p.name in takes])


def _docstring(preset: Preset, signature: inspect.Signature) -> str:
    text = {**ARGS, **preset.args}
    entries = "\n".join(textwrap.fill(f"{name}: {text[name]}", 92, initial_indent="  ",
                                      subsequent_indent="    ")
                        for name in signature.parameters)
    doc = textwrap.dedent(preset.doc).strip()
    if "\nArgs:\n\n" not in doc:
        raise ValueError(f"{preset.name}: the docstring needs an empty 'Args:' section")
    return doc.replace("\nArgs:\n\n", f"\nArgs:\n{entries}\n\n", 1)


def make_optimizer(preset: Preset, module: str) -> Callable[..., optax.GradientTransformation]:
    """The public function of ``preset``: ``preset.build(preset.name, **bound arguments)``.

    Args:
      preset: the ready optimizer.
      module: the defining module's ``__name__`` (for ``help``, the API docs and doctests).

    Returns:
      A function with ``preset``'s signature and docstring.
    """
    signature = _signature(preset)
    name, build = preset.name, preset.build

    def optimizer(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as err:
            raise TypeError(f"optorth.{name}: {err}; its signature is {signature}") from None
        bound.apply_defaults()
        return build(name, **bound.arguments)

    # Defined with the module's globals, so that doctest finds its example in that module.
    function = types.FunctionType(optimizer.__code__, vars(sys.modules[module]), name, None,
                                  optimizer.__closure__)
    function.__qualname__ = name
    function.__module__ = module
    function.__doc__ = _docstring(preset, signature)
    function.__signature__ = signature
    function.__annotations__ = {key: value for key, value in catalogue.__annotations__.items()
                                if key in signature.parameters or key == "return"}
    function.__optorth_preset__ = True  # read by the API docs, which import presets
    return function
