"""What the file driver asks of the place where shared file volumes live (local dirs or EFS)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from elastivol.domain import AccessPointSpec, Health, Snapshot
from elastivol.errors import AlreadyExists

# Why a publish target that exists must be a directory (both file node providers say it).
FILE_TARGET = "a file volume is published on one"


@dataclass(frozen=True)
class FileSystem:
    id: str  # fs- + 17 hex
    name: str
    root: str  # local: the root directory every node sees; aws: "" (mounted by DNS name)
    reflink: bool = False  # copy-on-write copies possible (snapshots)
    quotas: str = "none"  # "btrfs-qgroup" when per-directory capacity can be enforced
    created_at: float = 0.0


@dataclass(frozen=True)
class AccessPoint:
    id: str  # fsap- + 17 hex
    fs_id: str
    name: str
    directory: str
    uid: int
    gid: int
    perms: int
    capacity_bytes: int
    enforce_capacity: bool = False
    delete_root_dir: bool = False
    created_at: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def volume_id(self) -> str:
        return f"{self.fs_id}::{self.id}"


@dataclass(frozen=True)
class FileUsage:
    total_bytes: int
    used_bytes: int
    available_bytes: int
    inodes_total: int = 0
    inodes_used: int = 0
    inodes_available: int = 0
    exact: bool = True  # False when used bytes come from a bounded walk that did not finish


class FileProvider(Protocol):
    """Controller-side operations. Synchronous and idempotent."""

    def health(self) -> Health: ...
    def get_filesystem(self, fs_id: str) -> FileSystem: ...
    def list_filesystems(self) -> list[FileSystem]: ...
    def create_access_point(self, spec: AccessPointSpec) -> AccessPoint: ...
    def delete_access_point(self, fs_id: str, ap_id: str) -> None: ...
    def get_access_point(self, fs_id: str, ap_id: str) -> AccessPoint: ...
    def list_access_points(self, fs_id: str | None = None) -> list[AccessPoint]: ...
    def expand_access_point(self, fs_id: str, ap_id: str, new_size_bytes: int) -> AccessPoint: ...
    def create_snapshot(self, name: str, fs_id: str, ap_id: str, tags: dict[str, str]) -> Snapshot: ...
    def delete_snapshot(self, snapshot_id: str) -> None: ...
    def get_snapshot(self, snapshot_id: str) -> Snapshot: ...
    def list_snapshots(self) -> list[Snapshot]: ...


@dataclass(frozen=True)
class FilePublication:
    """One NodePublishVolume in provider terms: the directory (a file system, through an access
    point when there is one, and a subpath inside), the target path, and how to mount it."""

    fs_id: str
    subpath: str
    access_point: AccessPoint | None
    target: str
    readonly: bool
    mount_options: tuple[str, ...]


class FileNodeProvider(Protocol):
    """Node-side: making a file system directory appear at a target path."""

    def publish(self, publication: FilePublication) -> None: ...
    def unpublish(self, target: str) -> None: ...
    def usage(self, fs_id: str, access_point: AccessPoint | None, path: str) -> FileUsage: ...


def check_reusable(ap_id: str, directory: str, uid: int, gid: int, spec: AccessPointSpec) -> None:
    """reuseAccessPoint: the PVC's existing access point is given back only while the StorageClass
    still describes it (under basePath, its gid and uid); AlreadyExists says what no longer fits."""
    base = posixpath.normpath("/" + spec.base_path.lstrip("/"))
    problems = []
    if directory != base and not directory.startswith(base.rstrip("/") + "/"):
        problems.append(f"its directory {directory} is not under basePath {spec.base_path}")
    if spec.gid is not None:
        if gid != spec.gid:
            problems.append(f"its gid {gid} is not the StorageClass gid {spec.gid}")
    elif not spec.gid_range[0] <= gid <= spec.gid_range[1]:
        problems.append(f"its gid {gid} is outside gidRange {spec.gid_range[0]}-{spec.gid_range[1]}")
    if spec.uid is not None and uid != spec.uid:
        problems.append(f"its uid {uid} is not the StorageClass uid {spec.uid}")
    if problems:
        raise AlreadyExists(
            f"reuseAccessPoint found access point {ap_id} for this PVC, but {'; '.join(problems)}: fix the "
            "StorageClass, or delete that access point's volume"
        )


@runtime_checkable
class FileNodeDirectoryIdentity(Protocol):
    """Optional for a ``FileNodeProvider``: telling the volume's directory by identity (device and
    inode), which a local directory allows and an NFS mount does not. With it, the node enforces
    ReadWriteOncePod and checks in NodeGetVolumeStats that the path holds this volume."""

    def published_elsewhere(
        self, fs_id: str, subpath: str, access_point: AccessPoint | None, target: str, roots: list[str]
    ) -> list[str]: ...
    def holds(self, fs_id: str, subpath: str, access_point: AccessPoint | None, path: str) -> bool: ...
