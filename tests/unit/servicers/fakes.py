"""Small, honest stand-ins for what the servicers talk to: a host, and block and file providers.

Each fake keeps just enough state to answer the way the real one does (a mount table, a set of
volumes), records the *effects* it would have on a machine (mkfs, mount, bind, unmount, attach),
and can be told to fail one method with a domain error. It never touches the real host: paths
are created only under the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from elastivol import ids
from elastivol.domain import Attachment, Capacity, Health, Snapshot
from elastivol.errors import AlreadyExists, FailedPrecondition, NotFound
from elastivol.node.fs import FsStats
from elastivol.node.mount import MountInfo
from elastivol.node.volume import StageResult
from elastivol.providers.block import Volume, VolumeSpec
from elastivol.providers.file import AccessPoint, AccessPointSpec, FilePublication, FileSystem, FileUsage

GiB = 1 << 30

K = TypeVar("K")
V = TypeVar("V")


def lookup(table: dict[K, V], key: K, missing: str) -> V:
    """``table[key]``, or NotFound with ``missing`` as the message, as the real providers answer."""
    try:
        return table[key]
    except KeyError:
        raise NotFound(missing) from None


class Failing:
    """``fail[method] = error``: the next calls of ``method`` raise ``error``."""

    def __init__(self) -> None:
        self.fail: dict[str, Exception] = {}
        self.calls: list[str] = []

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        if method in self.fail:
            raise self.fail[method]


class SnapshotShelf(Failing):
    """The snapshot half both controller-side providers share: snapshots by id."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshots: dict[str, Snapshot] = {}

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._enter("delete_snapshot")
        self.snapshots.pop(snapshot_id, None)

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        return lookup(self.snapshots, snapshot_id, f"snapshot {snapshot_id} does not exist")

    def list_snapshots(self) -> list[Snapshot]:
        return list(self.snapshots.values())


