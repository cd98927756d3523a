"""Controller service of the block driver (EBS-style volumes)."""

from __future__ import annotations

import grpc
from google.protobuf.wrappers_pb2 import Int64Value

from elastivol import ids
from elastivol.csi import csi_pb2
from elastivol.domain import ContentSource, VolumeMode
from elastivol.drivers.block.capability import check_block_capability, check_fs_type
from elastivol.drivers.block.modify import ModifyRpcs
from elastivol.drivers.common import (
    Capability,
    capabilities,
    capability,
    choose_zone,
    in_thread,
    paginate,
    require,
    require_text,
    topology,
    zone_of,
)
from elastivol.drivers.controller_rpcs import CapabilityCheck, ControllerRpcs
from elastivol.drivers.snapshots import snapshot_message
from elastivol.errors import Exhausted, InvalidArgument, NotFound, OutOfRange
from elastivol.params.block import (
    MKFS_KEYS,
    mkfs_args,
    parse_block_parameters,
    recompute_for_resize,
    resolve_performance,
    round_capacity,
    size_limits_gib,
)
from elastivol.params.block_modify import creation_parameters
from elastivol.providers.block import BlockProvider, Volume, VolumeSpec
from elastivol.units import GiB

DEFAULT_FS_TYPE = "ext4"
SNAPSHOT_PARAM_PREFIXES = ("csi.storage.k8s.io/",)

_RPC = csi_pb2.ControllerServiceCapability.RPC
CONTROLLER_CAPABILITIES = (
    _RPC.CREATE_DELETE_VOLUME,
    _RPC.PUBLISH_UNPUBLISH_VOLUME,
    _RPC.LIST_VOLUMES,
    _RPC.GET_CAPACITY,
    _RPC.CREATE_DELETE_SNAPSHOT,
    _RPC.LIST_SNAPSHOTS,
    _RPC.CLONE_VOLUME,
    _RPC.PUBLISH_READONLY,
    _RPC.EXPAND_VOLUME,
    _RPC.LIST_VOLUMES_PUBLISHED_NODES,
    _RPC.VOLUME_CONDITION,
    _RPC.GET_VOLUME,
    _RPC.SINGLE_NODE_MULTI_WRITER,
    _RPC.MODIFY_VOLUME,
)


def volume_message(volume: Volume, source: csi_pb2.VolumeContentSource | None = None) -> csi_pb2.Volume:
    context = {k: v for k, v in volume.params.items() if k in MKFS_KEYS}  # mkfs options ride to NodeStageVolume
    if volume.mode is VolumeMode.FILESYSTEM:
        context["fsType"] = volume.fs_type
    msg = csi_pb2.Volume(
        capacity_bytes=volume.size_bytes,
        volume_id=volume.id,
        volume_context=context,
        accessible_topology=[topology(volume.zone)],
    )
    if source is not None:
        msg.content_source.CopyFrom(source)
    elif volume.source is not None:
        msg.content_source.CopyFrom(content_source_message(volume.source))
    return msg


def content_source_message(source: ContentSource) -> csi_pb2.VolumeContentSource:
    if source.kind == "snapshot":
        return csi_pb2.VolumeContentSource(
            snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=source.id)
        )
    return csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=source.id))


