"""Identity service, shared by both drivers."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
from google.protobuf.wrappers_pb2 import BoolValue

import elastivol
from elastivol.csi import csi_pb2
from elastivol.domain import Health
from elastivol.drivers.common import in_thread

log = logging.getLogger("elastivol.identity")

_SERVICE = csi_pb2.PluginCapability.Service
_EXPANSION = csi_pb2.PluginCapability.VolumeExpansion


class Identity:
    def __init__(
        self,
        name: str,
        health: Callable[[], Health],
        *,
        topology: bool = True,
        online_expansion: bool = True,
        offline_expansion: bool = True,
        group_controller: bool = False,
    ) -> None:
        self.name = name
        self.health = health
        # The plugin has a controller service whichever part this process serves (as the EBS driver
        # answers): a CO asking a node plugin must still know to call ControllerPublishVolume first.
        caps = [csi_pb2.PluginCapability(service=_SERVICE(type=_SERVICE.CONTROLLER_SERVICE))]
        if topology:
            caps.append(csi_pb2.PluginCapability(service=_SERVICE(type=_SERVICE.VOLUME_ACCESSIBILITY_CONSTRAINTS)))
        if group_controller:
            caps.append(csi_pb2.PluginCapability(service=_SERVICE(type=_SERVICE.GROUP_CONTROLLER_SERVICE)))
        if online_expansion:
            caps.append(csi_pb2.PluginCapability(volume_expansion=_EXPANSION(type=_EXPANSION.ONLINE)))
        if offline_expansion:
            caps.append(csi_pb2.PluginCapability(volume_expansion=_EXPANSION(type=_EXPANSION.OFFLINE)))
        self.capabilities = caps

    async def GetPluginInfo(self, request: csi_pb2.GetPluginInfoRequest, context: grpc.aio.ServicerContext) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=self.name, vendor_version=elastivol.__version__)

    async def GetPluginCapabilities(self, request: csi_pb2.GetPluginCapabilitiesRequest, context: grpc.aio.ServicerContext) -> csi_pb2.GetPluginCapabilitiesResponse:
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=self.capabilities)

    async def Probe(self, request: csi_pb2.ProbeRequest, context: grpc.aio.ServicerContext) -> csi_pb2.ProbeResponse:
        health = await in_thread(self.health)
        if not health.ready:
            # ProbeResponse has no reason field: carry it in trailing metadata and the log.
            log.warning("probe: not ready: %s", health.reason)
            context.set_trailing_metadata((("elastivol-not-ready-reason", health.reason.encode("ascii", "replace").decode()),))
        elif health.notice:
            context.set_trailing_metadata((("elastivol-notice", health.notice.encode("ascii", "replace").decode()),))
        return csi_pb2.ProbeResponse(ready=BoolValue(value=health.ready))
