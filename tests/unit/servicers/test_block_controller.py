"""The block controller servicer against a fake block provider."""

from __future__ import annotations

import grpc
import pytest

from elastivol import ids
from elastivol.csi import csi_pb2
from elastivol.domain import ZONE_KEY
from elastivol.drivers.block.controller import BlockController
from elastivol.errors import AlreadyExists, Exhausted, InUse, PermissionDenied, Unauthenticated, Unavailable
from elastivol.locks import InFlight
from tests.unit.servicers.conftest import call
from tests.unit.servicers.fakes import FakeBlockProvider, FakeContext
from tests.unit.servicers.support import MODE, C, block_cap, expect, expect_each_required, mount_cap

GiB = 1 << 30


@pytest.fixture
def provider() -> FakeBlockProvider:
    return FakeBlockProvider()


@pytest.fixture
def ctl(provider: FakeBlockProvider, inflight: InFlight) -> BlockController:
    return BlockController(provider, inflight)


def create_req(name: str = "pvc-1", size: int = 4 * GiB, **params: str) -> csi_pb2.CreateVolumeRequest:
    return csi_pb2.CreateVolumeRequest(
        name=name, capacity_range=csi_pb2.CapacityRange(required_bytes=size),
        volume_capabilities=[mount_cap()], parameters=params,
    )


def test_create_requires_name_and_capabilities(ctl: BlockController, provider: FakeBlockProvider) -> None:
    expect_each_required(ctl.CreateVolume, create_req, "name", "volume_capabilities")
    assert "create_volume" not in provider.calls


def test_create_refuses_bad_parameters_and_fs_types_by_name(ctl: BlockController) -> None:
    expect(C.INVALID_ARGUMENT, ctl.CreateVolume(create_req(type="gp9"), FakeContext()), "gp9")
    expect(C.INVALID_ARGUMENT, ctl.CreateVolume(create_req(color="blue"), FakeContext()), "color")
    req = create_req()
    req.volume_capabilities[0].mount.fs_type = "vfat"
    expect(C.INVALID_ARGUMENT, ctl.CreateVolume(req, FakeContext()), "vfat")
    req = create_req()
    req.volume_capabilities.append(block_cap())
    expect(C.INVALID_ARGUMENT, ctl.CreateVolume(req, FakeContext()), "mix block and mount")


def test_create_rwx_filesystem_is_refused_with_the_ebs_message(ctl: BlockController) -> None:
    req = create_req()
    req.volume_capabilities[0].access_mode.mode = MODE.MULTI_NODE_MULTI_WRITER
    expect(C.INVALID_ARGUMENT, ctl.CreateVolume(req, FakeContext()),
           "Only AccessModes[ReadWriteOnce] supported")


def test_create_twice_is_one_volume_with_the_same_reply(ctl: BlockController, provider: FakeBlockProvider) -> None:
    first = call(ctl.CreateVolume(create_req(), FakeContext()))
    second = call(ctl.CreateVolume(create_req(), FakeContext()))
    assert first == second
    assert len(provider.volumes) == 1
    assert first.volume.capacity_bytes == 4 * GiB
    assert first.volume.volume_context["fsType"] == "ext4"


def test_create_rounds_up_to_whole_gib_and_honours_the_limit(ctl: BlockController) -> None:
    reply = call(ctl.CreateVolume(create_req(size=GiB + 1), FakeContext()))
    assert reply.volume.capacity_bytes == 2 * GiB
    req = create_req("pvc-2", size=GiB + 1)
    req.capacity_range.limit_bytes = GiB + 2
    expect(C.OUT_OF_RANGE, ctl.CreateVolume(req, FakeContext()))


def test_create_in_a_zone_not_served_is_resource_exhausted(ctl: BlockController) -> None:
    req = create_req()
    req.accessibility_requirements.requisite.add().segments[ZONE_KEY] = "zone-z"
    expect(C.RESOURCE_EXHAUSTED, ctl.CreateVolume(req, FakeContext()), "zone-z")


@pytest.mark.parametrize("error,code", [
    (AlreadyExists("pvc-1 exists with another size"), C.ALREADY_EXISTS),
    (Exhausted("the pool is full"), C.RESOURCE_EXHAUSTED),
    (Unavailable("EC2 throttled the call"), C.UNAVAILABLE),
    (Unauthenticated("credentials expired"), C.UNAUTHENTICATED),
    (PermissionDenied("ec2:CreateVolume denied"), C.PERMISSION_DENIED),
])
def test_provider_errors_on_create_map_to_their_code(
    ctl: BlockController, provider: FakeBlockProvider, error: Exception, code: grpc.StatusCode
) -> None:
    provider.fail["create_volume"] = error
    expect(code, ctl.CreateVolume(create_req(), FakeContext()), str(error))


def test_delete_is_idempotent_and_ignores_malformed_ids(ctl: BlockController, provider: FakeBlockProvider) -> None:
    vid = call(ctl.CreateVolume(create_req(), FakeContext())).volume.volume_id
    for _ in range(2):
        assert call(ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), FakeContext())) == \
            csi_pb2.DeleteVolumeResponse()
    assert provider.volumes == {}
    call(ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id="junk"), FakeContext()))
    assert provider.calls.count("delete_volume") == 2
    expect(C.INVALID_ARGUMENT, ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(), FakeContext()), "volume_id")
    provider.fail["delete_volume"] = InUse("attached to n1", node="n1")
    expect(C.FAILED_PRECONDITION, ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), FakeContext()), "n1")


@pytest.mark.parametrize("field", ["volume_id", "node_id", "volume_capability"])
def test_publish_requires_each_field(ctl: BlockController, field: str) -> None:
    req = csi_pb2.ControllerPublishVolumeRequest(volume_id=ids.new_id("vol"), node_id="n1", volume_capability=mount_cap())
    req.ClearField(field)
    expect(C.INVALID_ARGUMENT, ctl.ControllerPublishVolume(req, FakeContext()), field)