# -- host ------------------------------------------------------------------------------------
@dataclass
class FakeHost(Failing):
    """A mount table in memory. ``devices`` maps a device path to its major:minor."""

    table: dict[str, MountInfo] = field(default_factory=dict)
    formatted: dict[str, str] = field(default_factory=dict)  # device → fs type
    effects: list[tuple[str, str]] = field(default_factory=list)
    devices: dict[str, str] = field(default_factory=dict)
    fs_bytes: int = 4 * GiB

    def __post_init__(self) -> None:
        Failing.__init__(self)

    def _mm(self, device: str) -> str:
        return self.devices.setdefault(device, f"7:{len(self.devices)}")

    def _add(self, target: str, mm: str, root: str, fstype: str, source: str, readonly: bool) -> None:
        self.table[target] = MountInfo(
            mount_id=len(self.effects) + 100, parent_id=1, major_minor=mm, root=root, target=target,
            options="ro" if readonly else "rw", optional=(), fstype=fstype, source=source, super_options="",
        )

    def mounts(self) -> list[MountInfo]:
        return list(self.table.values())

    def find_by_target(self, path: str) -> MountInfo | None:
        return self.table.get(os.path.normpath(path))

    def find_by_source(self, device: str) -> list[MountInfo]:
        return [m for m in self.table.values() if m.source == device]

    def is_mountpoint(self, path: str) -> bool:
        return os.path.normpath(path) in self.table

    def is_mount_of(self, info: MountInfo, path: str, device: str) -> bool:
        return info.major_minor == self._mm(device) or info.root == "/" + os.path.basename(device)

    def stage_filesystem(
        self, device: str, staging_path: str, fs_type: str, *, mkfs_args: Sequence[str] = (),
        mount_options: Sequence[str] = (), readonly: bool = False,
    ) -> StageResult:
        self._enter("stage_filesystem")
        current = self.table.get(staging_path)
        if current is not None:
            if current.source != device:
                raise FailedPrecondition(f"{staging_path} already has another filesystem mounted on it")
            if current.fstype != fs_type:
                raise AlreadyExists(f"already staged at {staging_path} as {current.fstype}")
            return StageResult(formatted=False, grown=False, fs_type=fs_type)
        formatted = device not in self.formatted
        if formatted:
            self.formatted[device] = fs_type
            self.effects.append(("mkfs", device))
        elif self.formatted[device] != fs_type:
            raise FailedPrecondition(f"{device} already holds {self.formatted[device]}")
        os.makedirs(staging_path, exist_ok=True)
        self._add(staging_path, self._mm(device), "/", fs_type, device, readonly)
        self.effects.append(("mount", staging_path))
        return StageResult(formatted=formatted, grown=False, fs_type=fs_type)

    def unstage(self, staging_path: str) -> bool:
        self._enter("unstage")
        if self.table.pop(staging_path, None) is None:
            return False
        self.effects.append(("umount", staging_path))
        return True

    def publish_bind(self, staging_path: str, target: str, readonly: bool, options: Sequence[str] = ()) -> None:
        self._enter("publish_bind")
        staged = self.table[staging_path]
        os.makedirs(target, exist_ok=True)
        self._add(target, staged.major_minor, staged.root, staged.fstype, staged.source, readonly)
        self.effects.append(("bind", target))

    def publish_block(self, device: str, target_file: str, readonly: bool) -> None:
        self._enter("publish_block")
        if target_file in self.table:
            return
        os.makedirs(os.path.dirname(target_file), exist_ok=True)
        open(target_file, "a").close()
        self._add(target_file, "0:5", "/" + os.path.basename(device), "devtmpfs", "udev", readonly)
        self.effects.append(("bind", target_file))

    def unpublish(self, target: str) -> bool:
        self._enter("unpublish")
        had = self.table.pop(target, None) is not None
        if had:
            self.effects.append(("umount", target))
        if os.path.isdir(target):
            shutil.rmtree(target, ignore_errors=True)
        elif os.path.lexists(target):
            os.unlink(target)
        return had

    def expand_online(self, device: str, mountpoint: str, fs_type: str) -> int:
        self._enter("expand_online")
        self.effects.append(("grow", device))
        return self.fs_bytes

    def statfs(self, path: str) -> FsStats:
        return FsStats(self.fs_bytes, self.fs_bytes - GiB, GiB, 1000, 900, 100)

    def device_size(self, path: str) -> int:
        return self.fs_bytes


