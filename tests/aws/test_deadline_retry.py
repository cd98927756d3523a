"""The block driver on the aws provider, called as a CO calls it: each mutating RPC with a deadline
that expires mid-call, then the same request at once. Against moto (with the fault layer's
latency and state transitions): one EC2 volume per name, one attachment, one snapshot per
name, one mount per path, never INTERNAL."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from elastivol.client import MOUNT, volume_capability
from elastivol.csi import csi_pb2
from elastivol.node import mount
from tests.aws.support import ZONE_A, AwsServer, Disks
from tests.aws.test_block_grpc import cluster_id, disks, node, server, work  # noqa: F401 (fixtures)
from tests.reliability.deadline import deadline_rounds

GiB = 1 << 30
ROUNDS = int(os.environ.get("ELASTIVOL_AWS_DEADLINE_ROUNDS", "12"))
CAP = volume_capability(MOUNT, fs_type="xfs")


def _tagged(raw_ec2: Any, kind: str, tag: str, value: str) -> list[str]:
    filters = [{"Name": f"tag:{tag}", "Values": [value]}]
    if kind == "volume":
        return [v["VolumeId"] for v in raw_ec2.describe_volumes(Filters=filters)["Volumes"]]
    return [s["SnapshotId"] for s in raw_ec2.describe_snapshots(OwnerIds=["self"], Filters=filters)["Snapshots"]]


def _mounts_at(path: Path) -> int:
    return sum(1 for m in mount.mounts() if m.target == str(path))


def _round(srv: AwsServer, base: Path, fake: Disks, instance: str, raw_ec2: Any, i: int, send: Any) -> None:
    c = srv.client()
    ctl, nd = c.controller, c.node
    name = f"pvc-deadline-{i}-{uuid.uuid4().hex[:6]}"
    snap_name = f"snapshot-deadline-{i}-{uuid.uuid4().hex[:6]}"
    staging = base / "kubelet" / "staging" / name
    target = base / "kubelet" / "pods" / name / "mount"
    create = csi_pb2.CreateVolumeRequest(
        name=name, capacity_range=csi_pb2.CapacityRange(required_bytes=GiB), volume_capabilities=[CAP],
        parameters={"type": "gp3"})
    create.accessibility_requirements.requisite.add(segments={"topology.kubernetes.io/zone": ZONE_A})
    volume_id = send("CreateVolume", ctl.CreateVolume, create).volume.volume_id
    assert _tagged(raw_ec2, "volume", "CSIVolumeName", name) == [volume_id], "one name, one EBS volume"
    publish = csi_pb2.ControllerPublishVolumeRequest(volume_id=volume_id, node_id=instance, volume_capability=CAP)
    context = dict(send("ControllerPublishVolume", ctl.ControllerPublishVolume, publish).publish_context)
    attachments = raw_ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]
    assert [a["InstanceId"] for a in attachments] == [instance], "one attach, one attachment"
    fake.attach(volume_id, size_gib=1)
    stage = csi_pb2.NodeStageVolumeRequest(
        volume_id=volume_id, staging_target_path=str(staging), volume_capability=CAP, publish_context=context,
        volume_context={"fsType": "xfs"})
    send("NodeStageVolume", nd.NodeStageVolume, stage)
    assert _mounts_at(staging) == 1
    node_publish = csi_pb2.NodePublishVolumeRequest(
        volume_id=volume_id, staging_target_path=str(staging), target_path=str(target), volume_capability=CAP,
        publish_context=context)
    send("NodePublishVolume", nd.NodePublishVolume, node_publish)
    assert _mounts_at(target) == 1
    expand = csi_pb2.ControllerExpandVolumeRequest(
        volume_id=volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GiB), volume_capability=CAP)
    assert send("ControllerExpandVolume", ctl.ControllerExpandVolume, expand).capacity_bytes == 2 * GiB
    fake.grow(volume_id, 2)
    node_expand = csi_pb2.NodeExpandVolumeRequest(
        volume_id=volume_id, volume_path=str(target), staging_target_path=str(staging),
        capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GiB), volume_capability=CAP)
    send("NodeExpandVolume", nd.NodeExpandVolume, node_expand)
    snap = csi_pb2.CreateSnapshotRequest(name=snap_name, source_volume_id=volume_id)
    snapshot_id = send("CreateSnapshot", ctl.CreateSnapshot, snap).snapshot.snapshot_id
    assert _tagged(raw_ec2, "snapshot", "CSIVolumeSnapshotName", snap_name) == [snapshot_id]
    send("NodeUnpublishVolume", nd.NodeUnpublishVolume,
         csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target)))
    send("NodeUnstageVolume", nd.NodeUnstageVolume,
         csi_pb2.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=str(staging)))
    assert _mounts_at(target) == 0 and _mounts_at(staging) == 0
    fake.detach(volume_id)
    send("ControllerUnpublishVolume", ctl.ControllerUnpublishVolume,
         csi_pb2.ControllerUnpublishVolumeRequest(volume_id=volume_id, node_id=instance))
    assert raw_ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"] == []
    send("DeleteSnapshot", ctl.DeleteSnapshot, csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id))
    send("DeleteVolume", ctl.DeleteVolume, csi_pb2.DeleteVolumeRequest(volume_id=volume_id))
    assert _tagged(raw_ec2, "volume", "CSIVolumeName", name) == []
    assert _tagged(raw_ec2, "snapshot", "CSIVolumeSnapshotName", snap_name) == []


@pytest.mark.slow
def test_aws_block_deadline_then_retry(server: AwsServer, work: Path, disks: Disks, node: str,  # noqa: F811
                                       raw_ec2: Any) -> None:
    expired = deadline_rounds(lambda i, send: _round(server, work, disks, node, raw_ec2, i, send), ROUNDS)
    assert len(expired) >= 8, f"too few RPCs had a deadline expire mid-call: {sorted(expired)}"
