"""The CO's call sequence for one block volume, as named steps a harness can resume."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.process import ServerProcess
from tests.helpers import Vol, new_volume
from tests.reliability.conftest import NODE

GiB = 1 << 30


@dataclass
class Run:
    """The state a sequence builds up, kept across server restarts."""

    server: ServerProcess
    work: Path
    prefix: str
    client: CsiClient
    vol: Vol | None = None
    restored: Vol | None = None
    snapshot_id: str = ""
    checksum: str = ""
    crashes: list[str] = field(default_factory=list)

    @property
    def v(self) -> Vol:
        assert self.vol is not None
        return self.vol

    def reconnect(self) -> None:
        self.client.close()
        self.client = CsiClient(self.server.endpoint)
        for vol in (self.vol, self.restored):
            if vol is not None:
                vol.client = self.client


def _create(run: Run) -> None:
    run.vol = new_volume(run.client, run.work, f"{run.prefix}-vol", kind="xfs", node_id=NODE)


def _write(run: Run) -> None:
    if not run.checksum:
        run.checksum = run.v.write(1 << 20)


def _snapshot(run: Run) -> None:
    snap = run.client.controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
        name=f"{run.prefix}-snap", source_volume_id=run.v.id), timeout=120).snapshot
    assert snap.ready_to_use
    run.snapshot_id = snap.snapshot_id


def _expand(run: Run) -> None:
    size = csi_pb2.CapacityRange(required_bytes=2 * GiB)
    resp = run.client.controller.ControllerExpandVolume(
        csi_pb2.ControllerExpandVolumeRequest(volume_id=run.v.id, capacity_range=size), timeout=60)
    assert resp.capacity_bytes == 2 * GiB
    node = run.client.node.NodeExpandVolume(csi_pb2.NodeExpandVolumeRequest(
        volume_id=run.v.id, volume_path=str(run.v.target), staging_target_path=str(run.v.staging),
        capacity_range=size), timeout=60)
    assert node.capacity_bytes >= 2 * GiB


def _verify(run: Run) -> None:
    assert run.v.checksum(1 << 20) == run.checksum, "data written before the crash changed"


def _restore(run: Run) -> None:
    source = csi_pb2.VolumeContentSource(
        snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=run.snapshot_id))
    vol = run.client.create_volume(f"{run.prefix}-restored", 2 * GiB, cap=run.v.cap, zone="zone-a", source=source)
    run.restored = Vol(run.client, vol, run.v.cap, run.work / "kubelet" / "staging" / vol.volume_id,
                       run.work / "kubelet" / "pods" / f"{run.prefix}-restored" / "mount", NODE, {})


def _delete_restored(run: Run) -> None:
    assert run.restored is not None
    run.restored.delete()


def _delete_snapshot(run: Run) -> None:
    run.client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=run.snapshot_id), timeout=60)


STEPS: list[tuple[str, Callable[[Run], None]]] = [
    ("CreateVolume", _create),
    ("ControllerPublishVolume", lambda r: r.v.controller_publish()),
    ("NodeStageVolume", lambda r: r.v.stage()),
    ("NodePublishVolume", lambda r: r.v.publish()),
    ("write", _write),
    ("CreateSnapshot", _snapshot),
    ("Expand", _expand),
    ("verify", _verify),
    ("CreateVolume(restore)", _restore),
    ("DeleteVolume(restored)", _delete_restored),
    ("NodeUnpublishVolume", lambda r: r.v.unpublish()),
    ("NodeUnstageVolume", lambda r: r.v.unstage()),
    ("ControllerUnpublishVolume", lambda r: r.v.controller_unpublish()),
    ("DeleteSnapshot", _delete_snapshot),
    ("DeleteVolume", lambda r: r.v.delete()),
]


class Restartable(Protocol):
    server: ServerProcess
    crashes: list[str]

    def reconnect(self) -> None: ...


def run_all(run: Run, *, restart_env: dict[str, str] | None = None) -> None:
    run_steps(STEPS, run, restart_env=restart_env)


def run_steps(steps: Sequence[tuple[str, Callable[[Any], object]]], run: Restartable, *,
              restart_env: dict[str, str] | None = None) -> None:
    """Every step in order, as the CO would retry them: ABORTED waits and retries; when the server
    died under a step (SIGKILL at a crash point), it is restarted and the step retried."""
    for name, step in steps:
        for _attempt in range(20):
            try:
                step(run)
                break
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.ABORTED:
                    time.sleep(0.2)
                    continue
                if code != grpc.StatusCode.UNAVAILABLE or run.server.proc is None:
                    raise
                rc = run.server.proc.wait(10)
                assert rc == -9, f"{name}: server exited {rc}, not by SIGKILL: {run.server.log_tail()}"
                run.crashes.append(name)
                run.server.env = dict(restart_env or {})
                run.server.start()
                run.reconnect()
        else:
            raise AssertionError(f"{name} kept failing with ABORTED")
