"""The host, as the node servicers see it: one Protocol and the real implementation.

The node servicers reach the host only through a ``HostOps``, handed to them at assembly, so
they can be tested against a fake host without root, loop devices or a mount table. The verbs
are the idempotent ones of :mod:`elastivol.node.volume` (stage = detect, format, mount, grow;
publish = bind; unpublish = unmount) plus the mount-table reads and the statistics the
servicers answer from. ``RealHost`` only delegates: the logic stays in ``node/*``, tested there
with real devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from elastivol.node import fs, mount, volume
from elastivol.node.fs import FsStats
from elastivol.node.mount import MountInfo
from elastivol.node.volume import StageResult


class HostOps(Protocol):
    """What a node servicer may do to, or ask of, this host. Every method may block."""

    # -- the mount table ---------------------------------------------------------------------
    def mounts(self) -> list[MountInfo]: ...
    def find_by_target(self, path: str) -> MountInfo | None: ...
    def find_by_source(self, device: str) -> list[MountInfo]: ...
    def is_mountpoint(self, path: str) -> bool: ...
    def is_mount_of(self, info: MountInfo, path: str, device: str) -> bool: ...

    # -- volume verbs (idempotent) -----------------------------------------------------------
    def stage_filesystem(
        self,
        device: str,
        staging_path: str,
        fs_type: str,
        *,
        mkfs_args: Sequence[str] = (),
        mount_options: Sequence[str] = (),
        readonly: bool = False,
    ) -> StageResult: ...
    def unstage(self, staging_path: str) -> bool: ...
    def publish_bind(self, staging_path: str, target: str, readonly: bool, options: Sequence[str] = ()) -> None: ...
    def publish_block(self, device: str, target_file: str, readonly: bool) -> None: ...
    def unpublish(self, target: str) -> bool: ...
    def expand_online(self, device: str, mountpoint: str, fs_type: str) -> int: ...

    # -- statistics --------------------------------------------------------------------------
    def statfs(self, path: str) -> FsStats: ...
    def device_size(self, path: str) -> int: ...


class RealHost:
    """``HostOps`` on this machine: each method is the ``node/*`` function of the same name."""

    def mounts(self) -> list[MountInfo]:
        return mount.mounts()

    def find_by_target(self, path: str) -> MountInfo | None:
        return mount.find_by_target(path)

    def find_by_source(self, device: str) -> list[MountInfo]:
        return mount.find_by_source(device)

    def is_mountpoint(self, path: str) -> bool:
        return mount.is_mountpoint(path)

    def is_mount_of(self, info: MountInfo, path: str, device: str) -> bool:
        return volume.is_mount_of(info, path, device)

    # The function itself, not a wrapper: its keyword-only signature is then written in one place.
    stage_filesystem = staticmethod(volume.stage_filesystem)

    def unstage(self, staging_path: str) -> bool:
        return volume.unstage(staging_path)

    def publish_bind(self, staging_path: str, target: str, readonly: bool, options: Sequence[str] = ()) -> None:
        volume.publish_bind(staging_path, target, readonly, options)

    def publish_block(self, device: str, target_file: str, readonly: bool) -> None:
        volume.publish_block(device, target_file, readonly)

    def unpublish(self, target: str) -> bool:
        return volume.unpublish(target)

    def expand_online(self, device: str, mountpoint: str, fs_type: str) -> int:
        return volume.expand_online(device, mountpoint, fs_type)

    def statfs(self, path: str) -> FsStats:
        return fs.statfs(path)

    def device_size(self, path: str) -> int:
        return fs.device_size(path)
