"""The one place that holds per-object in-flight locks.

A CO retries every call, and sidecars run several workers, so two calls on one volume can
arrive together. The second one gets ABORTED at once instead of racing the first. Within a
process the registry is a set; between processes that share a pool (a controller and a node
plugin on one host) it is a non-blocking ``flock`` on a file in the pool. A process that
dies releases its flocks with it, so no stale marker can outlive a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from elastivol.errors import Aborted


def lock_key(value: str) -> str:
    """A file-name-safe key for any string (names come from users)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class InFlight:
    def __init__(self, lock_dir: Path | None = None) -> None:
        self._held: set[str] = set()
        self._mutex = threading.Lock()
        self._lock_dir = lock_dir
        if lock_dir is not None:
            lock_dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def hold(self, *objects: str) -> Iterator[None]:
        """Hold every object in ``objects`` (ids or names) or raise Aborted naming the busy one."""
        keys = sorted(set(o for o in objects if o))
        with self._mutex:
            for key in keys:
                if key in self._held:
                    raise Aborted(f"an operation on {_show(key)} is already in progress; retry later")
            self._held.update(keys)
        fds: list[int] = []
        try:
            if self._lock_dir is not None:
                for key in keys:
                    fds.append(_flock(self._lock_dir, key))
            yield
        finally:
            for fd in fds:
                os.close(fd)
            with self._mutex:
                self._held.difference_update(keys)

    def busy(self) -> list[str]:
        with self._mutex:
            return sorted(self._held)


def _flock(lock_dir: Path, key: str) -> int:
    fd = os.open(lock_dir / f"{lock_key(key)}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Aborted(
            f"an operation on {_show(key)} is already in progress in another elastivol process "
            "sharing this pool; retry later"
        ) from None
    return fd


def _show(key: str) -> str:
    return key if len(key) <= 80 else key[:77] + "..."
