"""Schema-versioned metadata records, one JSON file each, written atomically.

This is the only module that touches pool metadata files. A record is
``{"schema": N, "kind": "...", "data": {...}}``. Writes go to a temporary file that is
fsynced and renamed over the final name, and then the directory is fsynced, so a crash
leaves either the old record or the new one, never a torn one.

Reads are served from a cache that is refreshed whenever the directory changes (a rename
changes its mtime), so several processes sharing one pool see each other's writes.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elastivol.errors import Internal

SCHEMA_VERSION = 1

Record = dict[str, Any]


class MetadataError(Internal):
    """A record that cannot be read: bad JSON, wrong schema or kind."""


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, payload: Any) -> None:
    data = json.dumps(payload, indent=1, sort_keys=True).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


class RecordStore:
    """All records of one kind (volumes, snapshots, nodes...) in one directory."""

    def __init__(self, directory: Path, kind: str, id_check: Callable[[str], bool]) -> None:
        self.directory = directory
        self.kind = kind
        self._id_check = id_check
        self._lock = threading.RLock()
        self._cache: dict[str, tuple[tuple[int, int], Record]] = {}
        self._dir_mtime = -1
        self.problems: list[Problem] = []
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, record_id: str) -> Path:
        if not self._id_check(record_id):
            # Callers validate ids first; reaching here is a bug, never a path to follow.
            raise MetadataError(f"refusing to use malformed {self.kind} id {record_id!r} as a file name")
        return self.directory / f"{record_id}.json"

    def _load(self, path: Path) -> Record:
        try:
            payload = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise MetadataError(f"{self.kind} record {path} is unreadable: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("kind") != self.kind:
            raise MetadataError(f"{path} is not a {self.kind} record")
        schema = payload.get("schema")
        if not isinstance(schema, int) or schema > SCHEMA_VERSION or schema < 1:
            raise MetadataError(
                f"{path} has schema {schema!r}; this elastivol reads schema 1..{SCHEMA_VERSION}: "
                "upgrade elastivol or restore the record from a backup"
            )
        data = payload.get("data")
        if not isinstance(data, dict):
            raise MetadataError(f"{path} has no data object")
        return data

    def _refresh(self, *, force: bool = False) -> None:
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except FileNotFoundError:
            self.directory.mkdir(parents=True, exist_ok=True)
            mtime = os.stat(self.directory).st_mtime_ns
        if mtime == self._dir_mtime and not force:
            return
        seen: dict[str, tuple[tuple[int, int], Record]] = {}
        problems: list[Problem] = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if not entry.name.endswith(".json") or entry.name.startswith("."):
                    continue
                record_id = entry.name[: -len(".json")]
                if not self._id_check(record_id):
                    problems.append(Problem(entry.path, f"file name is not a valid {self.kind} id"))
                    continue
                st = entry.stat()
                # Every write is a rename of a new file, so the inode tells writes apart even
                # when two land in the same timestamp tick.
                stamp = (st.st_ino, st.st_mtime_ns)
                cached = self._cache.get(record_id)
                if cached is not None and cached[0] == stamp:
                    seen[record_id] = cached
                    continue
                try:
                    seen[record_id] = (stamp, self._load(Path(entry.path)))
                except MetadataError as exc:
                    problems.append(Problem(entry.path, exc.message))
        self._cache = seen
        self.problems = problems
        self._dir_mtime = mtime

    def get(self, record_id: str) -> Record | None:
        path = self._path(record_id)
        with self._lock:
            self._refresh()
            cached = self._cache.get(record_id)
            if cached is not None:
                return dict(cached[1])
        # Not in the cache: it may have been written in the same mtime tick by another process.
        if path.exists():
            return self._load(path)
        return None

    def put(self, record_id: str, data: Record) -> None:
        path = self._path(record_id)
        with self._lock:
            atomic_write_json(path, {"schema": SCHEMA_VERSION, "kind": self.kind, "data": data})
            st = os.stat(path)
            self._cache[record_id] = ((st.st_ino, st.st_mtime_ns), dict(data))

    def delete(self, record_id: str) -> bool:
        path = self._path(record_id)
        with self._lock:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            fsync_dir(self.directory)
            self._cache.pop(record_id, None)
            return True

    def all(self, *, fresh: bool = False) -> list[Record]:
        """Every record; ``fresh`` looks at each file even when the directory's mtime says
        nothing changed (another process may have written within the same timestamp tick)."""
        with self._lock:
            self._refresh(force=fresh)
            return [dict(rec) for _, rec in self._cache.values()]

    def read(self, record_id: str) -> Record | None:
        """One record as it is on disk now, bypassing the cache (for read-modify-write under a lock)."""
        path = self._path(record_id)
        try:
            return self._load(path)
        except MetadataError:
            if not path.exists():
                return None
            raise

    def ids(self) -> list[str]:
        with self._lock:
            self._refresh()
            return sorted(self._cache)

    def find(self, key: str, value: Any) -> Record | None:
        with self._lock:
            self._refresh()
            for _, rec in self._cache.values():
                if rec.get(key) == value:
                    return dict(rec)
        return None

    def __iter__(self) -> Iterator[Record]:
        return iter(self.all())
