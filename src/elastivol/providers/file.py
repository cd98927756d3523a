"""What the file driver asks of the place where shared file volumes live (local dirs or EFS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from elastivol.providers.types import Health, Snapshot


@dataclass(frozen=True)
class FileSystem:
    id: str  # fs- + 17 hex
    name: str
    root: str  # local: the root directory every node sees; aws: "" (mounted by DNS name)
    reflink: bool = False  # copy-on-write copies possible (snapshots)
    quotas: str = "none"  # "btrfs-qgroup" when per-directory capacity can be enforced
    created_at: float = 0.0


@dataclass(frozen=True)
class AccessPointSpec:
    """A validated request for an access point. ``directory`` is final (basePath, pattern, suffix applied)."""

    name: str  # the CSI volume name: idempotency key
    fs_id: str
    directory: str  # absolute within the file system, e.g. "/dynamic_provisioning/pvc-1234"
    uid: int | None
    gid: int | None  # None: allocate from gid_range, race-free
    gid_range: tuple[int, int]
    perms: int  # e.g. 0o700
    capacity_bytes: int
    enforce_capacity: bool = False
    reuse: bool = False  # reuseAccessPoint: same name gets the existing one back
    delete_root_dir: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    source_snapshot_id: str = ""
    # reuseAccessPoint: what an existing access point is matched on (a hash of the PVC's name).
    reuse_key: str = ""
    # The StorageClass basePath, so a reused access point can be checked to lie under it.
    base_path: str = "/"


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


class FileNodeProvider(Protocol):
    """Node-side: making a file system directory appear at a target path."""

    def publish(
        self,
        fs_id: str,
        subpath: str,
        access_point: AccessPoint | None,
        target: str,
        readonly: bool,
        mount_options: tuple[str, ...],
    ) -> None: ...
    def unpublish(self, target: str) -> None: ...
    def usage(self, fs_id: str, access_point: AccessPoint | None, path: str) -> FileUsage: ...


@runtime_checkable
class FileNodeDirectoryIdentity(Protocol):
    """Optional for a ``FileNodeProvider``: telling the volume's directory by identity (device and
    inode), which a local directory allows and an NFS mount does not. With it, the node enforces
    ReadWriteOncePod and checks in NodeGetVolumeStats that the path holds this volume."""

    def published_elsewhere(
        self, fs_id: str, subpath: str, access_point: AccessPoint | None, target: str, roots: list[str]
    ) -> list[str]: ...
    def holds(self, fs_id: str, subpath: str, access_point: AccessPoint | None, path: str) -> bool: ...
