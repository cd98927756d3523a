"""The group controller's group_snapshot_id checks, before any provider call."""

from __future__ import annotations

from typing import Any

import grpc

from elastivol.csi import csi_pb2
from elastivol.drivers.block.group import BlockGroupController
from elastivol.locks import InFlight
from tests.unit.servicers.fakes import FakeContext
from tests.unit.servicers.support import expect

C = grpc.StatusCode


class NoGroups:
    """A provider that fails the test if the servicer asks it anything."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the provider was asked for {name} on a request the servicer should settle alone")


def test_group_snapshot_id_checks(inflight: InFlight) -> None:
    ctl = BlockGroupController(NoGroups(), inflight)
    ctx: Any = FakeContext()
    no_id = "group_snapshot_id is required"
    members = ["snap-0123456789abcdef0"]
    expect(C.INVALID_ARGUMENT, ctl.DeleteVolumeGroupSnapshot(
        csi_pb2.DeleteVolumeGroupSnapshotRequest(snapshot_ids=members), ctx), no_id)
    expect(C.INVALID_ARGUMENT, ctl.GetVolumeGroupSnapshot(
        csi_pb2.GetVolumeGroupSnapshotRequest(snapshot_ids=members), ctx), no_id)
    # A malformed id names no group: deleting it is done, getting it is NOT_FOUND with the id quoted.
    malformed = "vgs-not-hex"
    expect(C.OK, ctl.DeleteVolumeGroupSnapshot(
        csi_pb2.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=malformed), ctx))
    expect(C.NOT_FOUND, ctl.GetVolumeGroupSnapshot(
        csi_pb2.GetVolumeGroupSnapshotRequest(group_snapshot_id=malformed), ctx),
        f"group snapshot {malformed!r} does not exist")
