"""Cell claims: several sweeps (processes, machines on a shared filesystem) on one results folder
compute each cell once.

Before a unit runs, its cells are claimed: `<out>/claims/<key>.claim` created with O_CREAT|O_EXCL
(atomic, also on NFS v3+), holding the holder's host, pid, start time and a token. The heartbeat is
the file's modification time, refreshed by a daemon thread every timeout/4 s while the claim is held
(os.utime with no time takes the file server's clock, so machines with skewed clocks agree). A
claim is released once its cell's record (ok or error) is written, and on exit.

A claim whose holder is gone is taken over: a dead pid on this host, or (any host) a heartbeat older
than `timeout_s`. Taking over goes through `<key>.takeover`, itself created exclusively, so two
sweeps that find the same stale claim cannot both win it; a takeover lock left by a kill in that
short window is removed once older than `timeout_s`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

HEARTBEAT_TIMEOUT_S = 120.0  # a claim untouched this long is its holder's death, on any host


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class Claims:
    def __init__(self, root: str | Path, timeout_s: float = HEARTBEAT_TIMEOUT_S):
        self.folder = Path(root) / "claims"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.timeout_s = float(timeout_s)
        self.host = socket.gethostname()
        self.token = uuid.uuid4().hex
        self.taken_over: list[str] = []  # notes: claims of gone holders that this process took
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.claim"

    # ---- claiming --------------------------------------------------------------------------

    def _create(self, key: str) -> bool:
        body = {"host": self.host, "pid": os.getpid(), "started": time.time(), "token": self.token}
        try:
            fd = os.open(self._path(key), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(body, f)
        with self._lock:
            self._held.add(key)
        self._start_heartbeat()
        return True

    def holder(self, key: str) -> dict | None:
        """The claim's content plus its heartbeat age in seconds, or None when unclaimed."""
        path = self._path(key)
        try:
            age = time.time() - path.stat().st_mtime
            body = json.loads(path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # half written (its creator is mid-write) or damaged
            body = {}
        return body | {"age_s": age} if isinstance(body, dict) else {"age_s": age}

    def stale_reason(self, holder: dict) -> str | None:
        """Why a claim's holder counts as gone, or None while it may still be working."""
        if holder["age_s"] > self.timeout_s:
            return f"heartbeat {holder['age_s']:.0f}s old (> {self.timeout_s:.0f}s)"
        if holder.get("host") == self.host and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]):
            return f"pid {holder['pid']} on {self.host} is gone"
        return None

    def claim(self, key: str) -> bool:
        """True when this process now holds `key`; False when a live holder has it."""
        if key in self._held:
            return True
        if self._create(key):
            return True
        holder = self.holder(key)
        if holder is None:  # released between our try and our look
            return self._create(key)
        reason = self.stale_reason(holder)
        if reason is None:
            return False
        lock = self.folder / f"{key}.takeover"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > self.timeout_s:
                    lock.unlink(missing_ok=True)  # a taker killed mid-takeover; the next try can win
            except OSError:
                pass
            return False
        os.close(fd)
        try:
            again = self.holder(key)  # another taker may have finished before we got the lock
            if again is not None and self.stale_reason(again) is None:
                return False
            self._path(key).unlink(missing_ok=True)
            won = self._create(key)
            if won:
                self.taken_over.append(f"{key[:10]}: took over a claim of {holder.get('host')}:{holder.get('pid')} ({reason})")
            return won
        finally:
            lock.unlink(missing_ok=True)

    def release(self, key: str) -> None:
        """Drop our claim on `key` (only ours: a claim taken over from us is left alone)."""
        with self._lock:
            if key not in self._held:
                return
            self._held.discard(key)
        holder = self.holder(key)
        if holder is not None and holder.get("token") == self.token:
            self._path(key).unlink(missing_ok=True)

    def release_all(self) -> None:
        for key in list(self._held):
            self.release(key)
        self._stop.set()

    # ---- heartbeat -------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="claims-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.timeout_s / 4):
            with self._lock:
                keys = list(self._held)
            for key in keys:
                try:
                    os.utime(self._path(key))
                except OSError:
                    pass  # gone (taken over after a long stall): its record decides, not the claim
