"""The lab's object store: Kubernetes-shaped objects, one JSON file each, under the lab directory.

Separate CLI invocations and the lab daemon share it, so every write happens under one file lock
and carries a resourceVersion: an update made from a stale copy is refused (``Conflict``) and the
writer reads again, as a controller does against the API server. Deletion honours finalizers: an
object with finalizers only gets a deletionTimestamp, and disappears when the last one is removed.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from elastivol.lab.kinds import KINDS, Kind
from elastivol.store import atomic_write_json

Obj = dict[str, Any]
MAX_EVENTS_PER_OBJECT = 40


class Conflict(Exception):
    """The object changed since it was read."""


class NotFoundError(Exception):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f'{kind} "{name}" not found')


class AlreadyExistsError(Exception):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f'{kind} "{name}" already exists')


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    def __init__(self, directory: Path) -> None:
        self.root = directory / "store"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.root / ".lock"

    # -- locking ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _next_rv(self) -> str:
        path = self.root / ".rv"
        try:
            value = int(path.read_text() or "0") + 1
        except (FileNotFoundError, ValueError):
            value = 1
        tmp = path.with_name(".rv.tmp")
        tmp.write_text(str(value))
        os.replace(tmp, path)
        return str(value)

    # -- paths -----------------------------------------------------------------------------------
    def _dir(self, kind: Kind, namespace: str | None) -> Path:
        if kind.namespaced:
            return self.root / kind.plural / (namespace or "default")
        return self.root / kind.plural

    def _path(self, kind: Kind, name: str, namespace: str | None) -> Path:
        return self._dir(kind, namespace) / f"{name}.json"

    # -- reads -----------------------------------------------------------------------------------
    def get(self, kind_name: str, name: str, namespace: str | None = None) -> Obj | None:
        kind = KINDS[kind_name]
        try:
            loaded: Obj = json.loads(self._path(kind, name, namespace).read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # a torn write cannot happen (rename), but never crash a reader on one
        return loaded

    def require(self, kind_name: str, name: str, namespace: str | None = None) -> Obj:
        obj = self.get(kind_name, name, namespace)
        if obj is None:
            raise NotFoundError(KINDS[kind_name].resource, name)
        return obj

    def list_of(self, kind_name: str, namespace: str | None = None) -> list[Obj]:
        """Objects of a kind; for namespaced kinds, of one namespace, or of all when None."""
        kind = KINDS[kind_name]
        folders: list[Path]
        base = self.root / kind.plural
        if kind.namespaced and namespace is None:
            folders = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        else:
            folders = [self._dir(kind, namespace)]
        out: list[Obj] = []
        for folder in folders:
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                if entry.suffix != ".json" or entry.name.startswith("."):
                    continue
                try:
                    out.append(json.loads(entry.read_bytes()))
                except (FileNotFoundError, ValueError):
                    continue
        return out

    # -- writes ----------------------------------------------------------------------------------
    def _write(self, kind: Kind, obj: Obj) -> None:
        meta = obj["metadata"]
        folder = self._dir(kind, meta.get("namespace"))
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / f"{meta['name']}.json", obj)

    def create(self, obj: Obj) -> Obj:
        kind = KINDS[obj["kind"]]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        with self.locked():
            if self._path(kind, meta["name"], meta.get("namespace")).exists():
                raise AlreadyExistsError(kind.resource, meta["name"])
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta["resourceVersion"] = self._next_rv()
            self._write(kind, obj)
        return obj

    def update(self, obj: Obj) -> Obj:
        """Write ``obj`` if nobody changed it since it was read; remove it when it is deleted and
        has no finalizers left."""
        kind = KINDS[obj["kind"]]
        meta = obj["metadata"]
        with self.locked():
            current = self.get(obj["kind"], meta["name"], meta.get("namespace"))
            if current is None:
                raise NotFoundError(kind.resource, meta["name"])
            if current["metadata"].get("resourceVersion") != meta.get("resourceVersion") or \
                    current["metadata"].get("uid") != meta.get("uid"):
                raise Conflict(f"{kind.resource} {meta['name']} changed since it was read")
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                self._path(kind, meta["name"], meta.get("namespace")).unlink(missing_ok=True)
                return obj
            meta["resourceVersion"] = self._next_rv()
            self._write(kind, obj)
        return obj

    def delete(self, kind_name: str, name: str, namespace: str | None = None) -> Obj | None:
        """Mark for deletion (finalizers) or remove. Returns the object, or None if it was gone."""
        kind = KINDS[kind_name]
        with self.locked():
            obj = self.get(kind_name, name, namespace)
            if obj is None:
                return None
            meta = obj["metadata"]
            # A scheduled pod is deleted gracefully: the kubelet stops it, then removes the object.
            graceful = kind.name == "Pod" and bool(obj.get("spec", {}).get("nodeName"))
            if meta.get("finalizers") or graceful:
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = now_rfc3339()
                    meta["resourceVersion"] = self._next_rv()
                    self._write(kind, obj)
                return obj
            self._path(kind, name, meta.get("namespace")).unlink(missing_ok=True)
            return obj

    def remove(self, kind_name: str, name: str, namespace: str | None = None) -> None:
        """Remove outright, finalizers or not (the lab's own clean-up)."""
        kind = KINDS[kind_name]
        with self.locked():
            self._path(kind, name, namespace).unlink(missing_ok=True)

    # -- events ----------------------------------------------------------------------------------
    def event(self, obj: Obj, type_: str, reason: str, message: str, component: str) -> None:
        """Record an event about ``obj``; a repeat of the same reason and message bumps its count."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        key = hashlib.sha256(f"{meta.get('uid')}|{reason}|{message}".encode()).hexdigest()[:10]
        name = f"{meta['name']}.{key}"
        kind = KINDS["Event"]
        stamp = now_rfc3339()
        with self.locked():
            existing = self.get("Event", name, namespace)
            if existing is not None:
                existing["count"] = int(existing.get("count", 1)) + 1
                existing["lastTimestamp"] = stamp
                existing["metadata"]["resourceVersion"] = self._next_rv()
                self._write(kind, existing)
                return
            event: Obj = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                             "creationTimestamp": stamp, "resourceVersion": self._next_rv()},
                "involvedObject": {"kind": obj["kind"], "name": meta["name"], "namespace": meta.get("namespace", ""),
                                   "uid": meta.get("uid", ""), "apiVersion": obj.get("apiVersion", "")},
                "type": type_,
                "reason": reason,
                "message": message,
                "count": 1,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "source": {"component": component},
            }
            self._write(kind, event)
        self._trim_events(namespace, meta.get("uid", ""))

    def events_for(self, obj: Obj) -> list[Obj]:
        uid = obj["metadata"].get("uid")
        namespace = obj["metadata"].get("namespace") or "default"
        found = [e for e in self.list_of("Event", namespace) if e["involvedObject"].get("uid") == uid]
        return sorted(found, key=lambda e: (e.get("lastTimestamp", ""), e["metadata"].get("resourceVersion", "")))

    def _trim_events(self, namespace: str, uid: str) -> None:
        mine = [e for e in self.list_of("Event", namespace) if e["involvedObject"].get("uid") == uid]
        if len(mine) <= MAX_EVENTS_PER_OBJECT:
            return
        mine.sort(key=lambda e: int(e["metadata"].get("resourceVersion", "0")))
        for old in mine[: len(mine) - MAX_EVENTS_PER_OBJECT]:
            self.remove("Event", old["metadata"]["name"], namespace)

    def drop_events_of(self, obj: Obj) -> None:
        namespace = obj["metadata"].get("namespace") or "default"
        for e in self.events_for(obj):
            self.remove("Event", e["metadata"]["name"], namespace)
