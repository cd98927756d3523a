"""Node service of the block driver: stage (attach, format, mount), publish (bind), stats, expand."""

from __future__ import annotations

import os

import grpc

from elastivol import ids
from elastivol.csi import csi_pb2
from elastivol.domain import AccessMode, VolumeMode
from elastivol.drivers.block.capability import check_block_capability
from elastivol.drivers.common import (
    Capability,
    capability,
    guarded_path,
    in_thread,
    require,
    require_text,
)
from elastivol.drivers.node_rpcs import NodeRpcs, refuse_second_publication, usage_messages
from elastivol.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from elastivol.node.mount import MountInfo
from elastivol.params.block import MKFS_KEYS, mkfs_args, parse_block_parameters
from elastivol.providers.block import BlockNodeProvider

_NODE_RPC = csi_pb2.NodeServiceCapability.RPC
# Set by kubelet when the CSIDriver has podInfoOnMount: true; the pod whose cgroup gets the limits.
POD_UID_KEY = "csi.storage.k8s.io/pod.uid"
NODE_CAPABILITIES = (
    _NODE_RPC.STAGE_UNSTAGE_VOLUME,
    _NODE_RPC.GET_VOLUME_STATS,
    _NODE_RPC.VOLUME_CONDITION,
    _NODE_RPC.SINGLE_NODE_MULTI_WRITER,
    _NODE_RPC.EXPAND_VOLUME,
)


