"""Used bytes of a directory tree without quotas: a bounded walk, cached per path.

NodeGetVolumeStats must answer within a second, but summing a large tree can take minutes. So
a call walks for at most ``budget`` seconds; if the walk finishes, the exact number is cached for
``ttl`` seconds. If it does not, the call returns what it counted so far (a lower bound, marked
inexact) and one background thread per path keeps walking, so a later call gets the exact number
from the cache. The walk counts allocated blocks (what ``du`` shows), never follows links and
stays on one device (a mount below the directory is another volume).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class WalkResult:
    used_bytes: int
    inodes: int
    exact: bool
    taken_at: float


class _Walk:
    """One walk of one tree, resumable: a stack of directories still to read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stack = [path]
        self.used = 0
        self.inodes = 0
        self.device: int | None = None
        self.done = False

    def step(self, deadline: float) -> bool:
        """Walk until done or until ``deadline``; True when the whole tree was counted."""
        if self.device is None:
            try:
                st = os.lstat(self.path)
            except OSError:
                self.done = True
                return True
            self.device = st.st_dev
            self.used += st.st_blocks * 512
            self.inodes += 1
        while self.stack:
            if time.monotonic() >= deadline:
                return False
            directory = self.stack.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue  # removed meanwhile
                        if st.st_dev != self.device:
                            continue
                        self.used += st.st_blocks * 512
                        self.inodes += 1
                        if stat.S_ISDIR(st.st_mode):
                            self.stack.append(entry.path)
            except OSError:
                continue  # unreadable or removed directory: count what can be counted
        self.done = True
        return True


class UsageWalker:
    def __init__(self, *, budget: float = 0.7, ttl: float = 30.0, background_limit: float = 300.0) -> None:
        self.budget = budget
        self.ttl = ttl
        self.background_limit = background_limit
        self._cache: dict[str, WalkResult] = {}
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def usage(self, path: str) -> WalkResult:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached.exact and now - cached.taken_at < self.ttl:
                return cached
            running = path in self._running
        if running and cached is not None:
            return cached  # a background walk is finishing the exact number
        walk = _Walk(path)
        finished = walk.step(now + self.budget)
        result = WalkResult(walk.used, walk.inodes, finished, time.monotonic())
        with self._lock:
            self._cache[path] = result
            if not finished and path not in self._running:
                self._running.add(path)
                threading.Thread(target=self._finish, args=(walk,), name="elastivol-du", daemon=True).start()
        return result

    def _finish(self, walk: _Walk) -> None:
        try:
            finished = walk.step(time.monotonic() + self.background_limit)
            with self._lock:
                self._cache[walk.path] = WalkResult(walk.used, walk.inodes, finished, time.monotonic())
        finally:
            with self._lock:
                self._running.discard(walk.path)

    def forget(self, path: str) -> None:
        with self._lock:
            self._cache.pop(path, None)
