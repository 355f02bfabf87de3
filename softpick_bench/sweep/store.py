"""Results store: one JSON record per finished cell, written atomically, checked when read.

`<out>/cells/<key>.json` exists only once the cell is complete (written to a `.tmp-*`
file, then renamed), so an interrupted sweep never leaves a half record and a re-run
recomputes nothing that is done. Failed cells go to `<key>.error.json`: they are kept
for the report and retried by the next run. A cell's per-item results (softpick_bench.eval.items)
go to `<key>.items.json.gz`, written before the record, so a record never points at missing items
(gzip's CRC and length check catch a damaged items file).

Every record carries `checksum`, the sha256 of its canonical JSON without that field, and is
strict JSON (no NaN or Infinity: a non-finite value is an error, turned into one before it gets
here; error records keep such values as the strings "NaN", "Infinity", "-Infinity"). A record
that does not parse, is not a mapping, has no or a wrong checksum, or names another key is
moved aside to `<name>.corrupt`, listed in `problems`, and counts as not done, so the next
sweep recomputes it. Temporary files older than STALE_TMP_S (what a kill between write and
rename leaves) are removed; younger ones may be another writer's and are only ignored.

Which records belong to a plan: plan.json (sweep.plan.plan_manifest) lists every cell with
its key, pair, kind and replicate; `for_plan` returns one record per listed cell, labelled
with that entry's pair (two pairs sharing a checkpoint share the record), and `foreign_keys`
the keys in the folder that the plan does not list (another config's cells).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path

from softpick_bench.errors import StoreError

STALE_TMP_S = 300
TMP_PREFIX = ".tmp-"
_LABEL_FIELDS = ("pair", "kind", "replicate", "checkpoint_given")  # taken from the plan entry


def _reject_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def _canonical(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "checksum"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def checksum(record: dict) -> str:
    return "sha256:" + hashlib.sha256(_canonical(record).encode()).hexdigest()


def nonfinite_to_strings(value):
    """A copy with every NaN / inf float replaced by its JSON-style name (for error records only)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: nonfinite_to_strings(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nonfinite_to_strings(v) for v in value]
    return value


