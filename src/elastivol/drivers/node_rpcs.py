"""What the block and the file node servicers share: their settings, the host seam, the mount-option
check, the first checks of NodeUnpublishVolume, NodeGetVolumeStats and NodeExpandVolume,
NodeGetCapabilities and NodeGetInfo."""

from __future__ import annotations

from typing import ClassVar, Generic, NotRequired, TypedDict, TypeVar

import grpc

from elastivol.csi import csi_pb2
from elastivol.drivers.common import Capability, guarded_path, require_text, topology, volume_path
from elastivol.errors import FailedPrecondition
from elastivol.locks import InFlight
from elastivol.node.host import HostOps, RealHost
from elastivol.node.mount import parse_options
from elastivol.node.paths import PathGuard

P = TypeVar("P")


class NodeSettings(TypedDict):
    """NodeRpcs' keyword settings besides ``max_volumes``, for a servicer that passes them on unchanged
    (mypy holds the two lists together; NodeRpcs' own signature refuses an unknown name at run time)."""

    node_id: str
    zone: str
    allow_privileged_mount_options: NotRequired[bool]
    host: NotRequired[HostOps | None]


class NodeRpcs(Generic[P]):
    """Mixed into each node servicer; a servicer names its ``capabilities``."""

    capabilities: ClassVar[tuple[csi_pb2.NodeServiceCapability.RPC.Type, ...]]

    def __init__(self, provider: P, inflight: InFlight, guard: PathGuard, *, node_id: str, zone: str, max_volumes: int,
                 allow_privileged_mount_options: bool = False, host: HostOps | None = None) -> None:
        self.provider = provider
        self.host: HostOps = host if host is not None else RealHost()  # None: the real host
        self.inflight = inflight
        self.guard = guard
        self.node_id = node_id
        self.zone = zone
        self.max_volumes = max_volumes
        self.allow_privileged = allow_privileged_mount_options

    def _mount_options(self, cap: Capability) -> tuple[str, ...]:
        # Validates every word (no smuggled options, no privilege-widening ones unless allowed). For a file
        # volume, NFS/EFS transport words (tls, nfsvers=4.1...) have nothing to act on in a bind: ignored.
        parse_options(cap.mount_flags, allow_privileged=self.allow_privileged)
        return cap.mount_flags

    async def _unpublish_target(self, request: csi_pb2.NodeUnpublishVolumeRequest) -> str:
        """NodeUnpublishVolume's checks before any work: both fields present, the target inside the allowed roots."""
        require_text(request.volume_id, "volume_id")
        require_text(request.target_path, "target_path")
        return await guarded_path(self.guard, request.target_path, "target_path")

    async def _volume_path(self, request: csi_pb2.NodeGetVolumeStatsRequest | csi_pb2.NodeExpandVolumeRequest) -> str:
        """NodeGetVolumeStats' and NodeExpandVolume's first checks: both fields present, and the path one
        that could hold the volume (NOT_FOUND if not)."""
        require_text(request.volume_id, "volume_id")
        require_text(request.volume_path, "volume_path")
        return await volume_path(self.guard, request.volume_id, request.volume_path)

    async def NodeGetCapabilities(self, request: csi_pb2.NodeGetCapabilitiesRequest, context: grpc.aio.ServicerContext) -> csi_pb2.NodeGetCapabilitiesResponse:
        caps = [csi_pb2.NodeServiceCapability(rpc=csi_pb2.NodeServiceCapability.RPC(type=t)) for t in self.capabilities]
        return csi_pb2.NodeGetCapabilitiesResponse(capabilities=caps)

    async def NodeGetInfo(self, request: csi_pb2.NodeGetInfoRequest, context: grpc.aio.ServicerContext) -> csi_pb2.NodeGetInfoResponse:
        return csi_pb2.NodeGetInfoResponse(
            node_id=self.node_id,
            max_volumes_per_node=self.max_volumes,
            accessible_topology=topology(self.zone),
        )


def usage_messages(
    total: int, available: int, used: int, inodes: tuple[int, int, int] | None
) -> list[csi_pb2.VolumeUsage]:
    """NodeGetVolumeStats' usage: bytes, then inodes (total, available, used) where they are counted."""
    usage = [csi_pb2.VolumeUsage(unit=csi_pb2.VolumeUsage.BYTES, total=total, available=available, used=used)]
    if inodes is not None:
        inodes_total, inodes_available, inodes_used = inodes
        usage.append(
            csi_pb2.VolumeUsage(
                unit=csi_pb2.VolumeUsage.INODES, total=inodes_total, available=inodes_available, used=inodes_used
            )
        )
    return usage


def refuse_second_publication(others: list[str]) -> None:
    """A ReadWriteOncePod volume already published at another target on this node is refused."""
    if others:
        raise FailedPrecondition(
            f"the volume is ReadWriteOncePod (SINGLE_NODE_SINGLE_WRITER) and already published at {others[0]}"
        )
