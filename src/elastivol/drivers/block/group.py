"""GroupController service of the block driver: crash-consistent snapshots of several volumes.

The CO (csi-snapshotter with --enable-volume-group-snapshots) calls CreateVolumeGroupSnapshot
with the volumes of the PVCs a VolumeGroupSnapshot selects; every member snapshot it gets back
is an ordinary snapshot (CreateVolume can restore it, ListSnapshots shows it) that carries the
group's id.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from elastivol import ids
from elastivol.csi import csi_pb2
from elastivol.drivers.block.controller import parse_snapshot_tags
from elastivol.drivers.common import in_thread, require, require_text
from elastivol.drivers.snapshots import snapshot_message
from elastivol.errors import InvalidArgument, NotFound
from elastivol.locks import InFlight
from elastivol.metrics import Metrics
from elastivol.providers.groups import GroupSnapshot, GroupSnapshotProvider

_GROUP_RPC = csi_pb2.GroupControllerServiceCapability.RPC


def group_message(group: GroupSnapshot) -> csi_pb2.VolumeGroupSnapshot:
    nanos = int(group.created_at * 1e9)
    return csi_pb2.VolumeGroupSnapshot(
        group_snapshot_id=group.id,
        snapshots=[snapshot_message(s) for s in group.snapshots],
        creation_time={"seconds": nanos // 10**9, "nanos": nanos % 10**9},
        ready_to_use=group.ready,
    )


def check_members(group: GroupSnapshot, asked: list[str]) -> None:
    """The spec's SHOULD: a ``snapshot_ids`` list that is not the group's members is refused.

    The field is required, but only checked once the group is known: an unknown group is
    NOT_FOUND (get) or OK (delete) whatever the list says, as csi-sanity expects. Where the
    provider keeps a record of the group (local) the list must be exactly its members, also one
    deleted on its own since; where the group is only what is found (EBS tags) every member found
    must be in the list, and ids beyond them are taken for members already gone.
    """
    require(asked, "snapshot_ids")
    wanted = set(asked)
    found = {s.id for s in group.snapshots}
    recorded = set(group.recorded_ids)
    if (wanted != recorded) if recorded else not found <= wanted:
        raise InvalidArgument(
            f"snapshot_ids {sorted(wanted)} are not the members of group snapshot {group.id} "
            f"({', '.join(sorted(recorded or found))}): pass exactly the snapshot ids the group was created with"
        )


def _group_id(request: csi_pb2.DeleteVolumeGroupSnapshotRequest | csi_pb2.GetVolumeGroupSnapshotRequest) -> str | None:
    """The request's group snapshot id (required); None where it is malformed and so names no group."""
    require_text(request.group_snapshot_id, "group_snapshot_id")
    return request.group_snapshot_id if ids.is_group_snapshot_id(request.group_snapshot_id) else None


class BlockGroupController:
    def __init__(self, provider: GroupSnapshotProvider, inflight: InFlight) -> None:
        self.provider = provider
        self.inflight = inflight

    async def GroupControllerGetCapabilities(
        self, request: csi_pb2.GroupControllerGetCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.GroupControllerGetCapabilitiesResponse:
        cap = csi_pb2.GroupControllerServiceCapability(
            rpc=csi_pb2.GroupControllerServiceCapability.RPC(type=_GROUP_RPC.CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT)
        )
        return csi_pb2.GroupControllerGetCapabilitiesResponse(capabilities=[cap])

    async def CreateVolumeGroupSnapshot(
        self, request: csi_pb2.CreateVolumeGroupSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.CreateVolumeGroupSnapshotResponse:
        require_text(request.name, "name", max_len=256)
        require(request.source_volume_ids, "source_volume_ids")
        volume_ids = list(request.source_volume_ids)
        for i, volume_id in enumerate(volume_ids):
            require_text(volume_id, f"source_volume_ids[{i}]")
        if len(set(volume_ids)) != len(volume_ids):
            twice = sorted({v for v in volume_ids if volume_ids.count(v) > 1})
            raise InvalidArgument(f"source_volume_ids names {', '.join(twice)} more than once; list each volume once")
        for volume_id in volume_ids:
            if not ids.is_volume_id(volume_id):
                raise NotFound(f"source volume {volume_id[:80]!r} does not exist")
        # Same parameters as a VolumeSnapshotClass: tagSpecification_N, applied to every member.
        tags = parse_snapshot_tags(dict(request.parameters))
        # The group's name and every member volume: no single snapshot, resize or second group
        # of the same volumes runs while the set is being cut.
        group = await self.inflight.run_in_thread(
            (request.name, *sorted(volume_ids)),
            self.provider.create_group_snapshot, request.name, volume_ids, tags,
            what="CreateVolumeGroupSnapshot",
        )
        return csi_pb2.CreateVolumeGroupSnapshotResponse(group_snapshot=group_message(group))

    async def DeleteVolumeGroupSnapshot(
        self, request: csi_pb2.DeleteVolumeGroupSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.DeleteVolumeGroupSnapshotResponse:
        group_id = _group_id(request)
        if group_id is None:
            return csi_pb2.DeleteVolumeGroupSnapshotResponse()

        def delete() -> None:
            try:
                group = self.provider.get_group_snapshot(group_id)
            except NotFound:
                return  # already gone: deletes are idempotent
            check_members(group, list(request.snapshot_ids))
            self.provider.delete_group_snapshot(group_id)

        # The members too: a restore from one of them (CreateVolume holds its snapshot id) finishes first.
        members = [i for i in request.snapshot_ids if ids.is_snapshot_id(i)]
        await self.inflight.run_in_thread((group_id, *sorted(set(members))), delete, what="DeleteVolumeGroupSnapshot")
        return csi_pb2.DeleteVolumeGroupSnapshotResponse()

    async def GetVolumeGroupSnapshot(
        self, request: csi_pb2.GetVolumeGroupSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.GetVolumeGroupSnapshotResponse:
        group_id = _group_id(request)
        if group_id is None:
            raise NotFound(f"group snapshot {request.group_snapshot_id[:80]!r} does not exist")
        group = await in_thread(self.provider.get_group_snapshot, group_id)
        check_members(group, list(request.snapshot_ids))
        return csi_pb2.GetVolumeGroupSnapshotResponse(group_snapshot=group_message(group))


def freeze_observer(metrics: Metrics) -> Callable[[float, int], None]:
    """A histogram of group freeze windows (seconds from the first freeze to the last thaw); nothing
    when no metrics are served (see Metrics.kept)."""
    if not metrics.kept:
        return lambda seconds, filesystems: None
    from prometheus_client import Gauge, Histogram

    histogram = Histogram(
        "elastivol_group_snapshot_freeze_seconds",
        "How long a volume group snapshot kept its members' filesystems frozen",
        ["driver"], registry=metrics.registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    )
    frozen = Gauge(
        "elastivol_group_snapshot_frozen_filesystems", "Filesystems frozen together by the last volume group snapshot",
        ["driver"], registry=metrics.registry,
    )

    def observe(seconds: float, filesystems: int) -> None:
        histogram.labels(metrics.driver).observe(seconds)
        frozen.labels(metrics.driver).set(filesystems)

    return observe
