"""The one spec resolver: how the leaves of a tree become matrices (or pass through).

``specs`` may be ``None`` (every leaf must be 2-D: ``MatrixSpec()``; anything else raises
with the leaf's path), a pytree of ``MatrixSpec`` / ``"fallback"`` / ``None`` (fallback and
``None`` leaves pass through unchanged), or a callable ``params -> that pytree`` such as
``lambda p: optorth.route(p, rules)``, called on the params at init and on the updates at
update. Inside ``optax.partition`` / ``optax.masked`` the masked-out leaves are skipped.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from optorth.matrices._paths import map_with_path, path_to_str, shape_of, unwrap
from optorth.matrices._routing import route
from optorth.matrices._specs import MatrixSpec, is_spec_leaf

Specs = Any  # None | pytree of MatrixSpec / "fallback" / None | Callable[[params], pytree]


def _is_array(leaf) -> bool:
    return hasattr(unwrap(leaf), "shape")


def _default_spec(path, leaf):
    shape = shape_of(leaf)
    if len(shape) == 2:
        return MatrixSpec()
    raise ValueError(
        f"Leaf {path!r} of shape {shape} is not a 2-D matrix, and no specs were given. Pass "
        f"specs=optorth.route (or lambda p: optorth.route(p, rules)) or a pytree of "
        f"optorth.MatrixSpec / 'fallback', or apply this transform inside optax.partition "
        f"with labels from optorth.route."
    )


def _check_fit(specs_tree, tree):
    def check(path, spec, leaf):
        if isinstance(spec, MatrixSpec) and _is_array(leaf):
            spec.check(shape_of(leaf), path_to_str(path))
        return spec

    jax.tree_util.tree_map_with_path(check, specs_tree, tree, is_leaf=is_spec_leaf)


def resolve_specs(specs: Specs, tree):
    """The specs pytree for ``tree`` (see the module docstring), checked against its shapes."""
    if specs is None:
        return map_with_path(_default_spec, tree)
    specs_tree = specs(tree) if callable(specs) else specs
    _check_fit(specs_tree, tree)
    return specs_tree


def matrix_shapes(specs_tree, tree) -> set[tuple[int, int]]:
    shapes = set()

    def collect(spec, leaf):
        if isinstance(spec, MatrixSpec) and _is_array(leaf):
            shapes.update(g[1:] for g in spec.matrix_shapes(shape_of(leaf)))
        return spec

    jax.tree.map(collect, specs_tree, tree, is_leaf=is_spec_leaf)
    return shapes




def route_specs(rules=None, **route_options) -> Callable[[Any], Any]:
    """A ``specs`` callable for the transforms: ``lambda p: optorth.route(p, rules, ...)``."""
    return lambda tree: route(tree, rules, **route_options)
