"""btrfs subvolumes and quota groups for access points.

On a btrfs file system every new access point directory is a subvolume. That costs nothing and
buys three things: an O(1) read-only snapshot (``btrfs subvolume snapshot -r``), O(1) usage
(the subvolume's quota group counts its bytes, readable from sysfs), and, with
``enforceCapacity``, a hard limit (``btrfs qgroup limit``): a write past it fails with EDQUOT.

Directories are passed to the btrfs tool as ``/proc/<pid>/fd/N`` of a descriptor opened without
following links (see :mod:`file_tree`), never as a path a pod could redirect.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from elastivol.errors import Internal
from elastivol.node.run import run
from elastivol.providers.local.file.tree import fd_path

BTRFS_SUPER_MAGIC = 0x9123683E
SUBVOLUME_INO = 256  # BTRFS_FIRST_FREE_OBJECTID: the inode of every subvolume's top directory
# _IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args) (4096 bytes) and
# _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args) (1024 bytes).
_IOC_INO_LOOKUP = 0xD0009412
_IOC_FS_INFO = 0x8400941F
_SYSFS = Path("/sys/fs/btrfs")
_TIMEOUT = 60


@dataclass(frozen=True)
class QuotaUsage:
    referenced: int  # bytes the subvolume references (its data, shared or not)
    limit: int | None  # max_referenced, None when no limit is set


def _btrfs(*args: str, what: str) -> str:
    result = run(["btrfs", *args], timeout=_TIMEOUT, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip().splitlines()
        raise Internal(f"{what} failed: {detail[-1] if detail else f'btrfs exited with {result.returncode}'}")
    return str(result.stdout or "")


def is_subvolume(fd: int) -> bool:
    """Whether ``fd`` (a directory on btrfs) is the top of a subvolume."""
    return os.fstat(fd).st_ino == SUBVOLUME_INO


def create_subvolume(parent: int, name: str) -> None:
    _btrfs("subvolume", "create", f"{fd_path(parent)}/{name}", what=f"creating subvolume {name}")


def snapshot(source: int, parent: int, name: str, *, readonly: bool) -> None:
    args = ["subvolume", "snapshot", *(["-r"] if readonly else []), fd_path(source), f"{fd_path(parent)}/{name}"]
    _btrfs(*args, what=f"snapshotting into {name}")


def delete_subvolume(parent: int, name: str) -> None:
    """Delete a subvolume, read-only snapshots included (rmdir cannot empty those)."""
    _btrfs("subvolume", "delete", f"{fd_path(parent)}/{name}", what=f"deleting subvolume {name}")


def set_limit(fd: int, limit_bytes: int | None) -> None:
    """Limit the bytes the subvolume at ``fd`` may reference (``None``: no limit)."""
    value = "none" if limit_bytes is None else str(limit_bytes)
    _btrfs("qgroup", "limit", value, fd_path(fd), what="setting the quota limit")


def subvolume_id(fd: int) -> int:
    """The id of the subvolume that contains ``fd`` (INO_LOOKUP with tree id 0)."""
    buf = bytearray(struct.pack("=QQ", 0, SUBVOLUME_INO) + bytes(4096 - 16))
    fcntl.ioctl(fd, _IOC_INO_LOOKUP, buf)
    return int(struct.unpack_from("=Q", buf, 0)[0])


def filesystem_uuid(fd: int) -> str:
    buf = bytearray(1024)
    fcntl.ioctl(fd, _IOC_FS_INFO, buf)
    raw = bytes(buf[16:32])
    hexed = raw.hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def quota_usage(fd: int) -> QuotaUsage | None:
    """The quota group numbers of the subvolume at ``fd``, from sysfs: no subprocess, O(1).

    None when quotas are off or the kernel does not export them. The kernel updates the numbers
    at each transaction commit, so they trail writes by up to the commit interval (30 s).
    """
    try:
        folder = _SYSFS / filesystem_uuid(fd) / "qgroups" / f"0_{subvolume_id(fd)}"
        referenced = int((folder / "referenced").read_text())
        limit = int((folder / "max_referenced").read_text())
    except (OSError, ValueError):
        return None
    # The kernel prints the "no limit" value as 0 or as all ones, depending on its version.
    return QuotaUsage(referenced, limit if 0 < limit < 2**63 else None)


def quotas_enabled(fd: int) -> bool:
    try:
        return (_SYSFS / filesystem_uuid(fd) / "qgroups" / "enabled").read_text().strip() == "1"
    except OSError:
        return False
