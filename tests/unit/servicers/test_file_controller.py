"""The file controller servicer against a fake file provider."""

from __future__ import annotations

import grpc
import pytest

from elastivol import ids
from elastivol.csi import csi_pb2
from elastivol.drivers.file.controller import FileController
from elastivol.errors import AlreadyExists, Exhausted, Unavailable
from elastivol.locks import InFlight
from tests.unit.servicers.conftest import call
from tests.unit.servicers.fakes import FakeContext, FakeFileProvider
from tests.unit.servicers.support import MODE, C, block_cap, expect, expect_each_required, mount_cap

GiB = 1 << 30
FS = ids.new_id("fs")


@pytest.fixture
def provider() -> FakeFileProvider:
    return FakeFileProvider([FS])


@pytest.fixture
def ctl(provider: FakeFileProvider, inflight: InFlight) -> FileController:
    return FileController(provider, inflight)


def create_req(name: str = "pvc-1", **extra: str) -> csi_pb2.CreateVolumeRequest:
    params = {"provisioningMode": "efs-ap", "fileSystemId": FS, "directoryPerms": "700", **extra}
    return csi_pb2.CreateVolumeRequest(
        name=name, capacity_range=csi_pb2.CapacityRange(required_bytes=5 * GiB),
        volume_capabilities=[mount_cap(MODE.MULTI_NODE_MULTI_WRITER, "")], parameters=params,
    )


def test_create_requires_name_capabilities_and_the_efs_parameters(ctl: FileController, provider: FakeFileProvider) -> None:
    expect_each_required(ctl.CreateVolume, create_req, "name", "volume_capabilities")
    req = create_req()
    del req.parameters["fileSystemId"]
    expect(C.INVALID_ARGUMENT, ctl.CreateVolume(req, FakeContext()), "fileSystemId")
    req = create_req()
    del req.parameters["provisioningMode"]
    expect(C.INVALID_ARGUMENT, ctl.CreateVolume(req, FakeContext()), "provisioningMode")
    req = create_req()
    req.volume_capabilities[0].CopyFrom(block_cap())
    expect(C.INVALID_ARGUMENT, ctl.CreateVolume(req, FakeContext()), "raw")
    assert "create_access_point" not in provider.calls


def test_unknown_file_system_is_invalid_argument_as_efs_says(ctl: FileController) -> None:
    expect(C.INVALID_ARGUMENT, ctl.CreateVolume(create_req(fileSystemId=ids.new_id("fs")), FakeContext()),
           "File System does not exist")


def test_create_twice_is_one_access_point(ctl: FileController, provider: FakeFileProvider) -> None:
    replies = [call(ctl.CreateVolume(create_req(), FakeContext())) for _ in range(2)]
    assert replies[0] == replies[1]
    assert len(provider.access_points) == 1
    assert replies[0].volume.volume_id.startswith(f"{FS}::fsap-")


@pytest.mark.parametrize("error,code", [
    (AlreadyExists("pvc-1 exists with other parameters"), C.ALREADY_EXISTS),
    (Exhausted("no GID left in 1000-2000"), C.RESOURCE_EXHAUSTED),
    (Unavailable("EFS throttled"), C.UNAVAILABLE),
])
def test_provider_errors_map_to_their_code(ctl: FileController, provider: FakeFileProvider, error: Exception,
                                           code: grpc.StatusCode) -> None:
    provider.fail["create_access_point"] = error
    expect(code, ctl.CreateVolume(create_req(), FakeContext()), str(error))


def test_delete_is_idempotent_and_never_deletes_static_volumes(ctl: FileController, provider: FakeFileProvider) -> None:
    vid = call(ctl.CreateVolume(create_req(), FakeContext())).volume.volume_id
    for _ in range(2):
        call(ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), FakeContext()))
    assert provider.access_points == {}
    for static in (FS, f"{FS}:/data", "junk"):
        call(ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=static), FakeContext()))
    assert provider.calls.count("delete_access_point") == 2
    expect(C.INVALID_ARGUMENT, ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(), FakeContext()), "volume_id")


def test_attach_and_capacity_are_unimplemented(ctl: FileController) -> None:
    expect(C.UNIMPLEMENTED, ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(), FakeContext()),
           "attachRequired")
    expect(C.UNIMPLEMENTED, ctl.GetCapacity(csi_pb2.GetCapacityRequest(), FakeContext()))


def test_expand_validates_and_is_idempotent(ctl: FileController, provider: FakeFileProvider) -> None:
    vid = call(ctl.CreateVolume(create_req(), FakeContext())).volume.volume_id
    req = csi_pb2.ControllerExpandVolumeRequest(volume_id=vid, capacity_range=csi_pb2.CapacityRange(required_bytes=8 * GiB))
    replies = [call(ctl.ControllerExpandVolume(req, FakeContext())) for _ in range(2)]
    assert replies[0] == replies[1] and replies[0].capacity_bytes == 8 * GiB
    assert not replies[0].node_expansion_required
    req.capacity_range.limit_bytes = GiB
    expect(C.OUT_OF_RANGE, ctl.ControllerExpandVolume(req, FakeContext()), "limit_bytes")
    req.ClearField("capacity_range")
    expect(C.INVALID_ARGUMENT, ctl.ControllerExpandVolume(req, FakeContext()), "capacity_range")
    missing = csi_pb2.ControllerExpandVolumeRequest(
        volume_id=f"{FS}::{ids.new_id('fsap')}", capacity_range=csi_pb2.CapacityRange(required_bytes=GiB))
    expect(C.NOT_FOUND, ctl.ControllerExpandVolume(missing, FakeContext()))


def test_validate_and_get_volume(ctl: FileController) -> None:
    vid = call(ctl.CreateVolume(create_req(), FakeContext())).volume.volume_id
    ok = call(ctl.ValidateVolumeCapabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id=vid, volume_capabilities=[mount_cap(MODE.MULTI_NODE_MULTI_WRITER, "")]), FakeContext()))
    assert ok.HasField("confirmed")
    no = call(ctl.ValidateVolumeCapabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id=vid, volume_capabilities=[block_cap()]), FakeContext()))
    assert not no.HasField("confirmed") and "raw" in no.message
    got = call(ctl.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id=vid), FakeContext()))
    assert got.volume.capacity_bytes == 5 * GiB
    expect(C.NOT_FOUND, ctl.ControllerGetVolume(
        csi_pb2.ControllerGetVolumeRequest(volume_id=f"{FS}::{ids.new_id('fsap')}"), FakeContext()))


def test_snapshot_of_a_static_volume_is_refused(ctl: FileController) -> None:
    expect(C.INVALID_ARGUMENT, ctl.CreateSnapshot(
        csi_pb2.CreateSnapshotRequest(source_volume_id=f"{FS}:/data", name="s"), FakeContext()), "static")
    expect(C.INVALID_ARGUMENT, ctl.CreateSnapshot(
        csi_pb2.CreateSnapshotRequest(source_volume_id=FS), FakeContext()), "name")
