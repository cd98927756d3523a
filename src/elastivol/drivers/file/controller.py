"""Controller service of the file driver (EFS-style shared volumes: one access point per volume).

There is no attach step (the CSIDriver has ``attachRequired: false``): ControllerPublish is not
advertised. Volumes carry no accessible_topology, so the external-provisioner writes no node
affinity and the scheduler treats them as reachable from every zone, as EFS's regional file
systems are.
"""

from __future__ import annotations

import grpc

from elastivol import ids
from elastivol.csi import csi_pb2
from elastivol.drivers.common import (
    capabilities,
    capability,
    in_thread,
    paginate,
    require,
    require_text,
)
from elastivol.drivers.controller_rpcs import CapabilityCheck, ControllerRpcs
from elastivol.drivers.file.capability import check_file_capability
from elastivol.drivers.file.catalog import resolve
from elastivol.drivers.snapshots import snapshot_message
from elastivol.errors import InvalidArgument, NotFound, OutOfRange, Unimplemented
from elastivol.params.file import (
    CSI_PREFIX,
    VolumeHandle,
    access_point_spec,
    parse_file_parameters,
    parse_volume_handle,
)
from elastivol.providers.file import AccessPoint, FileProvider

_RPC = csi_pb2.ControllerServiceCapability.RPC
CONTROLLER_CAPABILITIES = (
    _RPC.CREATE_DELETE_VOLUME,
    _RPC.LIST_VOLUMES,
    _RPC.CREATE_DELETE_SNAPSHOT,
    _RPC.LIST_SNAPSHOTS,
    _RPC.EXPAND_VOLUME,
    _RPC.GET_VOLUME,
    _RPC.VOLUME_CONDITION,
    _RPC.SINGLE_NODE_MULTI_WRITER,
)


def handle_or_not_found(volume_id: str, what: str = "volume") -> VolumeHandle:
    """A parsed id, or NotFound: a malformed id cannot name anything that exists."""
    try:
        return parse_volume_handle(volume_id)
    except InvalidArgument as exc:
        raise NotFound(f"{what} {volume_id[:80]!r} does not exist ({exc.message})") from None


def volume_message(ap: AccessPoint, source: csi_pb2.VolumeContentSource | None = None) -> csi_pb2.Volume:
    # For people reading the PV; the node never trusts these, it reads the pool's records.
    context = {
        "storage.elastivol.io/directory": ap.directory,
        "storage.elastivol.io/uid": str(ap.uid),
        "storage.elastivol.io/gid": str(ap.gid),
    }
    msg = csi_pb2.Volume(capacity_bytes=ap.capacity_bytes, volume_id=ap.volume_id, volume_context=context)
    if source is not None:
        msg.content_source.CopyFrom(source)
    return msg


def capacity_bytes(rng: csi_pb2.CapacityRange, default: int) -> int:
    """The capacity to record (and, with enforceCapacity, to enforce): byte-exact, no rounding."""
    required, limit = rng.required_bytes, rng.limit_bytes
    if required < 0 or limit < 0:
        raise InvalidArgument("capacity_range values must not be negative")
    if limit and required > limit:
        raise OutOfRange(f"required_bytes {required} is larger than limit_bytes {limit}")
    if required:
        return required
    return min(default, limit) if limit else default


def _check_snapshot_parameters(parameters: dict[str, str]) -> None:
    for key in parameters:
        if not key.startswith(CSI_PREFIX):
            raise InvalidArgument(
                f"VolumeSnapshotClass parameter {key!r} is not supported: file snapshots take no parameters"
            )


def _is_volume_token(token: str) -> bool:
    try:
        return bool(parse_volume_handle(token).ap_id)
    except InvalidArgument:
        return False


