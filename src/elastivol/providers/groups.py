"""What the block driver's GroupController asks of a provider: snapshots of several volumes at one instant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from elastivol.domain import Snapshot

# Where a member snapshot records its group (a pool record field locally, an EBS tag on aws).
GROUP_TAG = "elastivol.io/group-snapshot-id"


@dataclass(frozen=True)
class GroupSnapshot:
    id: str
    name: str
    source_volume_ids: tuple[str, ...]
    snapshots: tuple[Snapshot, ...]
    created_at: float
    ready: bool
    # Seconds between the first filesystem freeze and the last thaw (local provider); None when
    # nothing was frozen (no member staged on this host) or the backend cuts the set itself (EBS).
    freeze_window_s: float | None = None
    # Every member the group was cut with, also one since deleted on its own (a provider that
    # keeps a record of the group knows them; otherwise the members found).
    recorded_ids: tuple[str, ...] = ()

    @property
    def snapshot_ids(self) -> list[str]:
        return list(self.recorded_ids) or [s.id for s in self.snapshots]


class GroupSnapshotProvider(Protocol):
    """Every method is synchronous and idempotent; ids are already checked for their format."""

    def create_group_snapshot(self, name: str, source_volume_ids: list[str], tags: dict[str, str]) -> GroupSnapshot: ...
    def get_group_snapshot(self, group_snapshot_id: str) -> GroupSnapshot: ...
    def delete_group_snapshot(self, group_snapshot_id: str) -> None: ...
