"""The record store: one JSON line per finished run, keyed by its `RunSpec`'s hash.

Every experiment appends to its own file in this one format
(``{"key", "spec", "result"}``); a rerun skips the specs already recorded, so a long
experiment can be interrupted and resumed at any time. A later line of a key replaces the
earlier one (``--fresh`` reruns).
"""

from __future__ import annotations

import json
import pathlib

from .spec import RunSpec


class Store:
    """The records of one JSONL file.

    Example:
      >>> import tempfile
      >>> store = Store(pathlib.Path(tempfile.mkdtemp()) / "runs.jsonl")
      >>> spec = RunSpec("sweep", "cnn", {}, "muon", 0.02)
      >>> store.add(spec, {"final_val_loss": 1.5})["result"]
      {'final_val_loss': 1.5}
      >>> Store(store.path).get(spec)["final_val_loss"]
      1.5
    """

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)
        self.records: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.records[record["key"]] = record

    def get(self, spec: RunSpec) -> dict | None:
        """The result recorded for ``spec`` (``None`` if it has not run)."""
        record = self.records.get(spec.key)
        return None if record is None else record["result"]

    def add(self, spec: RunSpec, result: dict) -> dict:
        """Append the finished run ``spec`` with its ``result``; the new record."""
        record = {"key": spec.key, "spec": spec.to_dict(), "result": result}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        self.records[spec.key] = record
        return record

    def select(self, **fields) -> list[tuple[RunSpec, dict]]:
        """``(spec, result)`` of every record whose spec has these field values."""
        out = []
        for record in self.records.values():
            spec = RunSpec.from_dict(record["spec"])
            want = spec.replace(**fields)
            if all(getattr(spec, k) == getattr(want, k) for k in fields):
                out.append((spec, record["result"]))
        return out
