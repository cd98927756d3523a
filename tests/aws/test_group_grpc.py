"""Volume group snapshots with --provider aws through the real gRPC socket (EC2 CreateSnapshots on moto)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from tests.aws.support import ZONE_A, AwsServer, Moto, start_server
from tests.helpers import Vol, expect_error, new_volume

GiB = 1 << 30


@pytest.fixture(scope="module")
def server(aws_work: Path, aws_env: dict[str, str]) -> Iterator[AwsServer]:
    work = aws_work / f"group-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    srv = start_server(work, cluster=f"group-{uuid.uuid4().hex[:8]}",
                       faults={"latency_ms": 2, "consistency_lag": 1, "attaching_polls": 1})
    yield srv
    srv.stop()


def _ready(client: CsiClient, group: csi_pb2.VolumeGroupSnapshot) -> csi_pb2.VolumeGroupSnapshot:
    ids = [s.snapshot_id for s in group.snapshots]
    for _ in range(100):
        got: csi_pb2.VolumeGroupSnapshot = client.group.GetVolumeGroupSnapshot(csi_pb2.GetVolumeGroupSnapshotRequest(
            group_snapshot_id=group.group_snapshot_id, snapshot_ids=ids)).group_snapshot
        if got.ready_to_use:
            return got
        time.sleep(0.05)
    raise AssertionError(f"group {group.group_snapshot_id} never became ready")


def test_group_snapshot_of_volumes_on_one_instance(server: AwsServer, aws_work: Path, make_instance: Any,
                                                   moto: Moto) -> None:
    client = server.client()
    node, other_node = make_instance(ZONE_A), make_instance(ZONE_A)
    data, wal, apart = (new_volume(client, aws_work, f"pvc-{n}-{uuid.uuid4().hex[:6]}", node_id=node, zone=ZONE_A)
                        for n in ("data", "wal", "apart"))
    vols: list[Vol] = [data, wal, apart]
    for vol in (data, wal):
        vol.controller_publish()
    apart.node_id = other_node
    apart.controller_publish()

    mark = moto.mark()
    group = client.group.CreateVolumeGroupSnapshot(csi_pb2.CreateVolumeGroupSnapshotRequest(
        name=f"groupsnapshot-{uuid.uuid4()}", source_volume_ids=[data.id, wal.id]), timeout=120).group_snapshot
    calls = moto.counts(mark)
    print(f"\nEC2 calls for one group snapshot of 2 volumes: {dict(sorted(calls.items()))}")
    assert calls["CreateSnapshots"] == 1 and calls["CreateSnapshot"] == 0
    assert {s.source_volume_id for s in group.snapshots} == {data.id, wal.id}
    ready = _ready(client, group)
    assert {s.group_snapshot_id for s in ready.snapshots} == {group.group_snapshot_id}
    listed = {e.snapshot.snapshot_id: e.snapshot for e in
              client.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest()).entries}
    assert all(listed[s.snapshot_id].group_snapshot_id == group.group_snapshot_id for s in group.snapshots)

    # Across instances: refused, naming the volumes, the instances and what to do; nothing is cut.
    mark = moto.mark()
    details = expect_error(grpc.StatusCode.FAILED_PRECONDITION, client.group.CreateVolumeGroupSnapshot,
                           csi_pb2.CreateVolumeGroupSnapshotRequest(name="groupsnapshot-split",
                                                                    source_volume_ids=[data.id, apart.id]))
    assert f"{node} has {data.id}" in details and f"{other_node} has {apart.id}" in details and "one node" in details
    assert moto.counts(mark)["CreateSnapshots"] == 0

    ids = [s.snapshot_id for s in group.snapshots]
    client.group.DeleteVolumeGroupSnapshot(csi_pb2.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id=group.group_snapshot_id, snapshot_ids=ids))
    expect_error(grpc.StatusCode.NOT_FOUND, client.group.GetVolumeGroupSnapshot,
                 csi_pb2.GetVolumeGroupSnapshotRequest(group_snapshot_id=group.group_snapshot_id, snapshot_ids=ids))
    for vol in vols:
        vol.controller_unpublish()
        vol.delete()