# -- block -----------------------------------------------------------------------------------
class FakeBlockProvider(SnapshotShelf):
    """A controller-side block provider: volumes by id, found by name for idempotent creates."""

    readonly_attach = True

    def __init__(self, zones: Sequence[str] = ("zone-a", "zone-b")) -> None:
        super().__init__()
        self._zones = list(zones)
        self.volumes: dict[str, Volume] = {}

    def health(self) -> Health:
        self._enter("health")
        return Health(True)

    def zones(self) -> list[str]:
        return list(self._zones)

    def create_volume(self, spec: VolumeSpec) -> Volume:
        self._enter("create_volume")
        for v in self.volumes.values():
            if v.name == spec.name:
                if v.size_bytes != spec.size_bytes:
                    raise AlreadyExists(f"volume {spec.name} exists with another size")
                return v
        vol = Volume(ids.new_id("vol"), spec.name, spec.size_bytes, spec.zone, {"type": spec.params.volume_type},
                     spec.mode, spec.fs_type, spec.source, time.time())
        self.volumes[vol.id] = vol
        return vol

    def delete_volume(self, volume_id: str) -> None:
        self._enter("delete_volume")
        self.volumes.pop(volume_id, None)

    def get_volume(self, volume_id: str) -> Volume:
        self._enter("get_volume")
        return lookup(self.volumes, volume_id, f"volume {volume_id} does not exist")

    def list_volumes(self) -> list[Volume]:
        return list(self.volumes.values())

    def node_zone(self, node_id: str) -> str:
        return self._zones[0]

    def attach(self, volume_id: str, node_id: str, readonly: bool) -> dict[str, str]:
        self._enter("attach")
        vol = self.get_volume(volume_id)
        if node_id not in vol.attached_nodes:
            self.volumes[volume_id] = replace(vol, attachments=(*vol.attachments, Attachment(node_id, readonly)))
        return {"devicePath": f"/dev/fake/{volume_id}"}

    def detach(self, volume_id: str, node_id: str) -> None:
        self._enter("detach")
        vol = self.volumes.get(volume_id)
        if vol is not None:
            self.volumes[volume_id] = replace(vol, attachments=tuple(a for a in vol.attachments if a.node_id != node_id))

    def capacity(self, zone: str | None) -> Capacity:
        self._enter("capacity")
        return Capacity(available_bytes=100 * GiB, maximum_volume_size=50 * GiB)

    def expand_volume(self, volume_id: str, new_size_bytes: int) -> Volume:
        self._enter("expand_volume")
        vol = replace(self.get_volume(volume_id), size_bytes=new_size_bytes)
        self.volumes[volume_id] = vol
        return vol

    def create_snapshot(self, name: str, source_volume_id: str, tags: dict[str, str]) -> Snapshot:
        self._enter("create_snapshot")
        for s in self.snapshots.values():
            if s.name == name:
                if s.source_volume_id != source_volume_id:
                    raise AlreadyExists(f"snapshot {name} exists for another volume")
                return s
        vol = self.get_volume(source_volume_id)
        snap = Snapshot(ids.new_id("snap"), name, source_volume_id, vol.size_bytes, time.time(), tags=tags)
        self.snapshots[snap.id] = snap
        return snap



class FakeBlockNodeProvider(Failing):
    """A node-side block provider: a known set of volumes, each with a made-up device once attached."""

    def __init__(self, volumes: Sequence[str] = ()) -> None:
        super().__init__()
        self.known = set(volumes)
        self.attached: dict[str, str] = {}
        self.limited: list[tuple[str, str]] = []

    def register_node(self, node_id: str, zone: str, max_volumes: int) -> None:
        self._enter("register_node")

    def attach_device(self, volume_id: str, publish_context: dict[str, str]) -> str:
        self._enter("attach_device")
        return self.attached.setdefault(volume_id, f"/dev/fake-{volume_id}")

    def detach_device(self, volume_id: str) -> None:
        self._enter("detach_device")
        self.attached.pop(volume_id, None)

    def find_device(self, volume_id: str) -> str | None:
        return self.attached.get(volume_id)

    def volume_exists(self, volume_id: str) -> bool:
        self._enter("volume_exists")
        return volume_id in self.known

    def refresh_device(self, volume_id: str) -> int:
        self._enter("refresh_device")
        return 4 * GiB

    def limit_io(self, volume_id: str, pod_uid: str) -> None:
        self.limited.append((volume_id, pod_uid))

    def update_io_limits(self, volume_id: str) -> list[str]:
        return []