def test_publish_twice_attaches_once_and_answers_the_same(ctl: BlockController, provider: FakeBlockProvider) -> None:
    vid = call(ctl.CreateVolume(create_req(), FakeContext())).volume.volume_id
    req = csi_pb2.ControllerPublishVolumeRequest(volume_id=vid, node_id="n1", volume_capability=mount_cap())
    replies = [call(ctl.ControllerPublishVolume(req, FakeContext())) for _ in range(2)]
    assert replies[0] == replies[1] and replies[0].publish_context
    assert provider.volumes[vid].attached_nodes == ["n1"]
    unknown = csi_pb2.ControllerPublishVolumeRequest(volume_id=ids.new_id("vol"), node_id="n1",
                                                     volume_capability=mount_cap())
    expect(C.NOT_FOUND, ctl.ControllerPublishVolume(unknown, FakeContext()))
    # A mode the volume was not made for.
    req.volume_capability.CopyFrom(block_cap())
    expect(C.INVALID_ARGUMENT, ctl.ControllerPublishVolume(req, FakeContext()), "block access")


def test_unpublish_without_a_node_detaches_everywhere(ctl: BlockController, provider: FakeBlockProvider) -> None:
    vid = call(ctl.CreateVolume(create_req(), FakeContext())).volume.volume_id
    for n in ("n1", "n2"):
        call(ctl.ControllerPublishVolume(
            csi_pb2.ControllerPublishVolumeRequest(volume_id=vid, node_id=n, volume_capability=mount_cap()), FakeContext()))
    for _ in range(2):
        call(ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(volume_id=vid), FakeContext()))
    assert provider.volumes[vid].attached_nodes == []


def test_expand(ctl: BlockController, provider: FakeBlockProvider) -> None:
    vid = call(ctl.CreateVolume(create_req(), FakeContext())).volume.volume_id
    req = csi_pb2.ControllerExpandVolumeRequest(volume_id=vid, capacity_range=csi_pb2.CapacityRange(required_bytes=6 * GiB))
    replies = [call(ctl.ControllerExpandVolume(req, FakeContext())) for _ in range(2)]
    assert replies[0] == replies[1] and replies[0].capacity_bytes == 6 * GiB and replies[0].node_expansion_required
    assert provider.calls.count("expand_volume") == 1  # the retry finds it grown
    req.ClearField("capacity_range")
    expect(C.INVALID_ARGUMENT, ctl.ControllerExpandVolume(req, FakeContext()), "capacity_range")
    big = csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vid, capacity_range=csi_pb2.CapacityRange(required_bytes=100_000 * GiB))
    expect(C.OUT_OF_RANGE, ctl.ControllerExpandVolume(big, FakeContext()), "at most")


def test_snapshots(ctl: BlockController, provider: FakeBlockProvider) -> None:
    vid = call(ctl.CreateVolume(create_req(), FakeContext())).volume.volume_id
    req = csi_pb2.CreateSnapshotRequest(source_volume_id=vid, name="snap-1")
    replies = [call(ctl.CreateSnapshot(req, FakeContext())) for _ in range(2)]
    assert replies[0].snapshot.snapshot_id == replies[1].snapshot.snapshot_id
    assert len(provider.snapshots) == 1
    expect(C.INVALID_ARGUMENT, ctl.CreateSnapshot(csi_pb2.CreateSnapshotRequest(source_volume_id=vid), FakeContext()),
           "name")
    expect(C.INVALID_ARGUMENT, ctl.CreateSnapshot(
        csi_pb2.CreateSnapshotRequest(source_volume_id=vid, name="s", parameters={"x": "y"}), FakeContext()), "'x'")
    expect(C.NOT_FOUND, ctl.CreateSnapshot(
        csi_pb2.CreateSnapshotRequest(source_volume_id=ids.new_id("vol"), name="s2"), FakeContext()))


def test_capacity_capabilities_and_readonly_offer(ctl: BlockController, provider: FakeBlockProvider) -> None:
    cap = call(ctl.GetCapacity(csi_pb2.GetCapacityRequest(), FakeContext()))
    assert cap.available_capacity == 100 * GiB and cap.maximum_volume_size.value == 50 * GiB
    rpc = csi_pb2.ControllerServiceCapability.RPC
    offered = {c.rpc.type for c in call(ctl.ControllerGetCapabilities(
        csi_pb2.ControllerGetCapabilitiesRequest(), FakeContext())).capabilities}
    assert rpc.PUBLISH_READONLY in offered
    provider.readonly_attach = False
    offered = {c.rpc.type for c in call(ctl.ControllerGetCapabilities(
        csi_pb2.ControllerGetCapabilitiesRequest(), FakeContext())).capabilities}
    assert rpc.PUBLISH_READONLY not in offered and rpc.CREATE_DELETE_VOLUME in offered


def test_list_volumes_pages_with_a_token(ctl: BlockController) -> None:
    for i in range(3):
        call(ctl.CreateVolume(create_req(f"pvc-{i}"), FakeContext()))
    page = call(ctl.ListVolumes(csi_pb2.ListVolumesRequest(max_entries=2), FakeContext()))
    assert len(page.entries) == 2 and page.next_token
    rest = call(ctl.ListVolumes(csi_pb2.ListVolumesRequest(starting_token=page.next_token), FakeContext()))
    assert len(rest.entries) == 1 and not rest.next_token
    expect(C.ABORTED, ctl.ListVolumes(csi_pb2.ListVolumesRequest(starting_token="junk"), FakeContext()), "junk")
