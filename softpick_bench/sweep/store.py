"""Results store: one JSON record per finished cell, written atomically.

`<out>/cells/<key>.json` exists only once the cell is complete (written to a temporary
file, then renamed), so an interrupted sweep never leaves a half record and a re-run
recomputes nothing that is done. Failed cells go to `<key>.error.json`: they are kept
for the report and retried by the next run. A cell's per-item results (softpick_bench.eval.items)
go to `<key>.items.json.gz`, written before the record, so a record never points at missing items.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path


class ResultStore:
    def __init__(self, out: str | Path):
        self.root = Path(out)
        self.cells = self.root / "cells"
        self.cells.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str, error: bool = False) -> Path:
        return self.cells / (f"{key}.error.json" if error else f"{key}.json")

    def is_done(self, key: str) -> bool:
        return self._path(key).is_file()

    def _write_atomic(self, path: Path, record: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=1, sort_keys=True, default=str)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write(self, key: str, record: dict) -> None:
        self._write_atomic(self._path(key), record)
        self._path(key, error=True).unlink(missing_ok=True)

    def write_error(self, key: str, record: dict) -> None:
        self._write_atomic(self._path(key, error=True), record)

    def write_items(self, key: str, items: dict) -> None:
        path = self.cells / f"{key}.items.json.gz"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json.gz")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(gzip.compress(json.dumps(items, allow_nan=False, separators=(",", ":")).encode(), mtime=0))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def read_items(self, key: str) -> dict | None:
        """The cell's per-item payload, or None when the cell has none (analysis, older records)."""
        path = self.cells / f"{key}.items.json.gz"
        if not path.is_file():
            return None
        return json.loads(gzip.decompress(path.read_bytes()))

    def records(self, errors: bool = False) -> list[dict]:
        pattern = "*.error.json" if errors else "*.json"
        out = []
        for path in sorted(self.cells.glob(pattern)):
            if not errors and path.name.endswith(".error.json"):
                continue
            out.append(json.loads(path.read_text()))
        return out

    def write_meta(self, name: str, payload: dict) -> None:
        """A run-level file (the plan) beside the cells."""
        self._write_atomic(self.root / name, payload)
