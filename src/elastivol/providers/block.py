"""What the block driver asks of the place where block volumes live (local pool or EBS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from elastivol.domain import Attachment, Capacity, ContentSource, Health, Snapshot, VolumeMode
from elastivol.params.block import BlockParameters
from elastivol.params.block_modify import ModifyPlan


@dataclass(frozen=True)
class VolumeSpec:
    """A validated request for a block volume. Sizes are already rounded to whole GiB."""

    name: str
    size_bytes: int
    zone: str
    params: BlockParameters
    mode: VolumeMode = VolumeMode.FILESYSTEM
    fs_type: str = "ext4"
    source: ContentSource | None = None


@dataclass(frozen=True)
class Volume:
    id: str
    name: str
    size_bytes: int
    zone: str
    params: dict[str, str]
    mode: VolumeMode = VolumeMode.FILESYSTEM
    fs_type: str = "ext4"
    source: ContentSource | None = None
    created_at: float = 0.0
    attachments: tuple[Attachment, ...] = ()
    # Empty when healthy; otherwise what is wrong (image missing, ...).
    abnormal: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def attached_nodes(self) -> list[str]:
        return [a.node_id for a in self.attachments]


class BlockProvider(Protocol):
    """Controller-side operations. Every method is synchronous and idempotent."""

    # Whether ``attach(readonly=True)`` makes the device read-only on the node (a loop device can
    # be; an EBS attachment cannot). Without it the driver does not offer PUBLISH_READONLY.
    readonly_attach: bool

    def health(self) -> Health: ...
    def zones(self) -> list[str]: ...
    def create_volume(self, spec: VolumeSpec) -> Volume: ...
    def delete_volume(self, volume_id: str) -> None: ...
    def get_volume(self, volume_id: str) -> Volume: ...
    def list_volumes(self) -> list[Volume]: ...
    def node_zone(self, node_id: str) -> str: ...
    def attach(self, volume_id: str, node_id: str, readonly: bool) -> dict[str, str]: ...
    def detach(self, volume_id: str, node_id: str) -> None: ...
    def capacity(self, zone: str | None) -> Capacity: ...
    def expand_volume(self, volume_id: str, new_size_bytes: int) -> Volume: ...
    # ControllerModifyVolume: make the volume what ``plan`` says (type, performance, tags); idempotent.
    def apply_modification(self, volume_id: str, plan: ModifyPlan) -> Volume: ...
    def create_snapshot(self, name: str, source_volume_id: str, tags: dict[str, str]) -> Snapshot: ...
    def delete_snapshot(self, snapshot_id: str) -> None: ...
    def get_snapshot(self, snapshot_id: str) -> Snapshot: ...
    def list_snapshots(self) -> list[Snapshot]: ...


class BlockNodeProvider(Protocol):
    """Node-side: turning an attached volume into a block device on this host."""

    def register_node(self, node_id: str, zone: str, max_volumes: int) -> None: ...
    def attach_device(self, volume_id: str, publish_context: dict[str, str]) -> str: ...
    def detach_device(self, volume_id: str) -> None: ...
    def find_device(self, volume_id: str) -> str | None: ...
    def volume_exists(self, volume_id: str) -> bool: ...
    def refresh_device(self, volume_id: str) -> int: ...
    # Performance of the volume's device: for a pod (publish), and again with new figures (resize, modify).
    def limit_io(self, volume_id: str, pod_uid: str) -> None: ...
    def update_io_limits(self, volume_id: str) -> list[str]: ...
