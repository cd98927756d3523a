"""What the block and the file controller servicers share: their settings, the delete-by-id pattern,
ValidateVolumeCapabilities, ControllerGetCapabilities, DeleteSnapshot and ListSnapshots."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import ClassVar, Generic, TypeVar

import grpc

from elastivol import ids
from elastivol.csi import csi_pb2
from elastivol.drivers.common import Capability, capabilities, in_thread, paginate, require_text
from elastivol.drivers.snapshots import SnapshotStore, snapshot_message
from elastivol.errors import InvalidArgument, NotFound
from elastivol.locks import InFlight
from elastivol.units import GiB

P = TypeVar("P", bound=SnapshotStore)
CapabilityCheck = Callable[[Capability], None]


class ControllerRpcs(ABC, Generic[P]):
    """Mixed into each controller servicer; a servicer names its ``capabilities``
    and says how to find a volume's capability check and how to parse its parameters."""

    capabilities: ClassVar[tuple[csi_pb2.ControllerServiceCapability.RPC.Type, ...]]

    def __init__(self, provider: P, inflight: InFlight, *, default_size: int = GiB) -> None:
        self.provider = provider
        self.inflight = inflight
        self.default_size = default_size

    # -- what each driver supplies -----------------------------------------------------------
    # Abstract: a servicer that lacks one cannot be constructed at all.
    @abstractmethod
    async def _capability_check(self, volume_id: str) -> CapabilityCheck:
        """The check of a capability against the volume ``volume_id``; NotFound if there is none."""

    @abstractmethod
    def _parse_parameters(self, parameters: dict[str, str]) -> None:
        """Validate StorageClass parameters (raises InvalidArgument naming the wrong one)."""

    def _offered(self) -> Iterable[csi_pb2.ControllerServiceCapability.RPC.Type]:
        return self.capabilities

    # -- shared ------------------------------------------------------------------------------
    async def _delete_by_id(
        self, object_id: str, field: str, well_formed: Callable[[str], bool], delete: Callable[[str], None], what: str
    ) -> None:
        """An idempotent delete: a malformed id names nothing that exists, so it succeeds at once."""
        require_text(object_id, field)
        if well_formed(object_id):
            await self.inflight.run_in_thread((object_id,), delete, object_id, what=what)

    async def ValidateVolumeCapabilities(self, request: csi_pb2.ValidateVolumeCapabilitiesRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        require_text(request.volume_id, "volume_id")
        caps = capabilities(request.volume_capabilities)
        check = await self._capability_check(request.volume_id)
        if request.parameters:
            self._parse_parameters(dict(request.parameters))
        try:
            for cap in caps:
                check(cap)
        except InvalidArgument as exc:
            return csi_pb2.ValidateVolumeCapabilitiesResponse(message=exc.message)
        confirmed = csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=dict(request.volume_context),
            volume_capabilities=list(request.volume_capabilities),
            parameters=dict(request.parameters),
        )
        return csi_pb2.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    async def ControllerGetCapabilities(self, request: csi_pb2.ControllerGetCapabilitiesRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ControllerGetCapabilitiesResponse:
        caps = [
            csi_pb2.ControllerServiceCapability(rpc=csi_pb2.ControllerServiceCapability.RPC(type=t))
            for t in self._offered()
        ]
        return csi_pb2.ControllerGetCapabilitiesResponse(capabilities=caps)

    # -- snapshots ---------------------------------------------------------------------------
    async def DeleteSnapshot(self, request: csi_pb2.DeleteSnapshotRequest, context: grpc.aio.ServicerContext) -> csi_pb2.DeleteSnapshotResponse:
        await self._delete_by_id(
            request.snapshot_id, "snapshot_id", ids.is_snapshot_id, self.provider.delete_snapshot, "DeleteSnapshot"
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
