"""Checkpoints: what a restored optimizer state does with its Newton–Schulz coefficients.

Every `optorth.orthogonalize` block keeps its coefficient table in its state
(`optorth.OrthogonalizeState`): ``coeffs`` (the table read at every update; learned or
scheduled coefficients change it), ``fingerprint`` (a CRC32 of the table(s) the block was
*constructed* with; it never changes during training), ``version`` (the state layout,
`STATE_VERSION`) and, when learning online, ``count``. All are plain arrays, so an
Orbax round trip of the whole optax state is bit-exact and training continues identically
after a restore.

A restore knows nothing about the optimizer the code constructs now, so by itself it keeps the
checkpoint's coefficients, like every other state (momentum, second moments). When the two can
differ — the table was learned online, or the code now asks for another schedule or step
count — call `reconcile_coefficients` right after restoring and choose explicitly:

Every policy that keeps the restored table first checks its values: a table that is not
finite or that `optorth.validate_schedule` rejects raises ``ValueError``.

The policies, for restored coefficients that differ from those the optimizer was constructed
with:

- ``"same_schedule"`` (the default): keep the checkpoint's (e.g. learned) table if it started
  from the same table (equal fingerprints); otherwise raise ``ValueError``.
- ``"keep"``: always continue with the checkpoint's table (its fingerprint becomes the
  constructed optimizer's: ``update`` runs a state's table only when the fingerprints agree,
  and otherwise uses its own table).
- ``"override"``: always use the table of the optimizer constructed now (learning restarts).
- ``"error"``: raise ``ValueError`` whenever the tables differ at all.

A changed step count changes the table's shape; Orbax then refuses to restore into the new
optimizer's state ("Requested shape ... is not compatible with the stored shape"). Restore into
the state of the optimizer that wrote the checkpoint and reconcile with ``policy="override"``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jax
import numpy as np

from optorth.blocks._orthogonalize import OrthogonalizeState
from optorth.matrices._paths import path_to_str, unwrap
from optorth.ns._fingerprint import STATE_VERSION, UNKNOWN_FINGERPRINT
from optorth.ns._validate import validate_schedule

POLICIES = ("same_schedule", "keep", "override", "error")

__all__ = ["POLICIES", "coefficient_states", "reconcile_coefficients"]


def _is_coefficient_state(x) -> bool:
    return isinstance(x, OrthogonalizeState)


def coefficient_states(state) -> list[tuple[str, Any]]:
    """``[(path, OrthogonalizeState), ...]`` of every orthogonalize block in an optax state.

    Works on plain optax states and on ``nnx.Optimizer.opt_state`` (NNX variables inside).
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_coefficient_state)
    return [(path_to_str(p), x) for p, x in flat if _is_coefficient_state(x)]


def _values(x):
    """The value of a field as a numpy array (or a dict of them); ``None`` stays ``None``."""
    x = unwrap(x)
    if x is None:
        return None
    if isinstance(x, dict):
        return {k: np.asarray(unwrap(v)) for k, v in x.items()}
    return np.asarray(x)


def _same_tables(a, b) -> bool:
    a, b = _values(a), _values(b)
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)) or sorted(a) != sorted(b):
            return False
        return all(_same_tables(a[k], b[k]) for k in a)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def _describe(node) -> str:
    coeffs = _values(node.coeffs)
    if isinstance(coeffs, dict):
        tables = ", ".join(f"{k}: {v.shape[0]}×3" for k, v in sorted(coeffs.items()))
    else:
        tables = f"{coeffs.shape[0]}×3" if coeffs.ndim == 2 else f"shape {coeffs.shape}"
    fingerprint = _values(getattr(node, "fingerprint", None))
    fp = "unknown" if fingerprint is None or int(fingerprint) == 0 else f"{int(fingerprint):08x}"
    return f"table {tables}, initial-table fingerprint {fp}"


def _check_version(path, node):
    version = _values(getattr(node, "version", None))
    if version is not None and int(version) > STATE_VERSION:
        raise ValueError(
            f"The coefficient state at {path!r} has layout version {int(version)}, newer than "
            f"this optorth's {STATE_VERSION}. Upgrade optorth to restore this checkpoint.")