class BlockNode(NodeRpcs[BlockNodeProvider]):
    capabilities = NODE_CAPABILITIES

    def _known_volume(self, volume_id: str) -> None:
        if not ids.is_volume_id(volume_id) or not self.provider.volume_exists(volume_id):
            raise NotFound(f"volume {volume_id[:80]!r} does not exist")

    # -- stage -------------------------------------------------------------------------------
    async def NodeStageVolume(self, request: csi_pb2.NodeStageVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.NodeStageVolumeResponse:
        require_text(request.volume_id, "volume_id")
        require_text(request.staging_target_path, "staging_target_path")
        require(request.HasField("volume_capability"), "volume_capability")
        cap = capability(request.volume_capability)
        check_block_capability(cap, multi_attach=True)
        staging = await guarded_path(
            self.guard, request.staging_target_path, "staging_target_path", directory=True, new_mount=True
        )
        options = self._mount_options(cap) if cap.volume_mode is VolumeMode.FILESYSTEM else ()
        volume_context = dict(request.volume_context)
        fs_type = cap.fs_type or volume_context.get("fsType") or "ext4"
        extra: list[str] = []
        if cap.volume_mode is VolumeMode.FILESYSTEM:
            params = parse_block_parameters({k: v for k, v in volume_context.items() if k in MKFS_KEYS})
            extra = mkfs_args(params, fs_type, False)
        await in_thread(self._known_volume, request.volume_id)
        publish_context = dict(request.publish_context)

        def stage() -> None:
            attached_before = self.provider.find_device(request.volume_id) is not None
            device = self.provider.attach_device(request.volume_id, publish_context)
            if cap.volume_mode is VolumeMode.FILESYSTEM:
                try:
                    self.host.stage_filesystem(
                        device, staging, fs_type, mkfs_args=extra, mount_options=options, readonly=cap.mode.read_only
                    )
                except FailedPrecondition:
                    # Refused (a blank read-only attachment, say): leave no device behind that this
                    # call attached and nothing uses, so a read-write attach can follow.
                    if not attached_before and not self.host.find_by_source(device):
                        self.provider.detach_device(request.volume_id)
                    raise

        await self.inflight.run_in_thread((request.volume_id,), stage, what="NodeStageVolume")
        return csi_pb2.NodeStageVolumeResponse()

    async def NodeUnstageVolume(self, request: csi_pb2.NodeUnstageVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.NodeUnstageVolumeResponse:
        require_text(request.volume_id, "volume_id")
        require_text(request.staging_target_path, "staging_target_path")
        staging = await guarded_path(self.guard, request.staging_target_path, "staging_target_path")
        if not ids.is_volume_id(request.volume_id):
            raise NotFound(f"volume {request.volume_id[:80]!r} does not exist")

        def unstage() -> None:
            exists = self.provider.volume_exists(request.volume_id)
            device = self.provider.find_device(request.volume_id)
            if not exists and device is None and not self.host.is_mountpoint(staging):
                raise NotFound(f"volume {request.volume_id} does not exist")
            self.host.unstage(staging)
            self.provider.detach_device(request.volume_id)

        await self.inflight.run_in_thread((request.volume_id,), unstage, what="NodeUnstageVolume")
        return csi_pb2.NodeUnstageVolumeResponse()

    # -- publish -----------------------------------------------------------------------------
    async def NodePublishVolume(self, request: csi_pb2.NodePublishVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.NodePublishVolumeResponse:
        require_text(request.volume_id, "volume_id")
        require_text(request.target_path, "target_path")
        require(request.HasField("volume_capability"), "volume_capability")
        if not request.staging_target_path:
            # The spec's exception to "missing field → INVALID_ARGUMENT" for staging plugins.
            raise FailedPrecondition("staging_target_path is required: this driver stages volumes before publishing")
        require_text(request.staging_target_path, "staging_target_path")
        cap = capability(request.volume_capability)
        check_block_capability(cap, multi_attach=True)
        target = await guarded_path(self.guard, request.target_path, "target_path", new_mount=True)
        staging = await guarded_path(self.guard, request.staging_target_path, "staging_target_path")
        if target == staging or target.startswith(staging + "/") or staging.startswith(target + "/"):
            raise InvalidArgument(
                f"target_path {target} and staging_target_path {staging} must be apart, neither inside the other: "
                "a mount inside the other would hide it or write into the volume"
            )
        options = self._mount_options(cap) if cap.volume_mode is VolumeMode.FILESYSTEM else ()
        readonly = request.readonly or cap.mode.read_only
        pod_uid = request.volume_context.get(POD_UID_KEY, "")
        await in_thread(self._known_volume, request.volume_id)

        def publish() -> None:
            bind()
            self.provider.limit_io(request.volume_id, pod_uid)

        def bind() -> None:
            if cap.volume_mode is VolumeMode.BLOCK:
                device = self.provider.find_device(request.volume_id)
                if device is None:
                    raise FailedPrecondition(f"volume {request.volume_id} is not staged on this node: stage it first")
                self._single_writer(cap, device, "", target)
                self.host.publish_block(device, target, readonly)
                return
            staged = self.host.find_by_target(staging)
            if staged is None:
                raise FailedPrecondition(
                    f"volume {request.volume_id} is not staged at {staging}: NodeStageVolume must come first"
                )
            existing = self.host.find_by_target(target)
            if existing is not None:
                if (existing.major_minor, existing.root) != (staged.major_minor, staged.root):
                    raise AlreadyExists(f"{target} already has another volume mounted on it")
                if ("ro" in existing.options.split(",")) != readonly:
                    raise AlreadyExists(
                        f"volume {request.volume_id} is already published at {target} with readonly="
                        f"{not readonly}; unpublish it first"
                    )
                return
            self._single_writer(cap, staged.source, staged.major_minor, target)
            self.host.publish_bind(staging, target, readonly, options)

        await self.inflight.run_in_thread((request.volume_id,), publish, what="NodePublishVolume")
        return csi_pb2.NodePublishVolumeResponse()

    def _single_writer(self, cap: Capability, device: str, major_minor: str, target: str) -> None:
        """ReadWriteOncePod: refuse a second target for the same volume on this node."""
        if cap.mode is not AccessMode.SINGLE_NODE_SINGLE_WRITER:
            return
        mounts = [m for m in self.host.mounts() if m.target != target]
        if major_minor:
            # The staging mount shares the device; every further mount of it is a publication.
            others = [m.target for m in mounts if m.major_minor == major_minor][1:]
        else:
            # A raw block publication is a bind of the device node itself.
            others = [m.target for m in mounts if m.root == "/" + os.path.basename(device)]
        refuse_second_publication(others)

    async def NodeUnpublishVolume(self, request: csi_pb2.NodeUnpublishVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.NodeUnpublishVolumeResponse:
        target = await self._unpublish_target(request)
        if not ids.is_volume_id(request.volume_id):
            raise NotFound(f"volume {request.volume_id[:80]!r} does not exist")

        def unpublish() -> None:
            if not os.path.lexists(target) and not self.provider.volume_exists(request.volume_id):
                raise NotFound(f"volume {request.volume_id} does not exist")
            self.host.unpublish(target)

        await self.inflight.run_in_thread((request.volume_id,), unpublish, what="NodeUnpublishVolume")
        return csi_pb2.NodeUnpublishVolumeResponse()

    # -- stats and expansion -----------------------------------------------------------------
    async def NodeGetVolumeStats(self, request: csi_pb2.NodeGetVolumeStatsRequest, context: grpc.aio.ServicerContext) -> csi_pb2.NodeGetVolumeStatsResponse:
        path = await self._volume_path(request)
        if not ids.is_volume_id(request.volume_id):
            raise NotFound(f"volume {request.volume_id[:80]!r} does not exist")
        return await in_thread(self._stats, request.volume_id, path)

    def _mount_of(self, volume_id: str, path: str) -> MountInfo:
        """The mount at ``path``, if it holds ``volume_id``; NOT_FOUND (the spec's answer) if not."""
        info = self.host.find_by_target(path)
        if info is None:
            raise NotFound(f"volume {volume_id} is not at {path}: nothing is mounted there on this node")
        device = self.provider.find_device(volume_id)
        if device is None:
            if not self.provider.volume_exists(volume_id):
                raise NotFound(f"volume {volume_id} does not exist (and so is not at {path})")
            raise NotFound(f"volume {volume_id} is not at {path}: it is not attached to this node")
        if not self.host.is_mount_of(info, path, device):
            raise NotFound(f"volume {volume_id} is not at {path}: what is mounted there ({info.source}) is another volume")
        return info

    def _stats(self, volume_id: str, path: str) -> csi_pb2.NodeGetVolumeStatsResponse:
        self._mount_of(volume_id, path)
        # Still mounted here but gone from the backend: answer, and say so in the condition.
        abnormal = "" if self.provider.volume_exists(volume_id) else f"volume {volume_id} no longer exists in the pool"
        condition = csi_pb2.VolumeCondition(abnormal=bool(abnormal), message=abnormal or "healthy")
        usage: list[csi_pb2.VolumeUsage] = []
        if os.path.isdir(path):
            st = self.host.statfs(path)
            usage = usage_messages(
                st.total_bytes, st.available_bytes, st.used_bytes, (st.inodes_total, st.inodes_free, st.inodes_used)
            )
        else:
            usage = [csi_pb2.VolumeUsage(unit=csi_pb2.VolumeUsage.BYTES, total=self.host.device_size(path))]
        return csi_pb2.NodeGetVolumeStatsResponse(usage=usage, volume_condition=condition)

    async def NodeExpandVolume(self, request: csi_pb2.NodeExpandVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.NodeExpandVolumeResponse:
        path = await self._volume_path(request)
        if request.staging_target_path:
            await guarded_path(self.guard, request.staging_target_path, "staging_target_path")
        if not ids.is_volume_id(request.volume_id):
            raise NotFound(f"volume {request.volume_id[:80]!r} does not exist")
        await in_thread(self._known_volume, request.volume_id)

        def expand() -> int:
            info = self._mount_of(request.volume_id, path)
            size = self.provider.refresh_device(request.volume_id)
            self.provider.update_io_limits(request.volume_id)  # gp2, st1 and sc1 perform by size
            if not os.path.isdir(path):
                return size  # raw block: the device is the volume, nothing to grow on it
            device = self.provider.find_device(request.volume_id)
            self.host.expand_online(device or info.source, path, info.fstype)
            return size

        size = await self.inflight.run_in_thread((request.volume_id,), expand, what="NodeExpandVolume")
        return csi_pb2.NodeExpandVolumeResponse(capacity_bytes=size)

    # -- info --------------------------------------------------------------------------------
