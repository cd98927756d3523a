"""Helpers for the file driver's tests: StorageClass parameters, publishing, paths."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from elastivol.client import CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.node import mount
from elastivol.providers.local.file.registry import FileRegistry

RWX = "MULTI_NODE_MULTI_WRITER"


def sc(fs_id: str, **extra: str) -> dict[str, str]:
    """A StorageClass's parameters, seed 003 style."""
    return {"provisioningMode": "efs-ap", "fileSystemId": fs_id, "directoryPerms": "700", **extra}


@dataclass
class Published:
    """Where tests publish volumes: one kubelet-like directory per node under the work dir."""

    client: CsiClient
    volume_id: str
    target: Path
    mode: str = RWX
    readonly: bool = False
    mount_flags: tuple[str, ...] = field(default_factory=tuple)

    def publish(self) -> None:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.client.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
            volume_id=self.volume_id, target_path=str(self.target), readonly=self.readonly,
            volume_capability=volume_capability(mode=self.mode, mount_flags=self.mount_flags)), timeout=30)

    def unpublish(self) -> None:
        self.client.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
            volume_id=self.volume_id, target_path=str(self.target)), timeout=30)


def published(client: CsiClient, fwork: Path, volume_id: str, pod: str, node: str = "node-a", **kw: object) -> Published:
    target = fwork / "kubelet" / node / "pods" / pod / "volumes" / "mount"
    p = Published(client, volume_id, target, **kw)  # type: ignore[arg-type]
    p.publish()
    return p


def create(client: CsiClient, name: str, params: dict[str, str], size: int = 1 << 30,
           mode: str = RWX, source: csi_pb2.VolumeContentSource | None = None) -> csi_pb2.Volume:
    return client.create_volume(name, size, parameters=params, cap=volume_capability(mode=mode), source=source)


def delete(client: CsiClient, volume_id: str) -> None:
    client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id), timeout=60)


def root_of(registry: FileRegistry, fs_id: str) -> Path:
    return Path(registry.get_filesystem(fs_id).root)


def ap_dir(registry: FileRegistry, volume: csi_pb2.Volume) -> Path:
    fs_id, _, ap_id = volume.volume_id.partition("::")
    return root_of(registry, fs_id) / registry.get_access_point(fs_id, ap_id).directory.lstrip("/")


def mounted_under(work: Path) -> list[str]:
    return [m.target for m in mount.mounts() if m.target.startswith(str(work / "kubelet") + "/")]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
