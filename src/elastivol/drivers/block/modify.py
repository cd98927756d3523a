"""ControllerModifyVolume of the block driver: a VolumeAttributesClass applied to an existing volume.

The request's ``mutable_parameters`` are checked for their keys and syntax first (an unknown key is
INVALID_ARGUMENT naming it, whatever the volume), then against the volume as it is now: its size and
type decide which IOPS and throughput are possible (params/block_modify.py). The provider makes the
change; a volume that already is what was asked is left alone, so a retry is OK without a second
modification. The volume id is owned for the whole call, so a retry while it runs gets ABORTED.
"""

from __future__ import annotations

from typing import Protocol

import grpc

from elastivol import ids
from elastivol.csi import csi_pb2
from elastivol.drivers.common import in_thread, require_text
from elastivol.errors import NotFound
from elastivol.locks import InFlight
from elastivol.params.block_modify import ModifyPlan, parse_mutable, plan
from elastivol.providers.block import Volume
from elastivol.units import GiB


class ModifiableProvider(Protocol):
    def get_volume(self, volume_id: str) -> Volume: ...
    def apply_modification(self, volume_id: str, plan: ModifyPlan) -> Volume: ...


class ModifyRpcs:
    """ControllerModifyVolume (mixin for the block controller)."""

    provider: ModifiableProvider
    inflight: InFlight

    async def ControllerModifyVolume(self, request: csi_pb2.ControllerModifyVolumeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ControllerModifyVolumeResponse:
        require_text(request.volume_id, "volume_id")
        if not ids.is_volume_id(request.volume_id):
            raise NotFound(f"volume {request.volume_id[:80]!r} does not exist")
        mutable = dict(request.mutable_parameters)
        parse_mutable(mutable)  # keys and syntax: refused before the volume is even looked up

        async def modify() -> None:
            volume = await in_thread(self.provider.get_volume, request.volume_id)
            wanted = plan(volume.params, volume.size_bytes // GiB, parse_mutable(mutable, volume.params))
            # Called even when nothing changes: the provider knows whether a modification is still
            # under way (EBS) and waits for it; it sends nothing new for a volume already as asked.
            await in_thread(self.provider.apply_modification, request.volume_id, wanted)

        # Where the provider merges a modification with a concurrent expansion into one backend call
        # (EBS allows one modification per volume, then none for hours), the two RPCs must be able to
        # run together: ControllerModifyVolume then owns a key of its own, so only a second
        # modification of the volume is ABORTED. Elsewhere it shares the volume's key with the rest.
        key = f"{request.volume_id}#modify" if getattr(self.provider, "coalesces_modifications", False) \
            else request.volume_id
        await self.inflight.run((key,), modify, what="ControllerModifyVolume")
        return csi_pb2.ControllerModifyVolumeResponse()