# -- file ------------------------------------------------------------------------------------
class FakeFileProvider(SnapshotShelf):
    """A controller-side file provider (and the node's catalog): file systems and access points."""

    def __init__(self, fs_ids: Sequence[str] = ()) -> None:
        super().__init__()
        self.filesystems = {f: FileSystem(f, f"fs-{i}", f"/nonexistent/{f}") for i, f in enumerate(fs_ids)}
        self.access_points: dict[tuple[str, str], AccessPoint] = {}

    def health(self) -> Health:
        return Health(True)

    def get_filesystem(self, fs_id: str) -> FileSystem:
        self._enter("get_filesystem")
        return lookup(self.filesystems, fs_id, f"file system {fs_id} does not exist")

    def list_filesystems(self) -> list[FileSystem]:
        return list(self.filesystems.values())

    def create_access_point(self, spec: AccessPointSpec) -> AccessPoint:
        self._enter("create_access_point")
        for ap in self.access_points.values():
            if ap.name == spec.name:
                return ap
        ap = AccessPoint(ids.new_id("fsap"), spec.fs_id, spec.name, spec.directory, spec.uid or 1000,
                         spec.gid or spec.gid_range[0], spec.perms, spec.capacity_bytes)
        self.access_points[(ap.fs_id, ap.id)] = ap
        return ap

    def delete_access_point(self, fs_id: str, ap_id: str) -> None:
        self._enter("delete_access_point")
        self.access_points.pop((fs_id, ap_id), None)

    def get_access_point(self, fs_id: str, ap_id: str) -> AccessPoint:
        self._enter("get_access_point")
        return lookup(self.access_points, (fs_id, ap_id), f"access point {ap_id} does not exist")

    def list_access_points(self, fs_id: str | None = None) -> list[AccessPoint]:
        return [ap for ap in self.access_points.values() if fs_id in (None, ap.fs_id)]

    def expand_access_point(self, fs_id: str, ap_id: str, new_size_bytes: int) -> AccessPoint:
        self._enter("expand_access_point")
        ap = replace(self.get_access_point(fs_id, ap_id), capacity_bytes=new_size_bytes)
        self.access_points[(fs_id, ap_id)] = ap
        return ap

    def create_snapshot(self, name: str, fs_id: str, ap_id: str, tags: dict[str, str]) -> Snapshot:
        self._enter("create_snapshot")
        ap = self.get_access_point(fs_id, ap_id)
        snap = Snapshot(ids.new_id("snap"), name, ap.volume_id, ap.capacity_bytes, time.time(), tags=tags)
        self.snapshots[snap.id] = snap
        return snap



class FakeFileNodeProvider(Failing):
    """A node-side file provider without the optional directory identity (as EFS's): publishes
    through the fake host's mount table, so a second identical publish has no effect."""

    def __init__(self, host: FakeHost) -> None:
        super().__init__()
        self.host = host

    def publish(self, publication: FilePublication) -> None:
        self._enter("publish")
        target = publication.target
        if target in self.host.table:
            return
        os.makedirs(target, exist_ok=True)
        ap, subpath = publication.access_point, publication.subpath
        root = (ap.directory if ap else "/") + (f"/{subpath}" if subpath else "")
        self.host._add(target, "0:50", root, "nfs4", publication.fs_id, publication.readonly)
        self.host.effects.append(("bind", target))

    def unpublish(self, target: str) -> None:
        self._enter("unpublish")
        self.host.unpublish(target)

    def usage(self, fs_id: str, access_point: AccessPoint | None, path: str) -> FileUsage:
        self._enter("usage")
        return FileUsage(total_bytes=10 * GiB, used_bytes=GiB, available_bytes=9 * GiB)


class FakeLocalFileNodeProvider(FakeFileNodeProvider):
    """With the optional ``FileNodeDirectoryIdentity``: directories told apart by the mount's root."""

    def _root(self, subpath: str, access_point: AccessPoint | None) -> str:
        return (access_point.directory if access_point else "/") + (f"/{subpath}" if subpath else "")

    def published_elsewhere(self, fs_id: str, subpath: str, access_point: AccessPoint | None, target: str,
                            roots: list[str]) -> list[str]:
        root = self._root(subpath, access_point)
        return [m.target for m in self.host.table.values() if m.root == root and m.target != target]

    def holds(self, fs_id: str, subpath: str, access_point: AccessPoint | None, path: str) -> bool:
        m = self.host.table.get(path)
        return m is not None and m.root == self._root(subpath, access_point)


class FakeContext:
    """The few ServicerContext calls servicers make."""

    def __init__(self) -> None:
        self.trailing: tuple[tuple[str, Any], ...] = ()

    def set_trailing_metadata(self, md: tuple[tuple[str, Any], ...]) -> None:
        self.trailing = md
