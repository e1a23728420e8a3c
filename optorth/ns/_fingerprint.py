"""Fingerprints of Newton–Schulz coefficient tables and the state layout version.

The orthogonalize block stores the fingerprint of the table it was constructed with, so that
`optorth.checkpoint.reconcile_coefficients` can tell a learned table from a different
schedule after a restore.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np

#: Layout version of `optorth.OrthogonalizeState` (``coeffs``, ``fingerprint``,
#: ``version``, and ``count``, which is ``None`` unless the table is learned online). A state
#: saved by a newer layout is refused by `reconcile_coefficients`.
STATE_VERSION = 1
UNKNOWN_FINGERPRINT = 0


def coefficient_fingerprint(coeffs) -> jax.Array:
    """A uint32 CRC32 of a coefficient table (``(T, 3)``) or a per-shape dict of tables.

    Hashes the float32 little-endian bytes and shapes (and, for a dict, its sorted keys), so
    equal fingerprints mean bit-identical initial tables. Traced tables have no concrete bytes:
    they get `UNKNOWN_FINGERPRINT` (0).

    Example:
      >>> import optorth
      >>> ns = optorth.NewtonSchulz("jordan")
      >>> bool(optorth.ns.coefficient_fingerprint(ns.table()) != 0)
      True
    """
    tables = coeffs if isinstance(coeffs, dict) else {"": coeffs}
    if any(isinstance(t, jax.core.Tracer) for t in tables.values()):
        return jnp.asarray(UNKNOWN_FINGERPRINT, jnp.uint32)
    crc = 0
    for key in sorted(tables):
        table = np.ascontiguousarray(np.asarray(tables[key], dtype="<f4"))
        crc = zlib.crc32(f"{key}:{table.shape}".encode(), crc)
        crc = zlib.crc32(table.tobytes(), crc)
    return jnp.asarray(crc or 1, jnp.uint32)  # 0 is reserved for "unknown"
