"""The file node servicer against a fake host and fake file providers (with and without the
optional directory identity)."""

from __future__ import annotations

from pathlib import Path

import pytest

from elastivol import ids
from elastivol.csi import csi_pb2
from elastivol.drivers.file.node import FileNode
from elastivol.errors import PermissionDenied, Unavailable
from elastivol.locks import InFlight
from elastivol.node.paths import PathGuard
from elastivol.providers.file import AccessPointSpec, FileNodeDirectoryIdentity
from tests.unit.servicers.conftest import call
from tests.unit.servicers.fakes import (
    FakeContext,
    FakeFileNodeProvider,
    FakeFileProvider,
    FakeHost,
    FakeLocalFileNodeProvider,
)
from tests.unit.servicers.support import MODE, C, block_cap, expect, mount_cap

FS = ids.new_id("fs")


@pytest.fixture
def catalog() -> FakeFileProvider:
    return FakeFileProvider([FS])


@pytest.fixture
def volume_id(catalog: FakeFileProvider) -> str:
    spec = AccessPointSpec("pvc-1", FS, "/dyn/pvc-1", None, None, (1000, 2000), 0o700, 1 << 30)
    return catalog.create_access_point(spec).volume_id


def make_node(provider: FakeFileNodeProvider, catalog: FakeFileProvider, inflight: InFlight, guard: PathGuard,
              host: FakeHost) -> FileNode:
    return FileNode(provider, catalog, inflight, guard, node_id="n1", zone="zone-a", host=host)


@pytest.fixture
def node(catalog: FakeFileProvider, inflight: InFlight, guard: PathGuard, host: FakeHost) -> FileNode:
    return make_node(FakeLocalFileNodeProvider(host), catalog, inflight, guard, host)


def publish_req(root: Path, volume_id: str, target: str = "pod1",
                cap: csi_pb2.VolumeCapability | None = None) -> csi_pb2.NodePublishVolumeRequest:
    return csi_pb2.NodePublishVolumeRequest(volume_id=volume_id, target_path=str(root / target),
                                            volume_capability=cap or mount_cap(MODE.MULTI_NODE_MULTI_WRITER, ""))


def test_the_local_fake_has_the_optional_capability_and_the_efs_one_not(host: FakeHost) -> None:
    assert isinstance(FakeLocalFileNodeProvider(host), FileNodeDirectoryIdentity)
    assert not isinstance(FakeFileNodeProvider(host), FileNodeDirectoryIdentity)


@pytest.mark.parametrize("field", ["volume_id", "target_path", "volume_capability"])
def test_publish_requires_each_field(node: FileNode, root: Path, volume_id: str, field: str) -> None:
    req = publish_req(root, volume_id)
    req.ClearField(field)
    expect(C.INVALID_ARGUMENT, node.NodePublishVolume(req, FakeContext()), field)


@pytest.mark.parametrize("field", ["volume_id", "target_path"])
def test_unpublish_requires_each_field(node: FileNode, root: Path, volume_id: str, field: str) -> None:
    req = csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(root / "pod1"))
    req.ClearField(field)
    expect(C.INVALID_ARGUMENT, node.NodeUnpublishVolume(req, FakeContext()), field)


def test_raw_block_and_malformed_handles_are_invalid(node: FileNode, root: Path, volume_id: str) -> None:
    expect(C.INVALID_ARGUMENT, node.NodePublishVolume(publish_req(root, volume_id, cap=block_cap()), FakeContext()),
           "raw block")
    expect(C.INVALID_ARGUMENT, node.NodePublishVolume(publish_req(root, "not-a-handle"), FakeContext()))


def test_staging_and_node_expansion_are_unimplemented(node: FileNode) -> None:
    expect(C.UNIMPLEMENTED, node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(), FakeContext()), "not staged")
    expect(C.UNIMPLEMENTED, node.NodeExpandVolume(csi_pb2.NodeExpandVolumeRequest(), FakeContext()))