class ResultStore:
    def __init__(self, out: str | Path):
        self.root = Path(out)
        self.cells = self.root / "cells"
        self.problems: list[str] = []  # records moved aside, files that could not be read or removed
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root}: the results folder is a file; give a folder (or a new name) with --out")
        try:
            self.cells.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.cells}: cannot create the results folder: {exc.strerror or exc}") from None
        self._clean_tmp()

    # ---- paths and reading -------------------------------------------------------------

    def _path(self, key: str, error: bool = False) -> Path:
        return self.cells / (f"{key}.error.json" if error else f"{key}.json")

    def _clean_tmp(self) -> None:
        now = time.time()
        for folder in (self.root, self.cells):
            for path in folder.glob(f"{TMP_PREFIX}*"):
                try:
                    if now - path.stat().st_mtime > STALE_TMP_S:
                        path.unlink()
                        self.problems.append(f"{path}: stale temporary file removed (an interrupted write)")
                except OSError:
                    pass  # read-only or already gone: it is ignored either way

    def _set_aside(self, path: Path, reason: str) -> None:
        target = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, target)
            self.problems.append(f"{path}: {reason}; moved to {target.name}, the cell will be recomputed")
        except OSError as exc:
            self.problems.append(f"{path}: {reason}; could not move it aside ({exc.strerror or exc}), ignored")

    def _load(self, path: Path, key: str | None = None) -> dict | None:
        """The verified record in `path`, or None (missing, or set aside with the reason noted)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self._set_aside(path, f"unreadable ({exc})")
            return None
        try:
            record = json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:  # JSONDecodeError is one: empty, truncated, NaN
            self._set_aside(path, f"not valid JSON ({exc})")
            return None
        if not isinstance(record, dict) or not record:
            self._set_aside(path, "empty or not a record")
            return None
        if "checksum" not in record:
            self._set_aside(path, "has no checksum")
            return None
        if record["checksum"] != checksum(record):
            self._set_aside(path, "checksum does not match its content (edited or damaged)")
            return None
        if key is not None and record.get("key") != key:
            self._set_aside(path, f"holds the record of key {str(record.get('key'))[:40]!r}")
            return None
        return record

    def _key_of(self, path: Path) -> str:
        return path.name.removesuffix(".json").removesuffix(".error")

    def is_done(self, key: str) -> bool:
        record = self._load(self._path(key), key)
        return record is not None and record.get("status") == "ok"

    def record(self, key: str, error: bool = False) -> dict | None:
        return self._load(self._path(key, error), key)

    def _record_paths(self, errors: bool) -> list[Path]:
        out = []
        for path in sorted(self.cells.glob("*.json")):
            if path.name.startswith("."):
                continue  # temporary files
            if path.name.endswith(".error.json") == errors:
                out.append(path)
        return out

    def records(self, errors: bool = False) -> list[dict]:
        """Every valid record in the folder (of any plan); invalid ones are set aside."""
        out = []
        for path in self._record_paths(errors):
            record = self._load(path, self._key_of(path))
            if record is not None:
                out.append(record)
        return out

    # ---- which records belong to a plan -------------------------------------------------

    def read_plan(self) -> dict | None:
        """plan.json as the last sweep wrote it, or None."""
        return self._load(self.root / "plan.json")

    def for_plan(self, plan: dict, errors: bool = False) -> list[dict]:
        """One record per cell listed in `plan`, labelled with that entry's pair, kind and replicate.

        A key listed under two pairs (shared checkpoints) yields two records. Cells without a
        record (not run yet, skipped) are left out. With errors=True: the failed cells'
        records, the ones whose cell has no ok record.
        """
        out, seen, cache = [], set(), {}
        for entry in plan.get("cells", []):
            ident = (entry["key"], *(entry.get(f) for f in _LABEL_FIELDS))
            if ident in seen:
                continue
            seen.add(ident)
            key = entry["key"]
            if key not in cache:
                ok = self.record(key)
                cache[key] = (ok, None if ok else self.record(key, error=True))
            record = cache[key][1 if errors else 0]
            if record is not None:
                out.append(record | {f: entry[f] for f in _LABEL_FIELDS if f in entry})
        return out

    def foreign_keys(self, plan: dict) -> list[str]:
        """Keys of records in the folder that `plan` does not list (cells of another config)."""
        listed = {entry["key"] for entry in plan.get("cells", [])}
        keys = {self._key_of(p) for p in self._record_paths(False) + self._record_paths(True)}
        return sorted(keys - listed)

    # ---- writing -------------------------------------------------------------------------

    def _write_bytes(self, path: Path, data: bytes, suffix: str) -> None:
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=suffix)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise StoreError(f"{path}: cannot write: {exc.strerror or exc}") from None
        except BaseException:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise

    def _write_atomic(self, path: Path, record: dict) -> None:
        try:
            body = json.loads(_canonical(record))  # strict: raises on NaN / inf
        except ValueError as exc:
            raise StoreError(
                f"{path}: record holds a non-finite number ({exc}); it must be an error record, never stored as is"
            ) from None
        body["checksum"] = checksum(body)
        self._write_bytes(path, json.dumps(body, indent=1, sort_keys=True, allow_nan=False).encode(), ".json")

    def write(self, key: str, record: dict) -> None:
        self._write_atomic(self._path(key), record)
        try:
            self._path(key, error=True).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"{self._path(key, error=True)}: cannot remove: {exc.strerror or exc}") from None

    def write_error(self, key: str, record: dict) -> None:
        self._write_atomic(self._path(key, error=True), nonfinite_to_strings(record))

    def write_items(self, key: str, items: dict) -> None:
        path = self.cells / f"{key}.items.json.gz"
        data = json.dumps(items, allow_nan=False, separators=(",", ":")).encode()
        self._write_bytes(path, gzip.compress(data, mtime=0), ".json.gz")

    def read_items(self, key: str) -> dict | None:
        """The cell's per-item payload, or None when the cell has none (analysis, older records)
        or its file is damaged (then set aside and noted in `problems`)."""
        path = self.cells / f"{key}.items.json.gz"
        if not path.is_file():
            return None
        try:
            return json.loads(gzip.decompress(path.read_bytes()), parse_constant=_reject_constant)
        except (OSError, EOFError, ValueError) as exc:  # BadGzipFile is an OSError
            self._set_aside(path, f"items file damaged ({exc})")
            return None

    def write_meta(self, name: str, payload: dict) -> None:
        """A run-level file (the plan) beside the cells; not rewritten when unchanged
        (so a finished sweep on a read-only folder still runs to its report)."""
        path = self.root / name
        current = self._load(path) if path.is_file() else None
        if current is not None and {k: v for k, v in current.items() if k != "checksum"} == json.loads(
            json.dumps(payload, default=str)
        ):
            return
        self._write_atomic(path, payload)
