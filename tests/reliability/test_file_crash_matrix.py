"""The file driver's crash matrix: SIGKILL at every access-point and file-snapshot point, restart, finish, check."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from elastivol import crashpoints
from elastivol.client import CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.process import ServerProcess, serve_args
from elastivol.providers.local.file import controller as _file  # noqa: F401  (registers the access point points)
from elastivol.providers.local.file import snapshots as _snaps  # noqa: F401  (registers the snapshot points)
from elastivol.providers.local.file.registry import FileRegistry
from elastivol.providers.local.pool import Pool
from tests.helpers import leaked
from tests.reliability.conftest import NODE, ZONE
from tests.reliability.sequence import run_steps
from tests.support import SERVE_MODULE, crash, serve_env

FILE_POINTS = sorted(p for p in crashpoints.KNOWN if p.startswith(("accesspoint.", "filesnapshot.")))
RWX = volume_capability(mode="MULTI_NODE_MULTI_WRITER")


@pytest.fixture(scope="module")
def fs_id(rel_pool: Path) -> str:
    root = rel_pool / "fsroot"
    root.mkdir(exist_ok=True)
    return FileRegistry(Pool(rel_pool)).register("rel", str(root)).id


@dataclass
class FileRun:
    server: ServerProcess
    client: CsiClient
    fs_id: str
    prefix: str
    work: Path
    ids: dict[str, str] = field(default_factory=dict)
    checksum: str = ""
    crashes: list[str] = field(default_factory=list)

    def reconnect(self) -> None:
        self.client.close()
        self.client = CsiClient(self.server.endpoint)

    def target(self, key: str) -> Path:
        return self.work / "kubelet" / "pods" / f"{self.prefix}-{key}" / "mount"

    def create(self, key: str, source: csi_pb2.VolumeContentSource | None = None) -> None:
        params = {"provisioningMode": "efs-ap", "fileSystemId": self.fs_id, "directoryPerms": "700",
                  "deleteAccessPointRootDir": "true"}
        vol = self.client.create_volume(f"{self.prefix}-{key}", 1 << 30, parameters=params, cap=RWX, source=source)
        self.ids[key] = vol.volume_id

    def publish(self, key: str) -> None:
        self.target(key).parent.mkdir(parents=True, exist_ok=True)
        self.client.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
            volume_id=self.ids[key], target_path=str(self.target(key)), volume_capability=RWX), timeout=60)

    def unpublish(self, key: str) -> None:
        self.client.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
            volume_id=self.ids[key], target_path=str(self.target(key))), timeout=60)

    def write(self) -> None:
        if not self.checksum:
            data = os.urandom(1 << 20)
            with open(self.target("vol") / "data.bin", "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            self.checksum = hashlib.sha256(data).hexdigest()

    def verify(self, key: str) -> None:
        got = hashlib.sha256((self.target(key) / "data.bin").read_bytes()).hexdigest()
        assert got == self.checksum, f"data in {key} changed"

    def snapshot(self) -> None:
        snap = self.client.controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
            name=f"{self.prefix}-snap", source_volume_id=self.ids["vol"]), timeout=120).snapshot
        assert snap.ready_to_use
        self.ids["snap"] = snap.snapshot_id

    def restore(self) -> None:
        self.create("restored", csi_pb2.VolumeContentSource(
            snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=self.ids["snap"])))

    def delete(self, key: str) -> None:
        self.client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=self.ids[key]), timeout=60)


STEPS: list[tuple[str, Callable[[FileRun], None]]] = [
    ("CreateVolume", lambda r: r.create("vol")),
    ("NodePublishVolume", lambda r: r.publish("vol")),
    ("write", FileRun.write),
    ("CreateSnapshot", FileRun.snapshot),
    ("CreateVolume(restore)", FileRun.restore),
    ("NodePublishVolume(restored)", lambda r: r.publish("restored")),
    ("verify(restored)", lambda r: r.verify("restored")),
    ("verify", lambda r: r.verify("vol")),
    ("NodeUnpublishVolume(restored)", lambda r: r.unpublish("restored")),
    ("DeleteVolume(restored)", lambda r: r.delete("restored")),
    ("DeleteSnapshot", lambda r: r.client.controller.DeleteSnapshot(
        csi_pb2.DeleteSnapshotRequest(snapshot_id=r.ids["snap"]), timeout=60)),
    ("NodeUnpublishVolume", lambda r: r.unpublish("vol")),
    ("DeleteVolume", lambda r: r.delete("vol")),
]


def test_matrix_covers_every_file_point() -> None:
    assert len(FILE_POINTS) >= 6, FILE_POINTS


@pytest.mark.parametrize("point", FILE_POINTS)
def test_file_crash_at(point: str, rel_pool: Path, fs_id: str) -> None:
    work = rel_pool.parent
    server = ServerProcess(
        serve_args(driver="file", pool=rel_pool, node_id=NODE, zone=ZONE, allowed_roots=[work]),
        f"unix://{work}/file-crash.sock", work / "logs" / f"file-crash-{point}.log",
        env=serve_env({crash.ENV: point}), module=SERVE_MODULE,
    ).start()
    run = FileRun(server, CsiClient(server.endpoint), fs_id, "f-" + point.replace(".", "-").replace("_", "-"), work)
    try:
        run_steps(STEPS, run)
    finally:
        run.client.close()
        server.stop()
    assert len(run.crashes) == 1, f"{point} was never hit"
    registry = FileRegistry(Pool(rel_pool))
    assert registry.access_points_of(fs_id) == []
    root = rel_pool / "fsroot"
    left = [p for p in root.rglob("*") if ".elastivol" not in p.parts]
    assert left == [], f"access point directories left behind: {left}"
    trash = root / ".elastivol" / "trash"
    assert not trash.exists() or list(trash.iterdir()) == []
    assert leaked(rel_pool) == []
