"""Plain domain types shared by the drivers and every provider. No protobuf here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

GiB = 1 << 30
MiB = 1 << 20

# Nodes publish both keys: ours, and the well-known one that schedulers and users filter on.
ZONE_KEY = "topology.elastivol.io/zone"
K8S_ZONE_KEY = "topology.kubernetes.io/zone"


class AccessMode(Enum):
    """CSI access modes, with the same numbering as the spec's enum."""

    SINGLE_NODE_WRITER = 1
    SINGLE_NODE_READER_ONLY = 2
    MULTI_NODE_READER_ONLY = 3
    MULTI_NODE_SINGLE_WRITER = 4
    MULTI_NODE_MULTI_WRITER = 5
    SINGLE_NODE_SINGLE_WRITER = 6
    SINGLE_NODE_MULTI_WRITER = 7

    @property
    def multi_node(self) -> bool:
        return self.name.startswith("MULTI_NODE")

    @property
    def read_only(self) -> bool:
        return self.name.endswith("READER_ONLY")


class VolumeMode(Enum):
    FILESYSTEM = "filesystem"
    BLOCK = "block"


@dataclass(frozen=True)
class Health:
    ready: bool
    reason: str = ""
    # Something a healthy plugin's operator should know (e.g. "no reflink: snapshots are full copies").
    notice: str = ""


@dataclass(frozen=True)
class ContentSource:
    """Where a new volume's data comes from."""

    kind: str  # "snapshot" or "volume"
    id: str


@dataclass(frozen=True)
class Attachment:
    node_id: str
    readonly: bool = False
    attached_at: float = 0.0
    device_path: str = ""


@dataclass(frozen=True)
class Capacity:
    available_bytes: int
    maximum_volume_size: int
    minimum_volume_size: int = 0


@dataclass(frozen=True)
class Snapshot:
    id: str
    name: str
    source_volume_id: str
    size_bytes: int
    created_at: float
    ready: bool = True
    # "filesystem" when the source was frozen around the copy, else "crash" (block level).
    consistency: str = "crash"
    tags: dict[str, str] = field(default_factory=dict)
    # The volume group snapshot this one was cut with (providers/groups.py), else "".
    group_snapshot_id: str = ""


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    zone: str
    max_volumes: int = 0
    last_seen: float = 0.0
