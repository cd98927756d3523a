"""The file driver's mutating RPCs, called as a CO calls them: a deadline that expires mid-call,
then the same request at once. One access point per name, one snapshot per name, one mount
per target path, never INTERNAL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from elastivol.client import CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.node import mount
from tests.integration.file.helpers import RWX, sc
from tests.reliability.deadline import deadline_rounds

GiB = 1 << 30
ROUNDS = int(os.environ.get("ELASTIVOL_DEADLINE_ROUNDS", "100"))
CAP = volume_capability(mode=RWX)


def _mounts_at(path: Path) -> int:
    return sum(1 for m in mount.mounts() if m.target == str(path))


def _volume_ids(c: CsiClient) -> set[str]:
    return {e.volume.volume_id for e in c.controller.ListVolumes(csi_pb2.ListVolumesRequest(), timeout=30).entries}


def _snapshot_ids(c: CsiClient) -> set[str]:
    entries = c.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest(), timeout=30).entries
    return {e.snapshot.snapshot_id for e in entries}


def _round(c: CsiClient, fwork: Path, fs_id: str, i: int, send: Any) -> None:
    ctl, node = c.controller, c.node
    before_vols, before_snaps = _volume_ids(c), _snapshot_ids(c)
    target = fwork / "kubelet" / "deadline" / f"pod-{i}" / "mount"
    target.parent.mkdir(parents=True, exist_ok=True)
    create = csi_pb2.CreateVolumeRequest(
        name=f"file-deadline-{i}", capacity_range=csi_pb2.CapacityRange(required_bytes=GiB),
        volume_capabilities=[CAP], parameters=sc(fs_id))
    volume_id = send("CreateVolume", ctl.CreateVolume, create).volume.volume_id
    assert _volume_ids(c) - before_vols == {volume_id}, "one name, one access point"
    publish = csi_pb2.NodePublishVolumeRequest(volume_id=volume_id, target_path=str(target), volume_capability=CAP)
    send("NodePublishVolume", node.NodePublishVolume, publish)
    assert _mounts_at(target) == 1, "one publish, one mount"
    expand = csi_pb2.ControllerExpandVolumeRequest(
        volume_id=volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GiB))
    assert send("ControllerExpandVolume", ctl.ControllerExpandVolume, expand).capacity_bytes >= 2 * GiB
    snap = csi_pb2.CreateSnapshotRequest(name=f"file-deadline-snap-{i}", source_volume_id=volume_id)
    snapshot_id = send("CreateSnapshot", ctl.CreateSnapshot, snap).snapshot.snapshot_id
    assert _snapshot_ids(c) - before_snaps == {snapshot_id}, "one name, one snapshot"
    unpublish = csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target))
    send("NodeUnpublishVolume", node.NodeUnpublishVolume, unpublish)
    assert _mounts_at(target) == 0
    send("DeleteSnapshot", ctl.DeleteSnapshot, csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id))
    send("DeleteVolume", ctl.DeleteVolume, csi_pb2.DeleteVolumeRequest(volume_id=volume_id))
    assert _volume_ids(c) == before_vols and _snapshot_ids(c) == before_snaps


@pytest.mark.slow
def test_file_deadline_then_retry(client: CsiClient, btrfs_fs: str, fwork: Path) -> None:
    expired = deadline_rounds(lambda i, send: _round(client, fwork, btrfs_fs, i, send), ROUNDS, warmups=2)
    assert len(expired) >= 5, f"too few RPCs had a deadline expire mid-call: {sorted(expired)}"
    leftovers = [m.target for m in mount.mounts() if m.target.startswith(str(fwork / "kubelet" / "deadline"))]
    assert leftovers == []
