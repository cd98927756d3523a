"""The block node servicer against a fake host and a fake node provider."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from elastivol import ids
from elastivol.csi import csi_pb2
from elastivol.drivers.block.node import BlockNode
from elastivol.errors import Exhausted, FailedPrecondition, Unavailable
from elastivol.locks import InFlight
from elastivol.node.paths import PathGuard
from tests.unit.servicers.conftest import call
from tests.unit.servicers.fakes import FakeBlockNodeProvider, FakeContext, FakeHost
from tests.unit.servicers.support import MODE, C, block_cap, expect, mount_cap

VOL = ids.new_id("vol")


@pytest.fixture
def provider() -> FakeBlockNodeProvider:
    return FakeBlockNodeProvider([VOL])


@pytest.fixture
def node(provider: FakeBlockNodeProvider, inflight: InFlight, guard: PathGuard, host: FakeHost) -> BlockNode:
    return BlockNode(provider, inflight, guard, node_id="n1", zone="zone-a", max_volumes=8, host=host)


def stage_req(root: Path, volume_id: str = VOL, cap: csi_pb2.VolumeCapability | None = None) -> csi_pb2.NodeStageVolumeRequest:
    return csi_pb2.NodeStageVolumeRequest(
        volume_id=volume_id, staging_target_path=str(root / "stage" / volume_id),
        volume_capability=cap or mount_cap(), publish_context={"devicePath": "x"},
    )


def publish_req(root: Path, target: str = "pod1", cap: csi_pb2.VolumeCapability | None = None,
                readonly: bool = False) -> csi_pb2.NodePublishVolumeRequest:
    return csi_pb2.NodePublishVolumeRequest(
        volume_id=VOL, staging_target_path=str(root / "stage" / VOL), target_path=str(root / target),
        volume_capability=cap or mount_cap(), readonly=readonly,
    )


# -- validation: each missing or bad field is INVALID_ARGUMENT naming it -------------------------
@pytest.mark.parametrize("field", ["volume_id", "staging_target_path", "volume_capability"])
def test_stage_requires_each_field(node: BlockNode, root: Path, field: str) -> None:
    req = stage_req(root)
    req.ClearField(field)
    expect(C.INVALID_ARGUMENT, node.NodeStageVolume(req, FakeContext()), field)


@pytest.mark.parametrize("field", ["volume_id", "target_path", "volume_capability"])
def test_publish_requires_each_field(node: BlockNode, root: Path, field: str) -> None:
    req = publish_req(root)
    req.ClearField(field)
    expect(C.INVALID_ARGUMENT, node.NodePublishVolume(req, FakeContext()), field)


def test_publish_without_staging_path_is_failed_precondition(node: BlockNode, root: Path) -> None:
    req = publish_req(root)
    req.ClearField("staging_target_path")
    expect(C.FAILED_PRECONDITION, node.NodePublishVolume(req, FakeContext()), "staging_target_path")


@pytest.mark.parametrize("rpc,req,field", [
    ("NodeUnstageVolume", csi_pb2.NodeUnstageVolumeRequest(staging_target_path="/x"), "volume_id"),
    ("NodeUnstageVolume", csi_pb2.NodeUnstageVolumeRequest(volume_id=VOL), "staging_target_path"),
    ("NodeUnpublishVolume", csi_pb2.NodeUnpublishVolumeRequest(target_path="/x"), "volume_id"),
    ("NodeUnpublishVolume", csi_pb2.NodeUnpublishVolumeRequest(volume_id=VOL), "target_path"),
    ("NodeGetVolumeStats", csi_pb2.NodeGetVolumeStatsRequest(volume_path="/x"), "volume_id"),
    ("NodeGetVolumeStats", csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOL), "volume_path"),
    ("NodeExpandVolume", csi_pb2.NodeExpandVolumeRequest(volume_path="/x"), "volume_id"),
    ("NodeExpandVolume", csi_pb2.NodeExpandVolumeRequest(volume_id=VOL), "volume_path"),
])
def test_other_calls_require_each_field(node: BlockNode, rpc: str, req: object, field: str) -> None:
    expect(C.INVALID_ARGUMENT, getattr(node, rpc)(req, FakeContext()), field)


def test_paths_outside_the_allowed_roots_are_refused_by_field(node: BlockNode, root: Path, host: FakeHost) -> None:
    req = stage_req(root)
    req.staging_target_path = "/etc/stage"
    expect(C.INVALID_ARGUMENT, node.NodeStageVolume(req, FakeContext()), "staging_target_path", "outside")
    req = publish_req(root)
    req.target_path = "relative/path"
    expect(C.INVALID_ARGUMENT, node.NodePublishVolume(req, FakeContext()), "target_path", "not absolute")
    assert host.effects == []


def test_multi_node_filesystem_access_is_refused_with_the_ebs_wording(node: BlockNode, root: Path) -> None:
    req = stage_req(root, cap=mount_cap(MODE.MULTI_NODE_MULTI_WRITER))
    expect(C.INVALID_ARGUMENT, node.NodeStageVolume(req, FakeContext()), "MULTI_NODE_MULTI_WRITER not supported")


def test_bad_mount_option_is_refused_before_any_host_effect(node: BlockNode, root: Path, host: FakeHost) -> None:
    cap = mount_cap()
    cap.mount.mount_flags.append("rw,suid")
    expect(C.INVALID_ARGUMENT, node.NodeStageVolume(stage_req(root, cap=cap), FakeContext()), "rw,suid")
    assert host.effects == []


# -- error mapping --------------------------------------------------------------------------------
def test_unknown_volume_is_not_found(node: BlockNode, root: Path) -> None:
    other = ids.new_id("vol")
    expect(C.NOT_FOUND, node.NodeStageVolume(stage_req(root, other), FakeContext()), other)
    expect(C.NOT_FOUND, node.NodeStageVolume(stage_req(root, "not-an-id"), FakeContext()))


@pytest.mark.parametrize("error,code", [
    (Exhausted("no free loop device"), C.RESOURCE_EXHAUSTED),
    (Unavailable("pool is not mounted"), C.UNAVAILABLE),
    (FailedPrecondition("attached elsewhere"), C.FAILED_PRECONDITION),
])
def test_provider_errors_keep_their_code_and_message(
    node: BlockNode, provider: FakeBlockNodeProvider, root: Path, error: Exception, code: grpc.StatusCode
) -> None:
    provider.fail["attach_device"] = error
    expect(code, node.NodeStageVolume(stage_req(root), FakeContext()), str(error))


def test_a_refused_stage_detaches_the_device_it_attached(
    node: BlockNode, provider: FakeBlockNodeProvider, host: FakeHost, root: Path
) -> None:
    host.fail["stage_filesystem"] = FailedPrecondition("blank and read-only")
    expect(C.FAILED_PRECONDITION, node.NodeStageVolume(stage_req(root), FakeContext()), "blank and read-only")
    assert provider.attached == {}
    assert provider.calls.count("detach_device") == 1


def test_host_failure_that_is_a_bug_is_internal(node: BlockNode, host: FakeHost, root: Path) -> None:
    host.fail["stage_filesystem"] = KeyError("oops")
    expect(C.INTERNAL, node.NodeStageVolume(stage_req(root), FakeContext()), "KeyError")


# -- idempotency: same request twice, same reply, one effect -------------------------------------
def test_stage_publish_unpublish_unstage_twice_each_has_one_effect(
    node: BlockNode, provider: FakeBlockNodeProvider, host: FakeHost, root: Path
) -> None:
    ctx = FakeContext()
    replies = [call(node.NodeStageVolume(stage_req(root), ctx)) for _ in range(2)]
    assert replies[0] == replies[1]
    assert host.effects == [("mkfs", f"/dev/fake-{VOL}"), ("mount", str(root / "stage" / VOL))]
    replies = [call(node.NodePublishVolume(publish_req(root), ctx)) for _ in range(2)]
    assert replies[0] == replies[1]
    assert host.effects[2:] == [("bind", str(root / "pod1"))]
    for _ in range(2):
        call(node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(volume_id=VOL, target_path=str(root / "pod1")), ctx))
    assert host.effects[3:] == [("umount", str(root / "pod1"))]
    for _ in range(2):
        call(node.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(volume_id=VOL, staging_target_path=str(root / "stage" / VOL)), ctx))
    assert host.effects[4:] == [("umount", str(root / "stage" / VOL))]
    assert provider.attached == {}
    # Restaging finds the filesystem made the first time: no second mkfs.
    call(node.NodeStageVolume(stage_req(root), ctx))
    assert [e for e in host.effects if e[0] == "mkfs"] == [("mkfs", f"/dev/fake-{VOL}")]


def test_publish_readonly_over_a_readwrite_publication_is_already_exists(node: BlockNode, root: Path) -> None:
    call(node.NodeStageVolume(stage_req(root), FakeContext()))
    call(node.NodePublishVolume(publish_req(root), FakeContext()))
    expect(C.ALREADY_EXISTS, node.NodePublishVolume(publish_req(root, readonly=True), FakeContext()), "readonly")


def test_publish_before_stage_is_failed_precondition(node: BlockNode, root: Path, host: FakeHost) -> None:
    expect(C.FAILED_PRECONDITION, node.NodePublishVolume(publish_req(root), FakeContext()), "NodeStageVolume")
    expect(C.FAILED_PRECONDITION, node.NodePublishVolume(publish_req(root, cap=block_cap()), FakeContext()),
           "stage it first")
    assert host.effects == []


def test_read_write_once_pod_refuses_a_second_target(node: BlockNode, root: Path) -> None:
    rwop = mount_cap(MODE.SINGLE_NODE_SINGLE_WRITER)
    call(node.NodeStageVolume(stage_req(root, cap=rwop), FakeContext()))
    call(node.NodePublishVolume(publish_req(root, "pod1", rwop), FakeContext()))
    expect(C.FAILED_PRECONDITION, node.NodePublishVolume(publish_req(root, "pod2", rwop), FakeContext()),
           "ReadWriteOncePod", str(root / "pod1"))


def test_unstage_of_a_volume_that_never_existed_is_not_found(node: BlockNode, root: Path) -> None:
    other = ids.new_id("vol")
    req = csi_pb2.NodeUnstageVolumeRequest(volume_id=other, staging_target_path=str(root / "stage" / other))
    expect(C.NOT_FOUND, node.NodeUnstageVolume(req, FakeContext()), other)


# -- stats, expansion, info -------------------------------------------------------------------
def test_stats_of_a_published_volume_and_of_a_path_that_holds_nothing(node: BlockNode, root: Path, host: FakeHost) -> None:
    call(node.NodeStageVolume(stage_req(root), FakeContext()))
    call(node.NodePublishVolume(publish_req(root), FakeContext()))
    reply = call(node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOL, volume_path=str(root / "pod1")), FakeContext()))
    units = {u.unit: u for u in reply.usage}
    assert units[csi_pb2.VolumeUsage.BYTES].total == host.fs_bytes
    assert units[csi_pb2.VolumeUsage.INODES].used == 100
    assert reply.volume_condition.abnormal is False
    (root / "empty").mkdir()
    expect(C.NOT_FOUND, node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOL, volume_path=str(root / "empty")), FakeContext()),
        "nothing is mounted")
    expect(C.NOT_FOUND, node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOL, volume_path="/etc"), FakeContext()), VOL)


def test_stats_of_a_volume_gone_from_the_backend_is_abnormal(
    node: BlockNode, provider: FakeBlockNodeProvider, root: Path
) -> None:
    call(node.NodeStageVolume(stage_req(root), FakeContext()))
    provider.known.clear()
    reply = call(node.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id=VOL, volume_path=str(root / "stage" / VOL)), FakeContext()))
    assert reply.volume_condition.abnormal is True
    assert "no longer exists" in reply.volume_condition.message


def test_expand_grows_the_mounted_filesystem_once_per_call(node: BlockNode, host: FakeHost, root: Path) -> None:
    call(node.NodeStageVolume(stage_req(root), FakeContext()))
    req = csi_pb2.NodeExpandVolumeRequest(volume_id=VOL, volume_path=str(root / "stage" / VOL))
    assert call(node.NodeExpandVolume(req, FakeContext())).capacity_bytes == 4 << 30
    assert host.effects[-1] == ("grow", f"/dev/fake-{VOL}")


def test_info_and_capabilities(node: BlockNode) -> None:
    info = call(node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), FakeContext()))
    assert (info.node_id, info.max_volumes_per_node) == ("n1", 8)
    assert "zone-a" in info.accessible_topology.segments.values()
    caps = call(node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest(), FakeContext()))
    types = {c.rpc.type for c in caps.capabilities}
    assert csi_pb2.NodeServiceCapability.RPC.STAGE_UNSTAGE_VOLUME in types