def _fingerprints_match(restored, reference) -> bool:
    a = _values(getattr(restored, "fingerprint", None))
    b = _values(getattr(reference, "fingerprint", None))
    return (a is not None and b is not None and int(a) != UNKNOWN_FINGERPRINT
            and int(a) == int(b))


def _check_values(path, node):
    """Raises unless every restored table is finite and accepted by ``validate_schedule``."""
    coeffs = _values(node.coeffs)
    tables = coeffs.items() if isinstance(coeffs, dict) else [("", coeffs)]
    for key, table in tables:
        where = f"{path!r}" + (f" (matrix shape {key})" if key else "")
        if table.ndim != 2 or table.shape[-1] != 3 or not np.all(np.isfinite(table)):
            raise ValueError(
                f"The restored Newton–Schulz coefficients at {where} are not a finite (T, 3) "
                f"table (shape {table.shape}); the checkpoint is corrupt or from another "
                f"optimizer. Use policy='override' to continue with the constructed "
                f"optimizer's table.")
        report = validate_schedule(table.astype(np.float64))
        if not report.ok:
            raise ValueError(
                f"The restored Newton–Schulz coefficients at {where} are rejected by "
                f"optorth.validate_schedule: {report.reason} Use policy='override' to "
                f"continue with the constructed optimizer's table.")
    return node


def _adopt(restored, reference):
    """``restored`` marked as belonging to the optimizer of ``reference`` (its fingerprint):
    ``update`` drives the iteration with a state's table only when the fingerprints agree."""
    if hasattr(restored, "_replace"):
        return restored._replace(fingerprint=reference.fingerprint)
    return restored


def _choose(path, restored, reference, policy):
    _check_version(path, restored)
    if policy == "override":
        return reference
    if _same_tables(restored.coeffs, reference.coeffs):
        return _check_values(path, restored)
    if policy == "keep":  # adopted: the fingerprint now says it belongs to this optimizer
        return _adopt(_check_values(path, restored), reference)
    where = (f"The restored Newton–Schulz coefficients at {path!r} ({_describe(restored)}) "
             f"differ from those of the optimizer constructed now ({_describe(reference)})")
    fix = ("Pass policy='keep' to continue with the checkpoint's coefficients or "
           "policy='override' to use the constructed optimizer's.")
    if policy == "error":
        raise ValueError(f"{where}. policy='error' forbids this. {fix}")
    if _fingerprints_match(restored, reference):
        return _check_values(path, restored)  # learned from the same starting table
    raise ValueError(f"{where}, and they did not start from the same table (a different "
                     f"schedule, step count or shape). {fix}")


