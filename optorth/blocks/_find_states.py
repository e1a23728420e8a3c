"""Finding a block's state inside a chained, partitioned or wrapped optimizer state."""

from __future__ import annotations


def find_states(tree, kind: type) -> list:
    """Every ``kind`` instance in an optax state, in order.

    Walks tuples and lists (``optax.chain``), dicts (``optax.partition``) and the
    ``inner_state`` / ``inner_states`` of wrappers (``optax.masked``, ``MultiSteps``,
    ``inject_hyperparams``); it does not look inside a ``kind`` it found.
    """
    found = []

    def visit(node):
        if isinstance(node, kind):
            found.append(node)
        elif isinstance(node, (list, tuple)):
            for child in node:
                visit(child)
        elif isinstance(node, dict):
            for child in node.values():
                visit(child)
        elif hasattr(node, "inner_state"):
            visit(node.inner_state)
        elif hasattr(node, "inner_states"):
            visit(node.inner_states)

    visit(tree)
    return found
