"""Ready optimizers as presets: one signature and one docstring template, many defaults.

A family of ready optimizers that differ only in their defaults (and their prose) is one
builder ``build(name, **arguments)``, one template function that holds the family's
signature, and a `Preset` per public name. `make_optimizer` turns each preset into a real
function: ``inspect.signature`` shows its own defaults, ``help`` and the API docs show its
own docstring, and its doctests run in the module that defines it.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import textwrap
import types
from typing import Any, Callable

import optax


@dataclasses.dataclass(frozen=True)
class Preset:
    """One public optimizer of a family: its name, defaults and prose.

    Attributes:
      name: the public name (``optorth.<name>``).
      defaults: ``{parameter: default}`` overriding the template's defaults.
      summary: the docstring's one-line summary.
      body: the paragraphs after the summary (math, provenance of the defaults).
      args: ``{parameter: text}`` overriding the family's ``Args:`` entries.
      example: the ``Example:`` lines (doctest syntax, without indentation).
      references: the ``References:`` lines.
    """

    name: str
    defaults: dict[str, Any]
    summary: str
    body: str
    args: dict[str, str]
    example: str
    references: str


def _signature(template: Callable, defaults: dict[str, Any]) -> inspect.Signature:
    signature = inspect.signature(template)
    unknown = set(defaults) - set(signature.parameters)
    if unknown:
        raise ValueError(f"preset defaults {sorted(unknown)} are not parameters of "
                         f"{template.__name__}{signature}")
    return signature.replace(parameters=[
        p.replace(default=defaults.get(p.name, p.default))
        for p in signature.parameters.values()])


def _section(title: str, text: str) -> str:
    return f"{title}:\n" + textwrap.indent(textwrap.dedent(text).strip(), "  ")


def _docstring(preset: Preset, signature: inspect.Signature, args: dict[str, str]) -> str:
    entries = {**args, **preset.args}
    missing = [name for name in signature.parameters if name not in entries]
    if missing:
        raise ValueError(f"{preset.name}: no Args text for {missing}")
    lines = "\n".join(textwrap.fill(f"{name}: {entries[name]}", 94, subsequent_indent="  ")
                      for name in signature.parameters)
    parts = [preset.summary, textwrap.dedent(preset.body).strip(), _section("Args", lines),
             _section("Example", preset.example), _section("References", preset.references)]
    return "\n\n".join(part for part in parts if part)


def make_optimizer(preset: Preset, template: Callable, args: dict[str, str],
                   build: Callable[..., optax.GradientTransformation],
                   module: str) -> Callable[..., optax.GradientTransformation]:
    """The public function of ``preset``: ``build(preset.name, **bound arguments)``.

    Args:
      preset: the name, defaults and prose.
      template: a function whose signature is the family's (its defaults are overridden by
        ``preset.defaults``); it is never called.
      args: the family's ``Args:`` text per parameter.
      build: ``build(name, **arguments) -> optax.GradientTransformation``.
      module: the defining module's ``__name__`` (for ``help``, the API docs and doctests).

    Returns:
      A function with ``preset``'s signature and docstring.
    """
    signature = _signature(template, preset.defaults)
    name = preset.name

    def optimizer(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as err:
            raise TypeError(f"optorth.{name}: {err}; its signature is {signature}") from None
        bound.apply_defaults()
        return build(name, **bound.arguments)

    # Defined with the module's globals, so doctest finds its example in that module.
    function = types.FunctionType(optimizer.__code__, vars(sys.modules[module]), name, None,
                                  optimizer.__closure__)
    function.__qualname__ = name
    function.__module__ = module
    function.__doc__ = _docstring(preset, signature, args)
    function.__signature__ = signature
    function.__annotations__ = dict(template.__annotations__)
    function.__optorth_preset__ = True  # read by the API docs, which import presets
    return function