def reconcile_coefficients(restored, reference, policy: str = "same_schedule"):
    """Decides, explicitly, which Newton–Schulz coefficients a restored state continues with.

    Compares every `optorth.OrthogonalizeState` of ``restored`` with the one at the
    same place in ``reference`` (the state of the optimizer constructed now, e.g.
    ``tx.init(params)``) and applies ``policy`` (see the module docstring). Every other leaf
    of ``restored`` is returned unchanged.

    Args:
      restored: the optax state read from a checkpoint (or ``nnx.Optimizer.opt_state`` after
        ``nnx.update(optimizer, restored)``; NNX variables are fine).
      reference: a state with the same structure from the optimizer as constructed now.
      policy: ``"same_schedule"``, ``"keep"``, ``"override"`` or ``"error"``.

    Returns:
      ``restored`` with the chosen coefficient states.

    Raises:
      ValueError: for an unknown policy, mismatched structures, a state written by a newer
        layout, or coefficients the policy does not accept (naming the state's path, both
        tables and the fix).

    For example:

        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(path, {"params": params, "opt": tx.init(params)})
        opt_state = optorth.reconcile_coefficients(restored["opt"], tx.init(params),
                                                   policy="same_schedule")

    With Flax NNX (``nnx.state(optimizer)`` flattens the optax NamedTuples, so reconcile the
    ``opt_state`` attribute, which keeps them):

        reference = jax.tree.map(jnp.copy, optimizer.opt_state)  # as constructed now
        nnx.update(optimizer, ckptr.restore(path, nnx.state(optimizer)))
        optimizer.opt_state = optorth.reconcile_coefficients(optimizer.opt_state, reference)
    """
    if policy not in POLICIES:
        raise ValueError(f"Unknown policy {policy!r}; expected one of {POLICIES}.")
    flat_r, treedef_r = jax.tree_util.tree_flatten_with_path(restored,
                                                             is_leaf=_is_coefficient_state)
    flat_f, treedef_f = jax.tree_util.tree_flatten_with_path(reference,
                                                             is_leaf=_is_coefficient_state)
    paths_r = [path_to_str(p) for p, x in flat_r if _is_coefficient_state(x)]
    paths_f = [path_to_str(p) for p, x in flat_f if _is_coefficient_state(x)]
    if paths_r != paths_f or len(flat_r) != len(flat_f):
        raise ValueError(
            f"The restored state and the reference state have different structures "
            f"(coefficient states at {paths_r} vs {paths_f}; {len(flat_r)} vs {len(flat_f)} "
            f"leaves). Build the reference with the same optimizer chain and parameters.")
    leaves = [
        _choose(path_to_str(p), r, f, policy) if _is_coefficient_state(r) else r
        for (p, r), (_, f) in zip(flat_r, flat_f, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef_r, leaves)


#: TensorStore status codes of a checkpoint whose files cannot be read back as written.
_READ_FAILURES = ("DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND", "CRC-32C", "Error decoding")
_TRUNCATED = ("truncated or corrupted (an interrupted save, a partial copy or a damaged "
              "disk). Restore an earlier checkpoint, or copy this one again from its source")


def _stored_leaves(tree) -> dict[str, Any]:
    """``{path: leaf}`` of a target or an Orbax metadata tree, both keyed the same way."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_to_str(p): x for p, x in flat}


def _structure_difference(target, stored) -> str | None:
    """Which leaves the target and the checkpoint do not share, or ``None``."""
    if stored is None:
        return None
    want, have = _stored_leaves(target), _stored_leaves(stored)
    missing = [p for p in want if p not in have]
    extra = [p for p in have if p not in want]
    if not (missing or extra):
        return None
    return (f"the target has {len(want)} leaves and the checkpoint {len(have)}: the "
            f"checkpoint lacks {missing[:3]} and holds {extra[:3]} that the target does not. "
            f"It was saved by another optimizer configuration (another optimizer, chain, "
            f"rules or parameter tree). Build the target with the optimizer and parameters "
            f"that wrote it")


def _shape_difference(target, stored) -> str | None:
    """The first leaf at the same path whose shape differs, or ``None``."""
    if stored is None:
        return None
    have = _stored_leaves(stored)
    for path, leaf in _stored_leaves(target).items():
        if path in have and tuple(leaf.shape) != tuple(have[path].shape):
            return _shape_message(path, tuple(leaf.shape), tuple(have[path].shape))
    return None


def _shape_message(path, target_shape, stored_shape) -> str:
    what = (f"leaf {path!r} has shape {stored_shape} in the checkpoint and {target_shape} in "
            f"the target")
    table = re.search(r"(^|/)coeffs(/value)?$", path)  # ``/value``: an NNX variable's array
    if table and len(stored_shape) == 2 and stored_shape[-1] == 3:
        return (f"{what}: a Newton–Schulz coefficient table, so the checkpoint was saved with "
                f"{stored_shape[0]} steps and the optimizer constructed now runs "
                f"{target_shape[0]}. Restore into the state of the optimizer that wrote it "
                f"(ns=NewtonSchulz(steps={stored_shape[0]}), same schedule), then call "
                f"optorth.reconcile_coefficients(restored, tx.init(params), policy='override')")
    return (f"{what}: the checkpoint was saved for other parameter shapes (another model "
            f"size) or another optimizer configuration. Build the target with the model and "
            f"optimizer that wrote it")


def _metadata_failure(error) -> str:
    return (f"its metadata cannot be read ({type(error).__name__}: {error}); the metadata "
            f"files (_METADATA, _CHECKPOINT_METADATA) are {_TRUNCATED}")


def _read_failure(error) -> str | None:
    """What a TensorStore or metadata read error says about the checkpoint's files, or
    ``None``."""
    if isinstance(error, json.JSONDecodeError):
        return _metadata_failure(error)
    text = str(error)
    if not any(code in text for code in _READ_FAILURES):
        return None
    text = text.split(" [tensorstore_spec")[0]
    leaf = re.search(r'(?:reading|Metadata at) "([^"]+)/\.zarray"', text)
    where = f"the data of leaf {leaf.group(1).replace('.', '/')!r}" if leaf else "its data"
    return f"{where} cannot be read ({text}): the checkpoint's files are {_TRUNCATED}"


def _read_metadata(ckptr, directory):
    """The checkpoint's stored tree (paths, shapes, dtypes), ``None`` when its array store
    cannot describe it; a readable error when its metadata files are damaged."""
    try:
        item = ckptr.metadata(directory).item_metadata
        return None if item is None else item.tree
    except (ValueError, KeyError, TypeError) as error:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"Checkpoint {str(directory)!r}: {_metadata_failure(error)}.") from error


def restore(directory, target):
    """Restores an Orbax checkpoint into the structure of ``target``, with failures explained.

    ``ocp.StandardCheckpointer().restore(directory, abstract_target)`` with the errors a user
    of an optimizer meets translated into a ``ValueError`` naming the checkpoint, the leaf and
    the fix: truncated or corrupted files (raw TensorStore text otherwise), a state saved by
    another optimizer configuration (another Newton–Schulz step count, chain or parameter
    tree), and a missing target (Orbax then returns dicts and lists where the optimizer's
    state has NamedTuples, which ``update`` refuses). Every other error passes through
    unchanged; a successful restore is exactly Orbax's.

    Args:
      directory: the checkpoint's directory (for an ``ocp.CheckpointManager``,
        ``manager.directory / str(step) / item_name``, the item name being ``"default"``
        for a single unnamed item).
      target: the tree to restore into, e.g. ``{"params": params, "opt": tx.init(params)}``;
        concrete arrays or ``jax.ShapeDtypeStruct`` leaves (``jax.eval_shape(tx.init,
        params)``), whose shardings the restored arrays take.

    Returns:
      The restored tree, with ``target``'s structure (NamedTuples included).

    Raises:
      ValueError: for a missing target, unreadable metadata or array files, or a target
        whose leaves or shapes differ from the checkpoint's.

    Example::

        import orbax.checkpoint as ocp
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(path, {"params": params, "opt": opt_state})
        restored = optorth.checkpoint.restore(path, {"params": params,
                                                     "opt": tx.init(params)})
    """
    import orbax.checkpoint as ocp  # optional: only a user of Orbax calls this

    if target is None:
        raise ValueError(
            f"Checkpoint {str(directory)!r}: restore needs a target. Without one Orbax returns "
            f"dicts and lists where the optimizer's state has NamedTuples, and tx.update "
            f"refuses that state. Pass target={{'params': params, 'opt': tx.init(params)}} "
            f"(or jax.eval_shape of it), the structure the checkpoint was saved from.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    with ocp.StandardCheckpointer() as ckptr:
        stored = _read_metadata(ckptr, directory)
        difference = _shape_difference(abstract, stored)
        if difference is not None:
            raise ValueError(f"Checkpoint {str(directory)!r} does not fit the target: "
                             f"{difference}.")
        try:
            return ckptr.restore(directory, abstract)
        except ValueError as error:
            failure = _read_failure(error) or _structure_difference(abstract, stored)
            if failure is None:
                raise
            raise ValueError(f"Checkpoint {str(directory)!r}: {failure}.") from error
