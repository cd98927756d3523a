"""What the file driver asks of the place where shared file volumes live (local dirs or EFS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from elastivol.domain import AccessPointSpec, Health, Snapshot


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
