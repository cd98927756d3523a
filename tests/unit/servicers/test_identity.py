"""The Identity servicer: plugin info, capabilities by driver shape, Probe with and without readiness."""

from __future__ import annotations

from elastivol import BLOCK_DRIVER_NAME, FILE_DRIVER_NAME, __version__
from elastivol.csi import csi_pb2
from elastivol.domain import Health
from elastivol.drivers.identity import Identity
from tests.unit.servicers.conftest import call
from tests.unit.servicers.fakes import FakeContext

SERVICE = csi_pb2.PluginCapability.Service
EXPANSION = csi_pb2.PluginCapability.VolumeExpansion


def _caps(identity: Identity) -> set[tuple[str, int]]:
    reply = call(identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest(), FakeContext()))
    out = set()
    for c in reply.capabilities:
        which = c.WhichOneof("type")
        out.add((which, c.service.type if which == "service" else c.volume_expansion.type))
    return out


def test_plugin_info_names_the_driver_and_version() -> None:
    reply = call(Identity(BLOCK_DRIVER_NAME, lambda: Health(True)).GetPluginInfo(
        csi_pb2.GetPluginInfoRequest(), FakeContext()))
    assert (reply.name, reply.vendor_version) == (BLOCK_DRIVER_NAME, __version__)


def test_block_and_file_shapes_differ_in_topology_and_offline_expansion() -> None:
    block = _caps(Identity(BLOCK_DRIVER_NAME, lambda: Health(True)))
    file = _caps(Identity(FILE_DRIVER_NAME, lambda: Health(True), topology=False, offline_expansion=False))
    assert ("service", SERVICE.CONTROLLER_SERVICE) in block & file
    assert ("service", SERVICE.VOLUME_ACCESSIBILITY_CONSTRAINTS) in block - file
    assert ("volume_expansion", EXPANSION.OFFLINE) in block - file
    assert ("volume_expansion", EXPANSION.ONLINE) in file


def test_probe_ready_and_not_ready_with_the_reason_in_trailing_metadata() -> None:
    health = [Health(True, notice="snapshots are full copies")]
    identity = Identity(BLOCK_DRIVER_NAME, lambda: health[0])
    ctx = FakeContext()
    assert call(identity.Probe(csi_pb2.ProbeRequest(), ctx)).ready.value is True
    assert dict(ctx.trailing) == {"elastivol-notice": "snapshots are full copies"}
    health[0] = Health(False, reason="pool not mounted")
    ctx = FakeContext()
    assert call(identity.Probe(csi_pb2.ProbeRequest(), ctx)).ready.value is False
    assert dict(ctx.trailing) == {"elastivol-not-ready-reason": "pool not mounted"}
