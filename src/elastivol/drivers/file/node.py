"""Node service of the file driver: publish is a bind mount of the volume's directory; no staging."""

from __future__ import annotations

import os
from typing import Unpack

import grpc

from elastivol.csi import csi_pb2
from elastivol.domain import AccessMode
from elastivol.drivers.common import (
    capability,
    guarded_path,
    in_thread,
    require,
    require_text,
)
from elastivol.drivers.file.capability import check_file_capability
from elastivol.drivers.file.catalog import FileCatalog, resolve
from elastivol.drivers.node_rpcs import NodeRpcs, NodeSettings, refuse_second_publication, usage_messages
from elastivol.errors import InvalidArgument, NotFound, Unimplemented
from elastivol.locks import InFlight
from elastivol.node.paths import PathGuard
from elastivol.params.file import VolumeHandle, parse_volume_handle
from elastivol.providers.file import (
    AccessPoint,
    FileNodeDirectoryIdentity,
    FileNodeProvider,
    FilePublication,
    FileUsage,
)

_NODE_RPC = csi_pb2.NodeServiceCapability.RPC
NODE_CAPABILITIES = (
    _NODE_RPC.GET_VOLUME_STATS,
    _NODE_RPC.VOLUME_CONDITION,
    _NODE_RPC.SINGLE_NODE_MULTI_WRITER,
)


class FileNode(NodeRpcs[FileNodeProvider]):
    capabilities = NODE_CAPABILITIES

    def __init__(self, provider: FileNodeProvider, catalog: FileCatalog, inflight: InFlight, guard: PathGuard, *,
                 max_volumes: int = 0, **settings: Unpack[NodeSettings]) -> None:
        super().__init__(provider, inflight, guard, max_volumes=max_volumes, **settings)
        self.catalog = catalog

    # -- publish -----------------------------------------------------------------------------
    async def NodePublishVolume(self, request: csi_pb2.NodePublishVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.NodePublishVolumeResponse:
        require_text(request.volume_id, "volume_id")
        require_text(request.target_path, "target_path")
        require(request.HasField("volume_capability"), "volume_capability")
        cap = capability(request.volume_capability)
        check_file_capability(cap)
        target = await guarded_path(self.guard, request.target_path, "target_path", new_mount=True)
        handle = parse_volume_handle(request.volume_id)
        options = self._mount_options(cap)
        readonly = request.readonly or cap.mode.read_only
        keys = [f"publish:{target}"]
        if cap.mode is AccessMode.SINGLE_NODE_SINGLE_WRITER:
            keys.append(request.volume_id)

        def publish() -> None:
            ap = resolve(self.catalog, handle)
            if cap.mode is AccessMode.SINGLE_NODE_SINGLE_WRITER:
                self._single_writer(handle, ap, target)
            self.provider.publish(FilePublication(handle.fs_id, handle.subpath, ap, target, readonly, options))

        await self.inflight.run_in_thread(keys, publish, what="NodePublishVolume")
        return csi_pb2.NodePublishVolumeResponse()

    def _single_writer(self, handle: VolumeHandle, ap: AccessPoint | None, target: str) -> None:
        """ReadWriteOncePod: refuse a second target for the same directory on this node."""
        if not isinstance(self.provider, FileNodeDirectoryIdentity):
            return  # cannot tell one directory from another here (NFS): the CO's check stands alone
        others = self.provider.published_elsewhere(handle.fs_id, handle.subpath, ap, target, self.guard.allowed_roots)
        refuse_second_publication(others)

    async def NodeUnpublishVolume(self, request: csi_pb2.NodeUnpublishVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.NodeUnpublishVolumeResponse:
        target = await self._unpublish_target(request)
        parse_volume_handle(request.volume_id)
        await self.inflight.run_in_thread(
            (f"publish:{target}",), self.provider.unpublish, target, what="NodeUnpublishVolume"
        )
        return csi_pb2.NodeUnpublishVolumeResponse()

    # -- not offered ------------------------------------------------------------------------
    async def NodeStageVolume(self, request: csi_pb2.NodeStageVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.NodeStageVolumeResponse:
        raise Unimplemented("file volumes are not staged: NodePublishVolume bind-mounts the directory directly")

    async def NodeUnstageVolume(self, request: csi_pb2.NodeUnstageVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.NodeUnstageVolumeResponse:
        raise Unimplemented("file volumes are not staged, so there is nothing to unstage")

    async def NodeExpandVolume(self, request: csi_pb2.NodeExpandVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.NodeExpandVolumeResponse:
        raise Unimplemented("file volumes grow in ControllerExpandVolume alone (a quota): no node step")

    # -- stats -------------------------------------------------------------------------------
    async def NodeGetVolumeStats(self, request: csi_pb2.NodeGetVolumeStatsRequest, context: grpc.aio.ServicerContext) -> csi_pb2.NodeGetVolumeStatsResponse:
        path = await self._volume_path(request)
        try:
            handle = parse_volume_handle(request.volume_id)
        except InvalidArgument as exc:
            # Not a volume id this driver could have made: no such volume, at any path.
            raise NotFound(f"volume {request.volume_id[:80]!r} does not exist: {exc.message}") from None
        return await in_thread(self._stats, handle, path)

    def _stats(self, handle: VolumeHandle, path: str) -> csi_pb2.NodeGetVolumeStatsResponse:
        if not os.path.isdir(path) or self.host.find_by_target(path) is None:
            raise NotFound(f"{path} is not a published volume on this node")
        abnormal = ""
        ap: AccessPoint | None = None
        try:
            ap = resolve(self.catalog, handle)
        except NotFound as exc:
            abnormal = f"{exc.message} (the volume is still mounted here)"
        if (
            not abnormal
            and isinstance(self.provider, FileNodeDirectoryIdentity)
            and not self.provider.holds(handle.fs_id, handle.subpath, ap, path)
        ):
            raise NotFound(f"volume {handle.volume_id} is not at {path}: another directory is mounted there")
        usage: FileUsage = self.provider.usage(handle.fs_id, ap, path)
        message = abnormal or "healthy"
        if not abnormal and not usage.exact:
            message = (
                "healthy; used bytes is a lower bound: counting the directory tree did not finish in the time "
                "allowed, and continues in the background"
            )
        inodes = (usage.inodes_total, usage.inodes_available, usage.inodes_used) if usage.inodes_total else None
        stats = usage_messages(usage.total_bytes, usage.available_bytes, usage.used_bytes, inodes)
        condition = csi_pb2.VolumeCondition(abnormal=bool(abnormal), message=message)
        return csi_pb2.NodeGetVolumeStatsResponse(usage=stats, volume_condition=condition)

    # -- info --------------------------------------------------------------------------------