class FileController(ControllerRpcs[FileProvider]):
    capabilities = CONTROLLER_CAPABILITIES

    async def _capability_check(self, volume_id: str) -> CapabilityCheck:
        await self._resolve(handle_or_not_found(volume_id))
        return check_file_capability

    def _parse_parameters(self, parameters: dict[str, str]) -> None:
        parse_file_parameters(parameters)

    # -- volumes ----------------------------------------------------------------------------
    async def CreateVolume(self, request: csi_pb2.CreateVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.CreateVolumeResponse:
        require_text(request.name, "name", max_len=256)
        for cap in capabilities(request.volume_capabilities):
            check_file_capability(cap)
        params = parse_file_parameters(dict(request.parameters))
        size = capacity_bytes(request.capacity_range, self.default_size)
        source_msg: csi_pb2.VolumeContentSource | None = None
        snapshot_id = ""
        if request.HasField("volume_content_source"):
            source_msg = request.volume_content_source
            which = source_msg.WhichOneof("type")
            if which == "snapshot":
                snapshot_id = source_msg.snapshot.snapshot_id
                require(snapshot_id, "volume_content_source.snapshot.snapshot_id")
                if not ids.is_snapshot_id(snapshot_id):
                    raise NotFound(f"snapshot {snapshot_id[:80]!r} does not exist")
            else:
                raise InvalidArgument(
                    "file volumes can be restored from a snapshot, not cloned from a volume: take a VolumeSnapshot "
                    "of the source and restore that"
                )
        if not ids.is_filesystem_id(params.fs_id):
            raise InvalidArgument(
                f"File System does not exist: parameter fileSystemId {params.fs_id[:80]!r} is not a file system id (fs- followed by 17 hex "
                "characters); `elastivol fs list` shows the registered file systems"
            )
        try:
            await in_thread(self.provider.get_filesystem, params.fs_id)
        except NotFound as exc:
            raise InvalidArgument(f"File System does not exist (parameter fileSystemId): {exc.message}") from None
        spec = access_point_spec(params, request.name, size, source_snapshot_id=snapshot_id)
        ap = await self.inflight.run_in_thread(
            (request.name, snapshot_id), self.provider.create_access_point, spec, what="CreateVolume"
        )
        return csi_pb2.CreateVolumeResponse(volume=volume_message(ap, source_msg))

    async def DeleteVolume(self, request: csi_pb2.DeleteVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.DeleteVolumeResponse:
        require_text(request.volume_id, "volume_id")
        try:
            handle = parse_volume_handle(request.volume_id)
        except InvalidArgument:
            return csi_pb2.DeleteVolumeResponse()  # nothing with a malformed id can exist
        # Only a dynamic volume (fs-ID::fsap-ID) owns its access point. Static volumes, with or
        # without a subpath, name data that someone else made: never deleted.
        if handle.ap_id and not handle.subpath:
            await self.inflight.run_in_thread(
                (request.volume_id,), self.provider.delete_access_point, handle.fs_id, handle.ap_id,
                what="DeleteVolume",
            )
        return csi_pb2.DeleteVolumeResponse()

    async def _resolve(self, handle: VolumeHandle) -> AccessPoint | None:
        return await in_thread(resolve, self.provider, handle)

    def _condition(self, handle: VolumeHandle) -> csi_pb2.VolumeCondition:
        state = getattr(self.provider, "access_point_state", None)
        problem = state(handle.fs_id, handle.ap_id) if state is not None and handle.ap_id else ""
        return csi_pb2.VolumeCondition(abnormal=bool(problem), message=problem or "healthy")

    async def ListVolumes(self, request: csi_pb2.ListVolumesRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ListVolumesResponse:
        aps = await in_thread(self.provider.list_access_points)
        page, token = paginate(aps, lambda a: a.volume_id, request.starting_token, request.max_entries, _is_volume_token)
        entries = []
        for ap in page:
            condition = await in_thread(self._condition, VolumeHandle(ap.fs_id, "", ap.id))
            status = csi_pb2.ListVolumesResponse.VolumeStatus(volume_condition=condition)
            entries.append(csi_pb2.ListVolumesResponse.Entry(volume=volume_message(ap), status=status))
        return csi_pb2.ListVolumesResponse(entries=entries, next_token=token)

    async def ControllerGetVolume(self, request: csi_pb2.ControllerGetVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ControllerGetVolumeResponse:
        require_text(request.volume_id, "volume_id")
        handle = handle_or_not_found(request.volume_id)
        ap = await self._resolve(handle)
        if ap is not None and not handle.subpath:
            msg = volume_message(ap)
        else:
            msg = csi_pb2.Volume(volume_id=request.volume_id)  # a static volume: no recorded capacity
        condition = await in_thread(self._condition, handle)
        status = csi_pb2.ControllerGetVolumeResponse.VolumeStatus(volume_condition=condition)
        return csi_pb2.ControllerGetVolumeResponse(volume=msg, status=status)

    # -- not offered ------------------------------------------------------------------------
    async def ControllerPublishVolume(self, request: csi_pb2.ControllerPublishVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ControllerPublishVolumeResponse:
        raise Unimplemented(
            "file volumes have no attach step: deploy the CSIDriver with attachRequired: false (no external-attacher)"
        )

    async def ControllerUnpublishVolume(self, request: csi_pb2.ControllerUnpublishVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ControllerUnpublishVolumeResponse:
        raise Unimplemented("file volumes have no attach step, so there is nothing to detach")

    async def GetCapacity(self, request: csi_pb2.GetCapacityRequest, context: grpc.aio.ServicerContext) -> csi_pb2.GetCapacityResponse:
        raise Unimplemented("file systems are elastic and zone-free: the file driver does not report capacity")

    # -- expansion ---------------------------------------------------------------------------
    async def ControllerExpandVolume(self, request: csi_pb2.ControllerExpandVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ControllerExpandVolumeResponse:
        require_text(request.volume_id, "volume_id")
        require(request.HasField("capacity_range"), "capacity_range")
        if request.HasField("volume_capability"):
            check_file_capability(capability(request.volume_capability))
        required, limit = request.capacity_range.required_bytes, request.capacity_range.limit_bytes
        if required <= 0 or limit < 0:
            raise InvalidArgument("capacity_range.required_bytes must be positive and limit_bytes not negative")
        if limit and required > limit:
            raise OutOfRange(f"required_bytes {required} is larger than limit_bytes {limit}")
        handle = handle_or_not_found(request.volume_id)
        if not handle.ap_id or handle.subpath:
            # A static volume has no capacity of its own to change; say yes, as there is nothing to do.
            await in_thread(self.provider.get_filesystem, handle.fs_id)
            return csi_pb2.ControllerExpandVolumeResponse(capacity_bytes=required, node_expansion_required=False)
        ap = await self.inflight.run_in_thread(
            (request.volume_id,), self.provider.expand_access_point, handle.fs_id, handle.ap_id, required,
            what="ControllerExpandVolume",
        )
        # The quota applies at once on every node: no NodeExpandVolume step.
        return csi_pb2.ControllerExpandVolumeResponse(capacity_bytes=ap.capacity_bytes, node_expansion_required=False)

    # -- snapshots ---------------------------------------------------------------------------
    async def CreateSnapshot(self, request: csi_pb2.CreateSnapshotRequest, context: grpc.aio.ServicerContext) -> csi_pb2.CreateSnapshotResponse:
        require_text(request.source_volume_id, "source_volume_id")
        require_text(request.name, "name", max_len=256)
        _check_snapshot_parameters(dict(request.parameters))
        handle = handle_or_not_found(request.source_volume_id, "source volume")
        if not handle.ap_id or handle.subpath:
            raise InvalidArgument(
                f"source_volume_id {request.source_volume_id} is a static volume; snapshots are taken of access point volumes "
                "(fs-ID::fsap-ID), whose directory elastivol manages"
            )
        snap = await self.inflight.run_in_thread(
            (request.name, request.source_volume_id),
            self.provider.create_snapshot, request.name, handle.fs_id, handle.ap_id, {},
            what="CreateSnapshot",
        )
        return csi_pb2.CreateSnapshotResponse(snapshot=snapshot_message(snap))
