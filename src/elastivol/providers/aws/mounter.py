"""Mounting EFS: the efs-utils mount helper and an NFS 4.1 fallback.

``mount -t efs -o tls,accesspoint=fsap-…`` (amazon-efs-utils) is the way to mount through an access
point: access points need TLS, which plain NFS cannot give. Without efs-utils, mounts that do not
use an access point fall back to NFS 4.1 with the options EFS recommends.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from elastivol.errors import AlreadyExists, FailedPrecondition, Unavailable
from elastivol.node import mount as hostmount
from elastivol.providers.file import AccessPoint

log = logging.getLogger("elastivol.aws.mount")

NFS_OPTIONS = ("nfsvers=4.1", "rsize=1048576", "wsize=1048576", "hard", "timeo=600", "retrans=2", "noresvport")
MOUNT_TIMEOUT = 120.0
EFS_HELPERS = ("/sbin/mount.efs", "/usr/sbin/mount.efs", "/usr/bin/mount.efs")


@dataclass(frozen=True)
class MountRequest:
    fs_id: str
    path: str  # absolute, inside the access point's root when there is one ("/" for all of it)
    access_point: AccessPoint | None
    target: str
    readonly: bool = False
    options: tuple[str, ...] = ()


class Mounter(Protocol):
    def mount(self, req: MountRequest) -> None: ...
    def unmount(self, target: str) -> None: ...


NFS_TYPES = ("nfs4", "nfs")
# Hosts a mount of some EFS file system can show as its source: the TLS tunnel of efs-utils
# (stunnel on the loopback), the file system's DNS name, or a mount target's IP address.
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def mount_command(req: MountRequest, region: str, efs_utils: bool) -> list[str]:
    # The safe defaults first: the request's own options (admitted by the driver) come after and win.
    extra = [*hostmount.SAFE_DEFAULTS, *(["ro"] if req.readonly else []), *req.options]
    if efs_utils:
        ap = [f"accesspoint={req.access_point.id}"] if req.access_point is not None else []
        return ["mount", "-t", "efs", "-o", ",".join(["tls", *ap, *extra]), f"{req.fs_id}:{req.path}", req.target]
    host = f"{req.fs_id}.efs.{region}.amazonaws.com" if region else req.fs_id
    return ["mount", "-t", "nfs4", "-o", ",".join([*NFS_OPTIONS, *extra]), f"{host}:{req.path}", req.target]


def _run(argv: Sequence[str], what: str) -> None:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=MOUNT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{what} did not finish within {MOUNT_TIMEOUT:.0f}s: is the EFS mount target reachable "
                          "from this node (security group allowing NFS, port 2049)?") from None
    if done.returncode != 0:
        raise FailedPrecondition(f"{what} failed ({' '.join(argv)}): {(done.stderr or done.stdout).strip()[:500]}")


def mount_conflict(req: MountRequest, what: str) -> AlreadyExists:
    asked = f"{req.fs_id}:{req.path}" + (f" through {req.access_point.id}" if req.access_point else "")
    return AlreadyExists(
        f"{req.target} already has {what} mounted on it, not {asked}"
        f"{' read-only' if req.readonly else ''}: unpublish what is there first (NodeUnpublishVolume)"
    )


def check_nfs_mount(req: MountRequest, found: hostmount.MountInfo) -> None:
    """Idempotency of a publish: what is mounted at the target must be what is asked for.

    A retry of a publish that finished is fine; anything else at the target (another file system,
    another path, a mount that is not NFS, the other of ro/rw) is a conflict, never a success.
    """
    host, _, path = found.source.rpartition(":")
    ours = host == req.fs_id or host.startswith(req.fs_id + ".") or host in _LOOPBACK or _is_address(host)
    if found.fstype not in NFS_TYPES or not ours or os.path.normpath(path or "/") != os.path.normpath(req.path):
        raise mount_conflict(req, f"{found.source} ({found.fstype})")
    if found.read_only != req.readonly:
        raise mount_conflict(req, f"{found.source} {'read-only' if found.read_only else 'read-write'}")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class HostMounter:
    def __init__(self, region: str) -> None:
        self.region = region

    @staticmethod
    def efs_utils() -> bool:
        return any(os.path.exists(p) for p in EFS_HELPERS)

    def mount(self, req: MountRequest) -> None:
        os.makedirs(req.target, exist_ok=True)
        found = hostmount.find_by_target(req.target)
        if found is not None:
            check_nfs_mount(req, found)
            return  # already published as asked: idempotent
        efs_utils = self.efs_utils()
        if req.access_point is not None and not efs_utils:
            raise FailedPrecondition(
                f"mounting {req.fs_id} through access point {req.access_point.id} needs amazon-efs-utils "
                "(mount -t efs with tls): install it in the node image; plain NFS cannot use access points"
            )
        _run(mount_command(req, self.region, efs_utils), f"mounting {req.fs_id}:{req.path} at {req.target}")

    def unmount(self, target: str) -> None:
        if os.path.ismount(target):
            _run(["umount", target], f"unmounting {target}")


def remove_tree(path: Path) -> None:
    """Delete a directory tree without following symlinks out of it."""
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
