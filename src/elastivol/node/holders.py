"""Who holds a block device: its mounts in every mount namespace this process can see.

A node plugin runs in a container; the device it must not pull away may be mounted in the
host's namespace, a pod's, or a dead plugin's that someone still keeps alive. Mounts are
matched by the device's "major:minor" (a filesystem on it) or by a bind of its device node
(a raw block volume: devtmpfs root ``/loopN``), never by the source text mountinfo prints.
Only for error messages and repair decisions: reading every namespace costs a scan of /proc.
"""

from __future__ import annotations

import os
from pathlib import Path

from elastivol.node import mount

_PROC = "/proc"


def _namespaces() -> dict[str, int]:
    """Mount namespace → one pid in it (our own first)."""
    found: dict[str, int] = {}
    try:
        found[os.readlink(f"{_PROC}/self/ns/mnt")] = os.getpid()
    except OSError:
        pass
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        try:
            ns = os.readlink(f"{_PROC}/{name}/ns/mnt")
        except OSError:  # gone, or not ours to look at
            continue
        found.setdefault(ns, int(name))
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"{_PROC}/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _dm_holders(devnode: str) -> list[str]:
    try:
        return sorted(os.listdir(f"/sys/block/{devnode}/holders"))
    except OSError:
        return []


def describe(major_minor: str, devnode: str) -> list[str]:
    """What holds the device ``devnode`` (e.g. "loop3", numbered ``major_minor``), as phrases."""
    out: list[str] = []
    own = os.getpid()
    for ns, pid in _namespaces().items():
        try:
            with open(f"{_PROC}/{pid}/mountinfo", "rb") as fh:
                table = mount.parse_mountinfo(fh.read())
        except OSError:
            continue
        where = "" if pid == own else f" in the mount namespace of pid {pid} ({_comm(pid)}, {ns})"
        for m in table:
            if m.major_minor == major_minor:
                out.append(f"mounted at {m.target}{where}")
            elif m.fstype == "devtmpfs" and m.root == f"/{devnode}":
                out.append(f"its device node is bound at {m.target}{where}")
    out += [f"held by {name}" for name in _dm_holders(devnode)]
    return out