def parse_snapshot_tags(parameters: dict[str, str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for key, value in parameters.items():
        if key.startswith(SNAPSHOT_PARAM_PREFIXES):
            continue
        if not key.lower().startswith("tagspecification_") or not key[len("tagSpecification_"):].isdigit():
            raise InvalidArgument(
                f"VolumeSnapshotClass parameter {key!r} is not supported; only tagSpecification_N "
                '("key=value") is accepted'
            )
        tag_key, sep, tag_value = value.partition("=")
        if not sep or not tag_key.strip():
            raise InvalidArgument(f'{key} must look like "key=value"; got {value!r}')
        tags[tag_key.strip()] = tag_value.strip()
    return tags


class BlockController(ControllerRpcs[BlockProvider], ModifyRpcs):
    provider: BlockProvider  # also what ModifyRpcs needs
    capabilities = CONTROLLER_CAPABILITIES

    def _offered(self) -> tuple[csi_pb2.ControllerServiceCapability.RPC.Type, ...]:
        # PUBLISH_READONLY only where an attachment can really be read-only (see BlockProvider).
        return tuple(t for t in self.capabilities if t != _RPC.PUBLISH_READONLY or self.provider.readonly_attach)

    async def _capability_check(self, volume_id: str) -> CapabilityCheck:
        if not ids.is_volume_id(volume_id):
            raise NotFound(f"volume {volume_id[:80]!r} does not exist")
        volume = await in_thread(self.provider.get_volume, volume_id)
        return lambda cap: self._check_matches(volume, cap)

    def _parse_parameters(self, parameters: dict[str, str]) -> None:
        parse_block_parameters(parameters)

    # -- volumes ----------------------------------------------------------------------------
    async def CreateVolume(self, request: csi_pb2.CreateVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.CreateVolumeResponse:
        require_text(request.name, "name", max_len=256)
        caps = capabilities(request.volume_capabilities)
        # A claim's VolumeAttributesClass arrives as mutable_parameters; it overrides the StorageClass.
        params = parse_block_parameters(creation_parameters(dict(request.parameters), dict(request.mutable_parameters)))
        modes = {c.volume_mode for c in caps}
        if len(modes) > 1:
            raise InvalidArgument("volume_capabilities mix block and mount access; ask for one of them")
        volume_mode = modes.pop()
        for cap in caps:
            check_block_capability(cap, params)
        fs_type = ""
        if volume_mode is VolumeMode.FILESYSTEM:
            asked = {c.fs_type for c in caps if c.fs_type} | ({params.fs_type} if params.fs_type else set())
            if len(asked) > 1:
                raise InvalidArgument(f"conflicting fs types requested: {sorted(asked)}")
            fs_type = asked.pop() if asked else DEFAULT_FS_TYPE
            check_fs_type(fs_type)
        mkfs_args(params, fs_type or "ext4", volume_mode is VolumeMode.BLOCK)
        size = round_capacity(
            request.capacity_range.required_bytes,
            request.capacity_range.limit_bytes,
            params.volume_type,
            self.default_size,
        )
        resolve_performance(params, size // GiB)
        requirement = request.accessibility_requirements if request.HasField("accessibility_requirements") else None
        source: ContentSource | None = None
        source_msg: csi_pb2.VolumeContentSource | None = None
        if request.HasField("volume_content_source"):
            source_msg = request.volume_content_source
            which = source_msg.WhichOneof("type")
            if which == "snapshot":
                require(source_msg.snapshot.snapshot_id, "volume_content_source.snapshot.snapshot_id")
                source = ContentSource("snapshot", source_msg.snapshot.snapshot_id)
                if not ids.is_snapshot_id(source.id):
                    raise NotFound(f"snapshot {source.id[:80]!r} does not exist")
            elif which == "volume":
                require(source_msg.volume.volume_id, "volume_content_source.volume.volume_id")
                source = ContentSource("volume", source_msg.volume.volume_id)
                if not ids.is_volume_id(source.id):
                    raise NotFound(f"source volume {source.id[:80]!r} does not exist")
            else:
                raise InvalidArgument("volume_content_source must name a snapshot or a volume")
        zone = await self._zone_for(requirement, source)
        spec = VolumeSpec(
            name=request.name,
            size_bytes=size,
            zone=zone,
            params=params,
            mode=volume_mode,
            fs_type=fs_type or "",
            source=source,
        )
        keys = (request.name, *([source.id] if source else []))
        volume = await self.inflight.run_in_thread(keys, self.provider.create_volume, spec, what="CreateVolume")
        return csi_pb2.CreateVolumeResponse(volume=volume_message(volume, source_msg))

    async def _zone_for(self, requirement: csi_pb2.TopologyRequirement | None, source: ContentSource | None) -> str:
        served = await in_thread(self.provider.zones)
        if source is not None and source.kind == "volume":
            # A clone lives where its source lives; refuse a requirement that excludes it.
            src = await in_thread(self.provider.get_volume, source.id)
            if requirement is not None and (requirement.requisite or requirement.preferred):
                allowed = {zone_of(t) for t in [*requirement.requisite, *requirement.preferred]}
                if src.zone not in allowed:
                    raise Exhausted(
                        f"a clone must be in its source's zone: volume {src.id} is in zone {src.zone}, "
                        f"but the request allows only {', '.join(sorted(z for z in allowed if z))}"
                    )
            return src.zone
        return choose_zone(requirement, served)

    async def DeleteVolume(self, request: csi_pb2.DeleteVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.DeleteVolumeResponse:
        await self._delete_by_id(
            request.volume_id, "volume_id", ids.is_volume_id, self.provider.delete_volume, "DeleteVolume"
        )
        return csi_pb2.DeleteVolumeResponse()

    async def ControllerPublishVolume(self, request: csi_pb2.ControllerPublishVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ControllerPublishVolumeResponse:
        require_text(request.volume_id, "volume_id")
        require_text(request.node_id, "node_id", max_len=128)
        require(request.HasField("volume_capability"), "volume_capability")
        cap = capability(request.volume_capability)
        if not ids.is_volume_id(request.volume_id):
            raise NotFound(f"volume {request.volume_id[:80]!r} does not exist")
        if not ids.is_node_id(request.node_id):
            raise NotFound(f"node {request.node_id[:80]!r} does not exist")
        # Without PUBLISH_READONLY the field is not ours to honour (a CO sets it only when offered);
        # a reader-only access mode still makes the attachment read-only where that exists.
        readonly = (request.readonly and self.provider.readonly_attach) or cap.mode.read_only

        async def publish() -> dict[str, str]:
            volume = await in_thread(self.provider.get_volume, request.volume_id)
            self._check_matches(volume, cap)
            return await in_thread(self.provider.attach, request.volume_id, request.node_id, readonly)

        ctx = await self.inflight.run((request.volume_id,), publish, what="ControllerPublishVolume")
        return csi_pb2.ControllerPublishVolumeResponse(publish_context=ctx)

    @staticmethod
    def _check_matches(volume: Volume, cap: Capability) -> None:
        check_block_capability(cap, multi_attach=volume.params.get("multiAttach") == "true")
        # A volume made outside elastivol (a static PV on EBS) carries no record of its mode or fs type.
        if volume.extra.get("volume_mode") == "unknown":
            return
        if cap.volume_mode is not volume.mode:
            raise InvalidArgument(
                f"volume {volume.id} is a {volume.mode.value} volume but {cap.volume_mode.value} access was asked"
            )
        if cap.volume_mode is VolumeMode.FILESYSTEM and cap.fs_type and volume.fs_type and cap.fs_type != volume.fs_type:
            raise InvalidArgument(f"fs_type {cap.fs_type} does not match: volume {volume.id} is formatted {volume.fs_type}")

    async def ControllerUnpublishVolume(self, request: csi_pb2.ControllerUnpublishVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ControllerUnpublishVolumeResponse:
        require_text(request.volume_id, "volume_id")
        if not ids.is_volume_id(request.volume_id):
            return csi_pb2.ControllerUnpublishVolumeResponse()

        async def unpublish() -> None:
            if request.node_id:
                await in_thread(self.provider.detach, request.volume_id, request.node_id)
                return
            volume = await in_thread(self._get_or_none, request.volume_id)
            for node in volume.attached_nodes if volume else []:
                await in_thread(self.provider.detach, request.volume_id, node)

        await self.inflight.run((request.volume_id,), unpublish, what="ControllerUnpublishVolume")
        return csi_pb2.ControllerUnpublishVolumeResponse()

    def _get_or_none(self, volume_id: str) -> Volume | None:
        try:
            return self.provider.get_volume(volume_id)
        except NotFound:
            return None

    async def ListVolumes(self, request: csi_pb2.ListVolumesRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ListVolumesResponse:
        volumes = await in_thread(self.provider.list_volumes)
        page, token = paginate(volumes, lambda v: v.id, request.starting_token, request.max_entries, ids.is_volume_id)
        entries = []
        for v in page:
            status = csi_pb2.ListVolumesResponse.VolumeStatus(
                published_node_ids=v.attached_nodes,
                volume_condition=csi_pb2.VolumeCondition(abnormal=bool(v.abnormal), message=v.abnormal or "healthy"),
            )
            entries.append(csi_pb2.ListVolumesResponse.Entry(volume=volume_message(v), status=status))
        return csi_pb2.ListVolumesResponse(entries=entries, next_token=token)

    async def ControllerGetVolume(self, request: csi_pb2.ControllerGetVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ControllerGetVolumeResponse:
        require_text(request.volume_id, "volume_id")
        if not ids.is_volume_id(request.volume_id):
            raise NotFound(f"volume {request.volume_id[:80]!r} does not exist")
        v = await in_thread(self.provider.get_volume, request.volume_id)
        msg = volume_message(v)
        # Show the recorded parameters (and resolved performance) to `kubectl`-style tooling.
        msg.volume_context.update({f"elastivol.io/param.{k}": val for k, val in v.params.items()})
        msg.volume_context.update({f"elastivol.io/{k}": val for k, val in v.extra.items()})
        status = csi_pb2.ControllerGetVolumeResponse.VolumeStatus(
            published_node_ids=v.attached_nodes,
            volume_condition=csi_pb2.VolumeCondition(abnormal=bool(v.abnormal), message=v.abnormal or "healthy"),
        )
        return csi_pb2.ControllerGetVolumeResponse(volume=msg, status=status)

    async def GetCapacity(self, request: csi_pb2.GetCapacityRequest, context: grpc.aio.ServicerContext) -> csi_pb2.GetCapacityResponse:
        for i, cap in enumerate(request.volume_capabilities):
            check_block_capability(capability(cap, f"volume_capabilities[{i}]"))
        params = parse_block_parameters(dict(request.parameters))
        zone = zone_of(request.accessible_topology) if request.HasField("accessible_topology") else None
        cap_info = await in_thread(self.provider.capacity, zone)
        min_gib, max_gib = size_limits_gib(params.volume_type)
        available = cap_info.available_bytes
        largest = min(cap_info.maximum_volume_size, max_gib * GiB)
        largest -= largest % GiB
        if largest < min_gib * GiB:
            largest = 0
        return csi_pb2.GetCapacityResponse(
            available_capacity=available,
            maximum_volume_size=Int64Value(value=largest),
            minimum_volume_size=Int64Value(value=min_gib * GiB),
        )

    # -- expansion ---------------------------------------------------------------------------
    async def ControllerExpandVolume(self, request: csi_pb2.ControllerExpandVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ControllerExpandVolumeResponse:
        require_text(request.volume_id, "volume_id")
        require(request.HasField("capacity_range"), "capacity_range")
        required = request.capacity_range.required_bytes
        limit = request.capacity_range.limit_bytes
        if not ids.is_volume_id(request.volume_id):
            raise NotFound(f"volume {request.volume_id[:80]!r} does not exist")
        cap = capability(request.volume_capability) if request.HasField("volume_capability") else None
        if required < 0 or limit < 0:
            raise OutOfRange("capacity_range values must not be negative")

        async def expand() -> Volume:
            volume = await in_thread(self.provider.get_volume, request.volume_id)
            params = parse_block_parameters(volume.params)
            if cap is not None:
                self._check_matches(volume, cap)
            new_size = -(-required // GiB) * GiB
            if limit and new_size > limit:
                raise OutOfRange(f"{required} bytes rounded to whole GiB ({new_size}) exceeds limit_bytes {limit}")
            if new_size <= volume.size_bytes:
                # Already at least that big (a retry, or a resizer that lost track): nothing to do,
                # and the answer is the size the volume has. Volumes never shrink.
                if limit and volume.size_bytes > limit:
                    raise OutOfRange(
                        f"volume {volume.id} is already {volume.size_bytes} bytes, more than capacity_range.limit_bytes {limit}; "
                        "volumes cannot shrink"
                    )
                return volume
            _min_gib, max_gib = size_limits_gib(params.volume_type)
            if new_size > max_gib * GiB:
                raise OutOfRange(
                    f"capacity_range.required_bytes asks for {new_size // GiB} GiB; {params.volume_type} volumes can be "
                    f"at most {max_gib} GiB"
                )
            perf = recompute_for_resize(params, new_size // GiB)
            grown = await in_thread(self.provider.expand_volume, request.volume_id, new_size)
            setter = getattr(self.provider, "set_performance", None)
            if setter is not None:
                record = {k: str(v) for k, v in (("iops", perf.iops), ("throughput", perf.throughput)) if v is not None}
                await in_thread(setter, request.volume_id, record)
            return grown

        grown = await self.inflight.run((request.volume_id,), expand, what="ControllerExpandVolume")
        return csi_pb2.ControllerExpandVolumeResponse(capacity_bytes=grown.size_bytes, node_expansion_required=True)

    # -- snapshots ---------------------------------------------------------------------------
    async def CreateSnapshot(self, request: csi_pb2.CreateSnapshotRequest, context: grpc.aio.ServicerContext) -> csi_pb2.CreateSnapshotResponse:
        require_text(request.source_volume_id, "source_volume_id")
        require_text(request.name, "name", max_len=256)
        tags = parse_snapshot_tags(dict(request.parameters))
        if not ids.is_volume_id(request.source_volume_id):
            raise NotFound(f"source volume {request.source_volume_id[:80]!r} does not exist")
        snap = await self.inflight.run_in_thread(
            (request.name, request.source_volume_id),
            self.provider.create_snapshot, request.name, request.source_volume_id, tags,
            what="CreateSnapshot",
        )
        return csi_pb2.CreateSnapshotResponse(snapshot=snapshot_message(snap))
