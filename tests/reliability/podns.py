"""Run a command as a node-plugin container would: in its own mount namespace, the pool at another path.

Usage::

    python -m tests.reliability.podns SOURCE TARGET -- COMMAND...

enters a new mount namespace (unshare(2) with CLONE_NEWNS: the same as ``unshare --mount
--propagation unchanged``), binds the directory SOURCE at TARGET there only (TARGET's parent
must be a private mount, so nothing propagates back), then execs COMMAND in the same process:
a SIGKILL of the command ends the namespace, as the end of a container does. Mounts keep the
propagation the host gave them, so a shared kubelet directory carries staging mounts back to
the host (the chart's Bidirectional /var/lib/kubelet).

A container does not hold the host's other mounts; a plain unshare copies all of them, and a
copy keeps its filesystem busy, so other processes on this shared machine could no longer
detach the loop devices under their own mounts. So, at once, every mount that is neither the
system's (/, /proc, /sys, /dev) nor on the way to or inside the common directory of SOURCE and
TARGET is made private in this namespace (so its removal does not propagate to its peers) and
detached.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys

from elastivol.node import _sys, mount

CLONE_NEWNS = 0x00020000
MS_PRIVATE = 1 << 18
_SYSTEM = ("/proc", "/sys", "/dev")
_OCTAL = re.compile(rb"\\([0-7]{3})")


def _targets() -> list[str]:
    """Mount targets of this namespace in kernel order (parents first); tolerant of odd names."""
    with open("/proc/self/mountinfo", "rb") as fh:
        data = fh.read()
    out = []
    for line in data.split(b"\n"):
        fields = line.split(b" ")
        if len(fields) > 4:
            out.append(os.fsdecode(_OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), fields[4])))
    return out


def _related(path: str, keep: str) -> bool:
    inside = path == keep or path.startswith(keep + "/")
    above = keep.startswith(path.rstrip("/") + "/")
    system = any(path == s or path.startswith(s + "/") for s in _SYSTEM)
    return path == "/" or inside or above or system


def prune(keep: str) -> None:
    for target in reversed(_targets()):
        if _related(target, keep):
            continue
        try:
            _sys.mount(None, target, None, MS_PRIVATE, None)
            _sys.umount2(target, _sys.MNT_DETACH)
        except OSError:
            pass  # already gone with its parent, or not a mount any more


def main(argv: list[str]) -> None:
    sep = argv.index("--")
    source, target = (os.path.realpath(p) for p in argv[:sep])
    command = argv[sep + 1:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "unshare(CLONE_NEWNS)")
    prune(os.path.commonpath([source, target]))
    os.makedirs(target, exist_ok=True)
    mount.bind(source, target)
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
