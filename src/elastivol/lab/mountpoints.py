"""Mount points on the host that lab pods need (``/data``, ``/dev/xvda``), counted machine-wide.

A container binds its volume at its mountPath inside its own mount namespace, but the directory it
binds onto is the host's. When the lab creates one, removing it while a pod of *any* lab still
uses it would be a disaster: the kernel detaches every mount on a removed directory in every
namespace, so that pod would go on writing into the host's directory instead of its volume. So
every use is recorded here, under one lock for the whole machine, and a directory the lab created
is removed only when its last user releases it. The registry lives in /run: it ends with a reboot,
as the mounts do.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

REGISTRY = Path(os.environ.get("ELASTIVOL_LAB_MOUNTPOINTS", "/run/elastivol/lab-mountpoints"))


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    REGISTRY.mkdir(parents=True, exist_ok=True)
    fd = os.open(REGISTRY / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _entry(path: str) -> Path:
    return REGISTRY / hashlib.sha256(path.encode()).hexdigest()[:32]


def acquire(path: str, *, device: bool, owner: str) -> str:
    """Make sure ``path`` exists on the host for ``owner`` (a pod uid) and record the use."""
    with _locked():
        entry = _entry(path)
        entry.mkdir(exist_ok=True)
        info = entry / "info.json"
        target = Path(path)
        if not info.exists():
            created = None
            if not target.exists():
                top = target
                while not top.parent.exists():
                    top = top.parent
                created = str(top)
            info.write_text(json.dumps({"path": path, "created": created}))
        if not target.exists():
            if device:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
            else:
                target.mkdir(parents=True, exist_ok=True)
        (entry / f"user-{owner}").touch()
    return path


def release(owner: str) -> list[str]:
    """Drop every use by ``owner``; remove what the lab created once nobody uses it. Returns the
    paths removed."""
    removed: list[str] = []
    if not REGISTRY.is_dir():
        return removed
    with _locked():
        for entry in REGISTRY.iterdir():
            mine = entry / f"user-{owner}"
            if not entry.is_dir() or not mine.exists():
                continue
            mine.unlink()
            if any(p.name.startswith("user-") for p in entry.iterdir()):
                continue
            try:
                info = json.loads((entry / "info.json").read_text())
            except (OSError, ValueError):
                info = {}
            if info.get("created") and _remove_if_empty(Path(info["created"])):
                removed.append(info["created"])
            shutil.rmtree(entry, ignore_errors=True)
    return removed


def users(path: str) -> list[str]:
    entry = _entry(path)
    return sorted(p.name[len("user-"):] for p in entry.iterdir() if p.name.startswith("user-")) \
        if entry.is_dir() else []


def _remove_if_empty(path: Path) -> bool:
    """Remove a tree of empty directories (or an empty placeholder file); never anything with data."""
    try:
        if not path.is_dir():
            if path.exists() and path.stat().st_size == 0:
                path.unlink()
                return True
            return False
        for root, _dirs, files in os.walk(path, topdown=False):
            if files:
                return False
            os.rmdir(root)
        return True
    except OSError:
        return False
