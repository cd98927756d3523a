"""Snapshot RPCs that the block and file controllers share word for word."""

from __future__ import annotations

from typing import Protocol

import grpc

from elastivol import ids
from elastivol.csi import csi_pb2
from elastivol.domain import Snapshot
from elastivol.drivers.common import in_thread, paginate, require_text
from elastivol.errors import NotFound
from elastivol.locks import InFlight


class SnapshotStore(Protocol):
    def delete_snapshot(self, snapshot_id: str) -> None: ...
    def get_snapshot(self, snapshot_id: str) -> Snapshot: ...
    def list_snapshots(self) -> list[Snapshot]: ...


def snapshot_message(snap: Snapshot) -> csi_pb2.Snapshot:
    nanos = int(snap.created_at * 1e9)
    return csi_pb2.Snapshot(
        size_bytes=snap.size_bytes,
        snapshot_id=snap.id,
        source_volume_id=snap.source_volume_id,
        creation_time={"seconds": nanos // 10**9, "nanos": nanos % 10**9},
        ready_to_use=snap.ready,
        group_snapshot_id=snap.group_snapshot_id,
    )


class SnapshotRpcs:
    """DeleteSnapshot and ListSnapshots over any provider with snapshots (mixin for controllers)."""

    provider: SnapshotStore
    inflight: InFlight

    async def DeleteSnapshot(self, request: csi_pb2.DeleteSnapshotRequest, context: grpc.aio.ServicerContext) -> csi_pb2.DeleteSnapshotResponse:
        require_text(request.snapshot_id, "snapshot_id")
        if ids.is_snapshot_id(request.snapshot_id):
            await self.inflight.run_in_thread(
                (request.snapshot_id,), self.provider.delete_snapshot, request.snapshot_id, what="DeleteSnapshot"
            )
        return csi_pb2.DeleteSnapshotResponse()

    async def ListSnapshots(self, request: csi_pb2.ListSnapshotsRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ListSnapshotsResponse:
        if request.snapshot_id:
            if not ids.is_snapshot_id(request.snapshot_id):
                return csi_pb2.ListSnapshotsResponse()
            try:
                snaps = [await in_thread(self.provider.get_snapshot, request.snapshot_id)]
            except NotFound:
                return csi_pb2.ListSnapshotsResponse()
        else:
            snaps = await in_thread(self.provider.list_snapshots)
        if request.source_volume_id:
            snaps = [s for s in snaps if s.source_volume_id == request.source_volume_id]
        page, token = paginate(snaps, lambda s: s.id, request.starting_token, request.max_entries, ids.is_snapshot_id)
        entries = [csi_pb2.ListSnapshotsResponse.Entry(snapshot=snapshot_message(s)) for s in page]
        return csi_pb2.ListSnapshotsResponse(entries=entries, next_token=token)
