"""Every mutating RPC, called as a CO calls it: a deadline that expires mid-call, then an immediate retry.

Each round walks one volume through its whole life; every step is sent with a deadline
somewhere between 5 % and 150 % of that RPC's usual duration and then sent again at once.
After each step the state must be exactly what one successful call makes: one volume per
name, one snapshot per name, one mount per path, one loop device per image, and nothing
left at the end. No attempt may end in INTERNAL (or anything but OK, DEADLINE_EXCEEDED or
ABORTED).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from elastivol.client import MOUNT, CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.node import loop, mount
from elastivol.process import ServerProcess
from tests.helpers import leaked
from tests.reliability.conftest import NODE, ServerFactory
from tests.reliability.deadline import deadline_rounds

GiB = 1 << 30
ROUNDS = int(os.environ.get("ELASTIVOL_DEADLINE_ROUNDS", "100"))
CAP = volume_capability(MOUNT, fs_type="xfs")


@pytest.fixture
def server(server_factory: ServerFactory) -> Iterator[ServerProcess]:
    yield server_factory("deadline").start()


def _mounts_at(path: Path) -> int:
    return sum(1 for m in mount.mounts() if m.target == str(path))


def _loops_of(pool: Path) -> list[str]:
    return [d.path for d in loop.list_all() if d.backing_file.startswith(str(pool) + "/")]


class BlockRound:
    """One volume's life, as request builders for each mutating RPC."""

    def __init__(self, client: CsiClient, work: Path, i: int) -> None:
        self.c = client
        self.name = f"deadline-{i}"
        self.snap_name = f"deadline-snap-{i}"
        self.staging = work / "kubelet" / "staging" / self.name
        self.target = work / "kubelet" / "pods" / self.name / "mount"
        self.volume_id = ""
        self.snapshot_id = ""
        self.publish_context: dict[str, str] = {}

    def create(self) -> csi_pb2.CreateVolumeRequest:
        return csi_pb2.CreateVolumeRequest(
            name=self.name, capacity_range=csi_pb2.CapacityRange(required_bytes=GiB),
            volume_capabilities=[CAP], parameters={"type": "gp3"})

    def publish(self) -> csi_pb2.ControllerPublishVolumeRequest:
        return csi_pb2.ControllerPublishVolumeRequest(volume_id=self.volume_id, node_id=NODE, volume_capability=CAP)

    def stage(self) -> csi_pb2.NodeStageVolumeRequest:
        return csi_pb2.NodeStageVolumeRequest(
            volume_id=self.volume_id, staging_target_path=str(self.staging), volume_capability=CAP,
            publish_context=self.publish_context, volume_context={"fsType": "xfs"})

    def node_publish(self) -> csi_pb2.NodePublishVolumeRequest:
        return csi_pb2.NodePublishVolumeRequest(
            volume_id=self.volume_id, staging_target_path=str(self.staging), target_path=str(self.target),
            volume_capability=CAP, publish_context=self.publish_context)

    def expand(self) -> csi_pb2.ControllerExpandVolumeRequest:
        return csi_pb2.ControllerExpandVolumeRequest(
            volume_id=self.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GiB),
            volume_capability=CAP)

    def node_expand(self) -> csi_pb2.NodeExpandVolumeRequest:
        return csi_pb2.NodeExpandVolumeRequest(
            volume_id=self.volume_id, volume_path=str(self.target), staging_target_path=str(self.staging),
            capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GiB), volume_capability=CAP)

    def snapshot(self) -> csi_pb2.CreateSnapshotRequest:
        return csi_pb2.CreateSnapshotRequest(name=self.snap_name, source_volume_id=self.volume_id)

    def node_unpublish(self) -> csi_pb2.NodeUnpublishVolumeRequest:
        return csi_pb2.NodeUnpublishVolumeRequest(volume_id=self.volume_id, target_path=str(self.target))

    def unstage(self) -> csi_pb2.NodeUnstageVolumeRequest:
        return csi_pb2.NodeUnstageVolumeRequest(volume_id=self.volume_id, staging_target_path=str(self.staging))

    def unpublish(self) -> csi_pb2.ControllerUnpublishVolumeRequest:
        return csi_pb2.ControllerUnpublishVolumeRequest(volume_id=self.volume_id, node_id=NODE)

    def delete_snapshot(self) -> csi_pb2.DeleteSnapshotRequest:
        return csi_pb2.DeleteSnapshotRequest(snapshot_id=self.snapshot_id)

    def delete(self) -> csi_pb2.DeleteVolumeRequest:
        return csi_pb2.DeleteVolumeRequest(volume_id=self.volume_id)


