"""Every implemented RPC of the block driver against the CSI spec's rules (docs/csi-error-codes.md):
missing required fields, unknown ids, and repeated calls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from elastivol.client import CsiClient, volume_capability
from elastivol.csi import csi_pb2
from tests.helpers import code_of, new_volume

C = grpc.StatusCode
UNKNOWN_VOL = "vol-0123456789abcdef0"
UNKNOWN_SNAP = "snap-0123456789abcdef0"
CAP = volume_capability()


def valid_requests(work: Path) -> dict[str, tuple[str, Any]]:
    """A well-formed request per RPC, naming ids that do not exist."""
    staging = str(work / "kubelet" / "conf" / "staging")
    target = str(work / "kubelet" / "conf" / "target")
    r = csi_pb2
    return {
        "CreateVolume": ("controller", r.CreateVolumeRequest(name="conformance", volume_capabilities=[CAP])),
        "DeleteVolume": ("controller", r.DeleteVolumeRequest(volume_id=UNKNOWN_VOL)),
        "ControllerPublishVolume": ("controller", r.ControllerPublishVolumeRequest(
            volume_id=UNKNOWN_VOL, node_id="node-a", volume_capability=CAP)),
        "ControllerUnpublishVolume": ("controller", r.ControllerUnpublishVolumeRequest(volume_id=UNKNOWN_VOL, node_id="node-a")),
        "ValidateVolumeCapabilities": ("controller", r.ValidateVolumeCapabilitiesRequest(
            volume_id=UNKNOWN_VOL, volume_capabilities=[CAP])),
        "ControllerGetVolume": ("controller", r.ControllerGetVolumeRequest(volume_id=UNKNOWN_VOL)),
        "ControllerExpandVolume": ("controller", r.ControllerExpandVolumeRequest(
            volume_id=UNKNOWN_VOL, capacity_range=r.CapacityRange(required_bytes=2 << 30))),
        "CreateSnapshot": ("controller", r.CreateSnapshotRequest(source_volume_id=UNKNOWN_VOL, name="conf-snap")),
        "DeleteSnapshot": ("controller", r.DeleteSnapshotRequest(snapshot_id=UNKNOWN_SNAP)),
        "NodeStageVolume": ("node", r.NodeStageVolumeRequest(
            volume_id=UNKNOWN_VOL, staging_target_path=staging, volume_capability=CAP)),
        "NodeUnstageVolume": ("node", r.NodeUnstageVolumeRequest(volume_id=UNKNOWN_VOL, staging_target_path=staging)),
        "NodePublishVolume": ("node", r.NodePublishVolumeRequest(
            volume_id=UNKNOWN_VOL, staging_target_path=staging, target_path=target, volume_capability=CAP)),
        "NodeUnpublishVolume": ("node", r.NodeUnpublishVolumeRequest(volume_id=UNKNOWN_VOL, target_path=target)),
        "NodeGetVolumeStats": ("node", r.NodeGetVolumeStatsRequest(volume_id=UNKNOWN_VOL, volume_path=target)),
        "NodeExpandVolume": ("node", r.NodeExpandVolumeRequest(volume_id=UNKNOWN_VOL, volume_path=target)),
    }


# Required fields per RPC (spec v1.12.0). NodePublishVolume's staging_target_path is the
# spec's one exception: a staging plugin answers FAILED_PRECONDITION when it is missing.
REQUIRED = {
    "CreateVolume": ["name", "volume_capabilities"],
    "DeleteVolume": ["volume_id"],
    "ControllerPublishVolume": ["volume_id", "node_id", "volume_capability"],
    "ControllerUnpublishVolume": ["volume_id"],
    "ValidateVolumeCapabilities": ["volume_id", "volume_capabilities"],
    "ControllerGetVolume": ["volume_id"],
    "ControllerExpandVolume": ["volume_id", "capacity_range"],
    "CreateSnapshot": ["source_volume_id", "name"],
    "DeleteSnapshot": ["snapshot_id"],
    "NodeStageVolume": ["volume_id", "staging_target_path", "volume_capability"],
    "NodeUnstageVolume": ["volume_id", "staging_target_path"],
    "NodePublishVolume": ["volume_id", "target_path", "volume_capability"],
    "NodeUnpublishVolume": ["volume_id", "target_path"],
    "NodeGetVolumeStats": ["volume_id", "volume_path"],
    "NodeExpandVolume": ["volume_id", "volume_path"],
}

# What an unknown (well-formed) id must get.
UNKNOWN_ID_CODE = {
    "DeleteVolume": C.OK,
    "ControllerUnpublishVolume": C.OK,
    "DeleteSnapshot": C.OK,
    "ControllerPublishVolume": C.NOT_FOUND,
    "ValidateVolumeCapabilities": C.NOT_FOUND,
    "ControllerGetVolume": C.NOT_FOUND,
    "ControllerExpandVolume": C.NOT_FOUND,
    "CreateSnapshot": C.NOT_FOUND,
    "NodeStageVolume": C.NOT_FOUND,
    "NodeUnstageVolume": C.NOT_FOUND,
    "NodePublishVolume": C.NOT_FOUND,
    "NodeUnpublishVolume": C.NOT_FOUND,
    "NodeGetVolumeStats": C.NOT_FOUND,
    "NodeExpandVolume": C.NOT_FOUND,
}


def invoke(client: CsiClient, service: str, method: str, request: Any) -> grpc.StatusCode:
    fn: Callable[..., Any] = getattr(getattr(client, service), method)
    return code_of(fn, request, timeout=60)


@pytest.mark.parametrize(("method", "field"), [(m, f) for m, fields in REQUIRED.items() for f in fields])
def test_missing_required_field_is_invalid_argument(client: CsiClient, work: Path, method: str, field: str) -> None:
    service, request = valid_requests(work)[method]
    request.ClearField(field)
    assert invoke(client, service, method, request) == C.INVALID_ARGUMENT


def test_publish_without_staging_path_is_failed_precondition(client: CsiClient, work: Path) -> None:
    service, request = valid_requests(work)["NodePublishVolume"]
    request.ClearField("staging_target_path")
    assert invoke(client, service, "NodePublishVolume", request) == C.FAILED_PRECONDITION


@pytest.mark.parametrize("method", sorted(UNKNOWN_ID_CODE))
def test_unknown_ids(client: CsiClient, work: Path, method: str) -> None:
    service, request = valid_requests(work)[method]
    assert invoke(client, service, method, request) == UNKNOWN_ID_CODE[method]


def test_list_calls_and_capabilities(client: CsiClient) -> None:
    assert invoke(client, "controller", "ListVolumes", csi_pb2.ListVolumesRequest()) == C.OK
    assert invoke(client, "controller", "ListSnapshots", csi_pb2.ListSnapshotsRequest(snapshot_id=UNKNOWN_SNAP)) == C.OK
    assert invoke(client, "controller", "ListVolumes", csi_pb2.ListVolumesRequest(max_entries=-1)) == C.INVALID_ARGUMENT
    caps = client.controller.ControllerGetCapabilities(csi_pb2.ControllerGetCapabilitiesRequest()).capabilities
    assert len({c.rpc.type for c in caps}) == len(caps) >= 10
    node = client.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
    assert node.node_id == "node-a" and dict(node.accessible_topology.segments)["topology.kubernetes.io/zone"] == "zone-a"
    cap = client.controller.GetCapacity(csi_pb2.GetCapacityRequest(volume_capabilities=[CAP]))
    assert cap.available_capacity > 0 and cap.maximum_volume_size.value % (1 << 30) == 0


def test_every_call_is_idempotent(client: CsiClient, work: Path, pool_dir: Path) -> None:
    """Each step of a lifecycle, sent twice, gives the same answer both times."""
    vol = new_volume(client, work, "twice")
    again = client.create_volume("twice", 1 << 30, zone="zone-a")
    assert again.volume_id == vol.id
    for step in (vol.controller_publish, vol.stage, vol.publish, vol.unpublish, vol.unstage, vol.controller_unpublish):
        step()
        step()
    snap = client.controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(name="twice-snap", source_volume_id=vol.id))
    snap2 = client.controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(name="twice-snap", source_volume_id=vol.id))
    assert snap.snapshot.snapshot_id == snap2.snapshot.snapshot_id
    expand = csi_pb2.ControllerExpandVolumeRequest(volume_id=vol.id, capacity_range=csi_pb2.CapacityRange(required_bytes=2 << 30))
    assert client.controller.ControllerExpandVolume(expand).capacity_bytes == client.controller.ControllerExpandVolume(expand).capacity_bytes
    for _ in range(2):
        client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot.snapshot_id))
        vol.delete()
