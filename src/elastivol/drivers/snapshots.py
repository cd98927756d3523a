"""The snapshot message and the snapshot store that both controllers' shared RPCs (controller_rpcs.py) use."""

from __future__ import annotations

from typing import Protocol

from elastivol.csi import csi_pb2
from elastivol.domain import Snapshot


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

