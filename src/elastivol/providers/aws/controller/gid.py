"""Race-free GID allocation for EFS access points.

Two CreateVolume calls that list the file system's access points at the same time would both see
GID 50000 free and both take it. Here the listing (every page of it) happens inside a per-file-
system lock, and the chosen GID stays reserved in this process until CreateAccessPoint returns;
after that it is remembered for a while, because a listing right after a creation may not show
the new access point yet.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from elastivol.errors import Exhausted

RECENT_SECONDS = 600.0


class GidAllocator:
    def __init__(self, recent_seconds: float = RECENT_SECONDS) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._reserved: dict[str, set[int]] = {}
        self._recent: dict[str, dict[int, float]] = {}
        self.recent_seconds = recent_seconds

    def _lock(self, fs_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(fs_id, threading.Lock())

    @contextlib.contextmanager
    def allocate(self, fs_id: str, gid_range: tuple[int, int], used: Callable[[], set[int]]) -> Iterator[int]:
        """A GID in ``gid_range`` (inclusive) that no access point of ``fs_id`` uses, held while the block runs."""
        start, end = gid_range
        with self._lock(fs_id):
            taken = used()  # lists every page of access points, under the lock
            now = time.monotonic()
            with self._guard:
                recent = self._recent.setdefault(fs_id, {})
                for gid in [g for g, until in recent.items() if until < now]:
                    del recent[gid]
                reserved = self._reserved.setdefault(fs_id, set())
                taken |= reserved | set(recent)
                found = next((g for g in range(start, end + 1) if g not in taken), None)
                if found is None:
                    raise Exhausted(
                        f"no free GID in {start}-{end} on file system {fs_id}: each access point takes one and all "
                        f"{end - start + 1} are in use; widen gidRangeStart/gidRangeEnd in the StorageClass or "
                        "delete access points that are no longer used"
                    )
                gid = found
                reserved.add(gid)
        created = False
        try:
            yield gid
            created = True
        finally:
            with self._guard:
                self._reserved[fs_id].discard(gid)
                if created:
                    self._recent[fs_id][gid] = time.monotonic() + self.recent_seconds
