"""Plain domain types shared by the drivers and every provider. No protobuf here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

# Nodes publish both keys: ours, and the well-known one that schedulers and users filter on.
ZONE_KEY = "topology.elastivol.io/zone"
K8S_ZONE_KEY = "topology.kubernetes.io/zone"

# The one table of filesystems: what a block volume may be formatted with (StorageClass fstype,
# volume capability), and which of those are the ext family (mke2fs, resize2fs, e2fsck).
EXT_FS_TYPES = ("ext2", "ext3", "ext4")
VOLUME_FS_TYPES = (*EXT_FS_TYPES, "xfs")


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
class AccessPointSpec:
    """A validated request for an access point. ``directory`` is final (basePath, pattern, suffix applied)."""

    name: str  # the CSI volume name: idempotency key
    fs_id: str
    directory: str  # absolute within the file system, e.g. "/dynamic_provisioning/pvc-1234"
    uid: int | None
    gid: int | None  # None: allocate from gid_range, race-free
    gid_range: tuple[int, int]
    perms: int  # e.g. 0o700
    capacity_bytes: int
    enforce_capacity: bool = False
    reuse: bool = False  # reuseAccessPoint: same name gets the existing one back
    delete_root_dir: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    source_snapshot_id: str = ""
    # reuseAccessPoint: what an existing access point is matched on (a hash of the PVC's name).
    reuse_key: str = ""
    # The StorageClass basePath, so a reused access point can be checked to lie under it.
    base_path: str = "/"
