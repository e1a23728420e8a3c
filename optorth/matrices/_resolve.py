"""The one spec resolver: which leaves of a tree are matrices (and how), which fall back.

Every block that takes ``specs`` reads them through `resolve_specs`, so ``specs`` means
the same everywhere:

* ``None`` (the default): the library's routing, `optorth.route` of the tree. Hidden
  2-D kernels and 4-D conv kernels get a `MatrixSpec`; embeddings, output heads,
  biases, norm gains, vectors, scalars and non-float leaves get ``"fallback"``; a leaf with no
  unambiguous layout (rank 3, rank ≥ 5) raises route's ``ValueError`` naming it and the rule
  that fixes it.
* a pytree of `MatrixSpec` / ``"fallback"`` / ``None`` (``None`` means ``"fallback"``)
  with the structure of the parameters, or a prefix of it: a single ``"fallback"`` covers every
  leaf, ``{"mlp": MatrixSpec()}`` covers every leaf under ``mlp``.
* a callable ``tree -> such a pytree``, e.g. ``lambda p: optorth.route(p, rules)``
  (`route_specs`); it is called on the tree the block sees (the parameters at init, the
  updates at update).

Specs are matched to leaves by *path* (the key components, longest prefix first), never by
position, so a spec tree computed from the full parameters also fits the tree a block sees
inside ``optax.partition`` / ``optax.masked`` (masked leaves are ``optax.MaskedNode`` and are
skipped) and under Flax NNX (``tx.init`` sees ``nnx.Param`` variables, ``tx.update`` plain
arrays; a variable is one leaf with its own path).

What a ``"fallback"`` leaf means is up to the block: the matrix-path blocks (orthogonalize,
dualize, scale_by_shape, soft_threshold) return it unchanged; the statistics blocks
(factored / per-matrix RMS) see a rank ≥ 2 fallback leaf as a batch of matrices over its last
two axes (Adafactor's convention) and a scalar or vector as one block.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable

import jax

from optorth.matrices._paths import (
    dtype_of,
    flatten_with_keys,
    is_box,
    is_variable,
    shape_of,
    unwrap,
)
from optorth.matrices._routing import FALLBACK, check_matrix_leaf, route
from optorth.matrices._specs import MatrixSpec, is_spec_leaf

Specs = Any  # None | pytree of MatrixSpec / "fallback" / None | Callable[[tree], pytree]

_FORMS = ("specs must be None (optorth.route), a pytree of optorth.MatrixSpec / 'fallback' / "
          "None with the structure of the parameters (or a prefix of it), or a callable "
          "tree -> such a pytree, e.g. lambda p: optorth.route(p, rules)")


def _show(keys: tuple[str, ...]) -> str:
    return repr("/".join(keys))


def _spec_table(specs_tree, who: str) -> dict[tuple[str, ...], Any]:
    """``{path components: MatrixSpec | "fallback"}`` for every leaf of a specs tree."""
    items, _ = flatten_with_keys(specs_tree, is_leaf=is_spec_leaf)
    table = {}
    for keys, spec in items:
        spec = unwrap(spec)  # a spec tree mapped over nnx.Param variables keeps the wrappers
        if spec is None:
            spec = FALLBACK
        if not (isinstance(spec, MatrixSpec) or (isinstance(spec, str) and spec == FALLBACK)):
            where = f"at {_show(keys)} " if keys else ""
            raise ValueError(
                f"{who}: the specs tree holds {spec!r} {where}(a {type(spec).__name__}); each "
                f"entry must be an optorth.MatrixSpec, 'fallback' or None. {_FORMS}. To route "
                f"by rules, pass specs=optorth.matrices.route_specs(rules)."
            )
        table[keys] = spec
    return table


def _lookup(table, keys):
    for cut in range(len(keys), -1, -1):
        spec = table.get(keys[:cut])
        if spec is not None:
            return spec
    return None


def _check_matrix_leaf(spec: MatrixSpec, keys, leaf, who: str) -> None:
    try:
        check_matrix_leaf(spec, "/".join(keys), shape_of(leaf), dtype_of(leaf))
    except ValueError as err:
        raise ValueError(f"{who}: {err}") from None


def resolve_specs(specs: Specs, tree, *, who: str):
    """The specs of every leaf of ``tree``: a tree like it of ``MatrixSpec`` / ``"fallback"``.

    See the module docstring for the forms ``specs`` takes and how they are matched to
    leaves. Every `MatrixSpec` is checked against its leaf's shape and dtype.

    Args:
      specs: ``None`` (`optorth.route`), a pytree (or prefix) of ``MatrixSpec`` /
        ``"fallback"`` / ``None``, or a callable ``tree -> such a pytree``.
      tree: the parameters or updates (may hold ``optax.MaskedNode``, ``nnx.Param`` variables,
        Python scalars).
      who: the calling transform's name, which starts every error message.

    Returns:
      A pytree with ``tree``'s structure (an NNX variable counts as one leaf) whose leaves are
      a ``MatrixSpec`` or the string ``"fallback"`` (``None`` entries become ``"fallback"``).

    Raises:
      ValueError: naming ``who``, the leaf's path, shape and a fix, for a leaf route cannot
        decide, a leaf without a spec, an entry that is not a spec, a spec that does not fit
        its leaf's shape, or a complex / integer leaf sent to the matrix path.

    Example:
      >>> import jax.numpy as jnp
      >>> tree = {"w": jnp.ones((4, 8)), "b": jnp.ones(8), "s": 1.0}
      >>> resolve_specs(None, tree, who="demo")["w"]
      MatrixSpec(reduction=(0,), output=(1,), heads=None, blocks=None)
      >>> resolve_specs("fallback", tree, who="demo")
      {'b': 'fallback', 's': 'fallback', 'w': 'fallback'}
      >>> resolve_specs({"w": MatrixSpec()}, tree, who="demo")  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: demo: no spec for leaf 'b' of shape (8,): the specs tree has no entry for it...
    """
    try:
        if specs is None:
            specs_tree = route(tree)
        elif callable(specs):
            specs_tree = specs(tree)
        else:
            specs_tree = specs
    except ValueError as err:
        raise ValueError(f"{who}: {err}") from None
    table = _spec_table(specs_tree, who)
    items, treedef = flatten_with_keys(tree)
    out = []
    for keys, leaf in items:
        spec = _lookup(table, keys)
        if spec is None:
            raise ValueError(
                f"{who}: no spec for leaf {'/'.join(keys)!r} of shape {shape_of(leaf)}: the "
                f"specs tree has no entry for it or for any path above it. {_FORMS}; build one "
                f"with optorth.route(params) or pass specs=None."
            )
        if isinstance(spec, MatrixSpec):
            _check_matrix_leaf(spec, keys, leaf, who)
        # Inside a Linen box (nn.Partitioned), so that the spec tree is a prefix of the tree
        # down to its arrays: the box is a pytree node around the array it holds.
        out.append(leaf.replace_boxed(spec) if is_box(leaf) else spec)
    return jax.tree_util.tree_unflatten(treedef, out)


def resolve_leaf_specs(specs: Specs, tree, *, who: str) -> tuple[list, list[str]]:
    """``(specs, paths)``: `resolve_specs` as lists in ``jax.tree.leaves(tree)`` order.

    For blocks that walk the leaves themselves (one entry per array leaf; an NNX variable
    holds one array).
    """
    resolved = resolve_specs(specs, tree, who=who)
    items, _ = flatten_with_keys(tree)
    return jax.tree.leaves(resolved), ["/".join(keys) for keys, _ in items]


def matrix_shapes(specs_tree, tree) -> set[tuple[int, int]]:
    """The ``(m, n)`` shapes of the matrices of a resolved specs tree (for per-shape state)."""
    shapes = set()

    def collect(spec, leaf):
        spec = unwrap(spec)
        if isinstance(spec, MatrixSpec) and hasattr(unwrap(leaf), "shape"):
            shapes.update(g[1:] for g in spec.matrix_shapes(shape_of(leaf)))
        return spec

    jax.tree.map(collect, specs_tree, tree, is_leaf=lambda x: is_spec_leaf(x) or
                 is_variable(x))
    return shapes


def route_specs(rules=None, **route_options) -> Callable[[Any], Any]:
    """A ``specs`` callable: ``lambda tree: optorth.route(tree, rules, **route_options)``.

    Args:
      rules: ``(regex, MatrixSpec | "fallback")`` pairs, as in `optorth.route`.
      **route_options: ``embedding_patterns``, ``head_patterns``, ``bias_patterns``.

    Returns:
      A function of a tree, for the ``specs`` argument of any block.

    Example:
      >>> import jax.numpy as jnp
      >>> specs = route_specs([(r"^stack$", MatrixSpec.stacked())])
      >>> specs({"stack": jnp.ones((3, 4, 8))})["stack"]
      MatrixSpec(reduction=(1,), output=(2,), heads=None, blocks=None)
    """
    return lambda tree: route(tree, rules, **route_options)


class RoutingOnce:
    """``specs`` shared by the blocks of one ready optimizer: `optorth.route` with ``rules``,
    computed once per `once` scope.

    Outside a scope it is ``route_specs(rules)``. Inside ``with routing.once(tree):`` (the ready
    optimizer's ``init`` or ``update``) the first call routes ``tree`` and every later call,
    from any block or from the partition's labels, returns that result; blocks match it to the
    leaves they see by path, which the masked trees inside ``optax.partition`` keep. Routing
    reads only paths, shapes and dtype kinds, so the result is the one each block would get.

    Args:
      rules: ``(regex, MatrixSpec | "fallback")`` pairs, as in `optorth.route`.
    """

    def __init__(self, rules=None):
        self.rules = rules
        self._scope = contextvars.ContextVar("optorth.routing_once", default=None)

    @contextlib.contextmanager
    def once(self, tree):
        """A scope in which ``tree`` is routed at most once."""
        token = self._scope.set({"tree": tree})
        try:
            yield self
        finally:
            self._scope.reset(token)

    def __call__(self, tree):
        scope = self._scope.get()
        if scope is None:
            return route(tree, self.rules)
        if "routed" not in scope:
            scope["routed"] = route(scope["tree"], self.rules)
        return scope["routed"]