def test_catalog_errors_keep_their_code(node: FileNode, catalog: FakeFileProvider, root: Path, volume_id: str,
                                        host: FakeHost) -> None:
    missing = f"{FS}::{ids.new_id('fsap')}"
    expect(C.NOT_FOUND, node.NodePublishVolume(publish_req(root, missing), FakeContext()), "does not exist")
    catalog.fail["get_filesystem"] = Unavailable("the EFS API did not answer")
    expect(C.UNAVAILABLE, node.NodePublishVolume(publish_req(root, volume_id), FakeContext()), "did not answer")
    catalog.fail["get_filesystem"] = PermissionDenied("elasticfilesystem:DescribeAccessPoints denied")
    expect(C.PERMISSION_DENIED, node.NodePublishVolume(publish_req(root, volume_id), FakeContext()), "denied")
    assert host.effects == []


def test_publish_and_unpublish_twice_have_one_effect_each(node: FileNode, root: Path, volume_id: str,
                                                          host: FakeHost) -> None:
    replies = [call(node.NodePublishVolume(publish_req(root, volume_id), FakeContext())) for _ in range(2)]
    assert replies[0] == replies[1]
    req = csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(root / "pod1"))
    for _ in range(2):
        call(node.NodeUnpublishVolume(req, FakeContext()))
    assert host.effects == [("bind", str(root / "pod1")), ("umount", str(root / "pod1"))]


def test_read_write_once_pod_is_enforced_only_with_directory_identity(
    catalog: FakeFileProvider, inflight: InFlight, guard: PathGuard, host: FakeHost, root: Path, volume_id: str
) -> None:
    rwop = mount_cap(MODE.SINGLE_NODE_SINGLE_WRITER, "")
    local = make_node(FakeLocalFileNodeProvider(host), catalog, inflight, guard, host)
    call(local.NodePublishVolume(publish_req(root, volume_id, "pod1", rwop), FakeContext()))
    expect(C.FAILED_PRECONDITION, local.NodePublishVolume(publish_req(root, volume_id, "pod2", rwop), FakeContext()),
           "ReadWriteOncePod")
    # Without the capability (EFS) the node cannot tell, and leaves it to the CO.
    efs = make_node(FakeFileNodeProvider(host), catalog, inflight, guard, host)
    call(efs.NodePublishVolume(publish_req(root, volume_id, "pod2", rwop), FakeContext()))


def test_stats(node: FileNode, catalog: FakeFileProvider, root: Path, volume_id: str) -> None:
    call(node.NodePublishVolume(publish_req(root, volume_id), FakeContext()))
    req = csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=str(root / "pod1"))
    reply = call(node.NodeGetVolumeStats(req, FakeContext()))
    assert reply.usage[0].total == 10 << 30 and reply.volume_condition.abnormal is False
    # Another volume's id at that path: the directory identity says it is not there.
    other = catalog.create_access_point(
        AccessPointSpec("pvc-2", FS, "/dyn/pvc-2", None, None, (1000, 2000), 0o700, 1 << 30)).volume_id
    expect(C.NOT_FOUND, node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id=other, volume_path=str(root / "pod1")), FakeContext()),
        "another directory")
    # Gone from the catalog while still mounted: answered, and abnormal.
    catalog.access_points.clear()
    reply = call(node.NodeGetVolumeStats(req, FakeContext()))
    assert reply.volume_condition.abnormal is True and "still mounted" in reply.volume_condition.message
    (root / "empty").mkdir()
    expect(C.NOT_FOUND, node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=str(root / "empty")), FakeContext()))
    expect(C.NOT_FOUND, node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id="junk", volume_path=str(root / "pod1")), FakeContext()), "junk")


def test_info(node: FileNode) -> None:
    info = call(node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), FakeContext()))
    assert info.node_id == "n1"
