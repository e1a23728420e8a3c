"""Griffe extension for the ready optimizers that optorth builds as presets at import time.

Static analysis sees ``auon, signum, ... = (make_optimizer(preset, ...) for preset in ...)``,
an assignment it cannot read as functions. For each module that builds presets (functions
marked ``__optorth_preset__``), this extension imports the module, inspects those functions
(their signatures with their own defaults, their docstrings) and puts them in place, so the
API pages show them like every other function.
"""

from __future__ import annotations

import importlib

import griffe


class Presets(griffe.Extension):
    def on_module_members(self, *, mod: griffe.Module, agent, **kwargs) -> None:
        if isinstance(agent, griffe.Inspector) or not mod.path.startswith("optorth."):
            return
        runtime = importlib.import_module(mod.path)
        names = [name for name, value in vars(runtime).items()
                 if getattr(value, "__optorth_preset__", False)
                 and value.__module__ == mod.path]
        if not names:
            return
        inspected = griffe.inspect(mod.path, filepath=mod.filepath, extensions=agent.extensions,
                                   docstring_parser=agent.docstring_parser,
                                   docstring_options=agent.docstring_options)
        for name in names:
            mod.set_member(name, inspected[name])