def _walk(c: CsiClient, r: BlockRound, pool: Path, call: object, check: bool) -> None:
    """Walk one round; ``call(rpc, stub_method, request)`` sends each step."""
    send = call  # type: ignore[assignment]
    ctl, node = c.controller, c.node
    r.volume_id = send("CreateVolume", ctl.CreateVolume, r.create()).volume.volume_id
    if check:
        names = [e.volume.volume_id for e in ctl.ListVolumes(csi_pb2.ListVolumesRequest(), timeout=30).entries]
        assert names == [r.volume_id], f"one name, one volume: {names}"
    r.publish_context = dict(send("ControllerPublishVolume", ctl.ControllerPublishVolume, r.publish()).publish_context)
    send("NodeStageVolume", node.NodeStageVolume, r.stage())
    if check:
        assert _mounts_at(r.staging) == 1, "one stage, one mount"
        assert len(_loops_of(pool)) == 1, f"one image, one loop device: {_loops_of(pool)}"
    send("NodePublishVolume", node.NodePublishVolume, r.node_publish())
    if check:
        assert _mounts_at(r.target) == 1, "one publish, one mount"
    grown = send("ControllerExpandVolume", ctl.ControllerExpandVolume, r.expand())
    assert grown.capacity_bytes == 2 * GiB
    send("NodeExpandVolume", node.NodeExpandVolume, r.node_expand())
    if check:
        assert os.statvfs(r.target).f_blocks * os.statvfs(r.target).f_frsize > 1.5 * GiB
    r.snapshot_id = send("CreateSnapshot", ctl.CreateSnapshot, r.snapshot()).snapshot.snapshot_id
    if check:
        snaps = [e.snapshot.snapshot_id for e in ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest(), timeout=30).entries]
        assert snaps == [r.snapshot_id], f"one name, one snapshot: {snaps}"
    send("NodeUnpublishVolume", node.NodeUnpublishVolume, r.node_unpublish())
    send("NodeUnstageVolume", node.NodeUnstageVolume, r.unstage())
    if check:
        assert _mounts_at(r.target) == 0 and _mounts_at(r.staging) == 0
        assert _loops_of(pool) == [], "unstage detaches the loop device"
    send("ControllerUnpublishVolume", ctl.ControllerUnpublishVolume, r.unpublish())
    send("DeleteSnapshot", ctl.DeleteSnapshot, r.delete_snapshot())
    send("DeleteVolume", ctl.DeleteVolume, r.delete())
    if check:
        assert list(ctl.ListVolumes(csi_pb2.ListVolumesRequest(), timeout=30).entries) == []
        assert list(ctl.ListSnapshots(csi_pb2.ListSnapshotsRequest(), timeout=30).entries) == []


@pytest.mark.slow
def test_block_deadline_then_retry(server: ServerProcess, rel_pool: Path) -> None:
    work = rel_pool.parent
    with CsiClient(server.endpoint) as c:
        # Calibrate each RPC's usual duration from two plain lifecycles, then cut calls short.
        expired = deadline_rounds(lambda i, send: _walk(c, BlockRound(c, work, i), rel_pool, send, check=True),
                                  ROUNDS, warmups=2)
    assert leaked(rel_pool) == []
    # The deadlines really cut calls short: most RPCs saw expired first attempts.
    assert len(expired) >= 8, f"too few RPCs had a deadline expire mid-call: {sorted(expired)}"


