"""Every error case the foundation names, with its gRPC code and a message a person can act on."""

from __future__ import annotations

import concurrent.futures
import errno
import os
from pathlib import Path

import grpc
import pytest

from elastivol.client import CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.errors import Exhausted
from elastivol.params.block import parse_block_parameters
from elastivol.process import ServerProcess
from elastivol.providers.block import VolumeSpec
from elastivol.providers.local.block import LocalBlockProvider
from elastivol.providers.local.pool import Pool
from tests.helpers import code_of, expect_error, new_volume

C = grpc.StatusCode


def test_unknown_parameter_is_named(client: CsiClient) -> None:
    expect_error(C.INVALID_ARGUMENT, client.create_volume, "bad-param", 1 << 30,
                 parameters={"type": "gp3", "iopsPerGb": "10", "colour": "blue"}, match="colour")


def test_rwx_on_block_driver_gives_the_ebs_message(client: CsiClient) -> None:
    expect_error(
        C.INVALID_ARGUMENT, client.create_volume, "rwx", 1 << 30,
        cap=volume_capability(mode="MULTI_NODE_MULTI_WRITER"),
        match="Volume capabilities MULTI_NODE_MULTI_WRITER not supported. Only AccessModes[ReadWriteOnce] supported.",
    )
    expect_error(C.INVALID_ARGUMENT, client.create_volume, "rox", 1 << 30,
                 cap=volume_capability(mode="MULTI_NODE_READER_ONLY"), match="MULTI_NODE_READER_ONLY not supported")


def test_same_name_other_size_already_exists(client: CsiClient) -> None:
    first = client.create_volume("same-name", 1 << 30)
    again = client.create_volume("same-name", 1 << 30)
    assert again.volume_id == first.volume_id
    expect_error(C.ALREADY_EXISTS, client.create_volume, "same-name", 2 << 30, match=first.volume_id)
    expect_error(C.ALREADY_EXISTS, client.create_volume, "same-name", 1 << 30, parameters={"type": "gp2"})
    client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=first.volume_id))


def test_sizes_round_up_and_limits_hold(client: CsiClient) -> None:
    vol = client.create_volume("round-up", (1 << 30) + 1)
    assert vol.capacity_bytes == 2 << 30
    client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id))
    req = csi_pb2.CreateVolumeRequest(
        name="too-tight", capacity_range=csi_pb2.CapacityRange(required_bytes=(1 << 30) + 1, limit_bytes=(1 << 30) + 10),
        volume_capabilities=[volume_capability()])
    expect_error(C.OUT_OF_RANGE, client.controller.CreateVolume, req)
    expect_error(C.OUT_OF_RANGE, client.create_volume, "too-big", 20000 << 30)
    default = client.controller.CreateVolume(csi_pb2.CreateVolumeRequest(
        name="default-size", volume_capabilities=[volume_capability()])).volume
    assert default.capacity_bytes == 1 << 30
    client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=default.volume_id))


def test_encrypted_needs_dm_crypt(client: CsiClient) -> None:
    expect_error(C.INVALID_ARGUMENT, client.create_volume, "enc", 1 << 30,
                 parameters={"encrypted": "true"}, match="dm-crypt")


def test_unservable_zone_is_resource_exhausted(client: CsiClient) -> None:
    details = expect_error(C.RESOURCE_EXHAUSTED, client.create_volume, "far-away", 1 << 30, zone="zone-z")
    assert "zone-a" in details and "zone-b" in details


def test_topology_is_returned(client: CsiClient) -> None:
    vol = client.create_volume("in-zone-b", 1 << 30, zone="zone-b")
    segments = dict(vol.accessible_topology[0].segments)
    assert segments["topology.kubernetes.io/zone"] == "zone-b"
    assert segments["topology.elastivol.io/zone"] == "zone-b"
    client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id))


def test_publish_across_zones_and_to_second_node(client: CsiClient, node_b: ServerProcess, work: Path) -> None:
    vol = new_volume(client, work, "zone-a-vol", zone="zone-a")
    vol.node_id = "node-b"
    details = expect_error(C.FAILED_PRECONDITION, vol.controller_publish)
    assert "zone-a" in details and "zone-b" in details
    vol.node_id = "node-a"
    vol.controller_publish()
    b = new_volume(client, work, "zone-b-vol", zone="zone-b", node_id="node-b")
    b.controller_publish()
    # Now the zone-a volume is attached to node-a: a second node is refused, naming the first.
    vol2 = new_volume(client, work, "zone-b-vol2", zone="zone-b", node_id="node-b")
    vol2.controller_publish()
    vol2.node_id = "node-c"
    expect_error(C.NOT_FOUND, vol2.controller_publish, match="node-c")
    details = expect_error(C.FAILED_PRECONDITION, client.controller.DeleteVolume,
                           csi_pb2.DeleteVolumeRequest(volume_id=vol.id))
    assert "still attached to node node-a" in details and "unpublish it first" in details
    for v, node in ((vol, "node-a"), (b, "node-b"), (vol2, "node-b")):
        v.node_id = node
        v.controller_unpublish()
        v.delete()


def test_attached_elsewhere_names_the_node(client: CsiClient, node_b: ServerProcess, work: Path) -> None:
    vol = new_volume(client, work, "one-node-at-a-time", zone="zone-b", node_id="node-b")
    vol.controller_publish()
    with CsiClient(node_b.endpoint):
        pass
    other = csi_pb2.ControllerPublishVolumeRequest(volume_id=vol.id, node_id="node-a", volume_capability=vol.cap)
    # node-a is in zone-a, so the zone check fires first; what matters is that it is refused.
    expect_error(C.FAILED_PRECONDITION, client.controller.ControllerPublishVolume, other)
    vol.controller_unpublish()
    vol.delete()


def test_malformed_ids_never_touch_the_pool(client: CsiClient) -> None:
    for bad in ("../../etc/passwd", "vol-XYZ", "vol-" + "a" * 40, "/abs/path"):
        assert code_of(client.controller.DeleteVolume, csi_pb2.DeleteVolumeRequest(volume_id=bad)) == C.OK
        expect_error(C.NOT_FOUND, client.controller.ControllerPublishVolume, csi_pb2.ControllerPublishVolumeRequest(
            volume_id=bad, node_id="node-a", volume_capability=volume_capability()))
        expect_error(C.NOT_FOUND, client.controller.ControllerGetVolume, csi_pb2.ControllerGetVolumeRequest(volume_id=bad))


def test_missing_fields_are_invalid_argument(client: CsiClient) -> None:
    expect_error(C.INVALID_ARGUMENT, client.controller.CreateVolume, csi_pb2.CreateVolumeRequest(
        volume_capabilities=[volume_capability()]), match="name is required")
    expect_error(C.INVALID_ARGUMENT, client.controller.CreateVolume, csi_pb2.CreateVolumeRequest(name="x"),
                 match="volume_capabilities is required")
    expect_error(C.INVALID_ARGUMENT, client.controller.DeleteVolume, csi_pb2.DeleteVolumeRequest())


def test_list_volumes_paginates_and_rejects_bad_tokens(client: CsiClient) -> None:
    made = [client.create_volume(f"page-{i}", 1 << 30).volume_id for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        resp = client.controller.ListVolumes(csi_pb2.ListVolumesRequest(max_entries=2, starting_token=token))
        assert len(resp.entries) <= 2
        seen += [e.volume.volume_id for e in resp.entries]
        token = resp.next_token
        if not token:
            break
    assert set(made) <= set(seen) and len(seen) == len(set(seen))
    expect_error(C.ABORTED, client.controller.ListVolumes, csi_pb2.ListVolumesRequest(starting_token="garbage"))
    for vid in made:
        client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid))


def test_paths_outside_allowed_roots_are_refused(client: CsiClient, work: Path, tmp_path: Path) -> None:
    vol = new_volume(client, work, "path-guard")
    vol.controller_publish()
    vol.staging = Path("/etc/elastivol-should-not-exist")
    expect_error(C.INVALID_ARGUMENT, vol.stage, match="--allowed-root")
    escape = work / "kubelet" / "escape"
    escape.parent.mkdir(parents=True, exist_ok=True)
    escape.symlink_to(tmp_path)
    vol.staging = escape / "staging"
    expect_error(C.INVALID_ARGUMENT, vol.stage)
    assert not (tmp_path / "staging").exists()
    escape.unlink()
    vol.controller_unpublish()
    vol.delete()


def test_read_write_once_pod_allows_one_target(client: CsiClient, work: Path) -> None:
    vol = new_volume(client, work, "rwop", mode="SINGLE_NODE_SINGLE_WRITER")
    vol.up()
    expect_error(C.FAILED_PRECONDITION, vol.publish, work / "kubelet" / "pods" / "second" / "mount",
                 match="ReadWriteOncePod")
    vol.down()
    vol.delete()


def test_stats_for_unknown_path_is_not_found(client: CsiClient, work: Path) -> None:
    vol = new_volume(client, work, "stats")
    vol.up()
    resp = client.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=vol.id, volume_path=str(vol.target)))
    units = {u.unit: u for u in resp.usage}
    assert units[csi_pb2.VolumeUsage.BYTES].total > 900 << 20
    assert units[csi_pb2.VolumeUsage.INODES].total > 0
    assert not resp.volume_condition.abnormal
    expect_error(C.NOT_FOUND, client.node.NodeGetVolumeStats, csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=vol.id, volume_path=str(work / "kubelet" / "nowhere")))
    vol.down()
    vol.delete()


def test_concurrent_creates_of_one_name_make_one_volume(client: CsiClient) -> None:
    def create() -> str:
        try:
            return client.create_volume("racy", 1 << 30).volume_id
        except grpc.RpcError as exc:
            assert exc.code() == C.ABORTED, exc.details()
            assert "already in progress" in (exc.details() or "")
            return ""

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ids = {i for i in pool.map(lambda _: create(), range(32)) if i}
    ids.add(client.create_volume("racy", 1 << 30).volume_id)
    assert len(ids) == 1
    named = [e for e in client.controller.ListVolumes(csi_pb2.ListVolumesRequest()).entries
             if e.volume.volume_id in ids]
    assert len(named) == 1
    client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=ids.pop()))


@pytest.mark.parametrize("method", ["GetPluginInfo", "GetPluginCapabilities", "Probe"])
def test_identity(client: CsiClient, method: str) -> None:
    req = getattr(csi_pb2, f"{method}Request")()
    resp = getattr(client.identity, method)(req)
    if method == "GetPluginInfo":
        assert resp.name == "block.csi.elastivol.io" and resp.vendor_version
    elif method == "Probe":
        assert resp.ready.value is True
    else:
        kinds = {c.WhichOneof("type") for c in resp.capabilities}
        assert kinds == {"service", "volume_expansion"}
        services = {c.service.type for c in resp.capabilities if c.HasField("service")}
        assert services == {csi_pb2.PluginCapability.Service.CONTROLLER_SERVICE,
                            csi_pb2.PluginCapability.Service.VOLUME_ACCESSIBILITY_CONSTRAINTS,
                            csi_pb2.PluginCapability.Service.GROUP_CONTROLLER_SERVICE}


@pytest.mark.parametrize(
    ("where", "err", "said"),
    [
        ("image", errno.ENOSPC, "while making the image of 'full-image' (No space left on device); nothing was kept"),
        ("record", errno.EDQUOT, "while recording 'full-record'; nothing was kept"),
    ],
)
def test_pool_running_out_of_space_keeps_nothing(pool_dir: Path, monkeypatch: pytest.MonkeyPatch, where: str,
                                                 err: int, said: str) -> None:
    """A full pool (or quota) part way through CreateVolume: Exhausted saying where and what to do, and
    neither an image nor a record left behind. The provider runs in this process on the shared pool."""
    pool = Pool(pool_dir)
    provider = LocalBlockProvider(pool, ["zone-a"])
    name = f"full-{where}"

    def full(*args: object, **kw: object) -> None:
        raise OSError(err, os.strerror(err))

    if where == "image":
        monkeypatch.setattr(provider, "_write_image", full)
    else:
        monkeypatch.setattr(pool.volumes, "put", full)
    images_before = set(os.listdir(pool.images))
    spec = VolumeSpec(name=name, size_bytes=1 << 30, zone="zone-a", params=parse_block_parameters({}))
    with pytest.raises(Exhausted) as caught:
        provider.create_volume(spec)
    assert caught.value.message == (
        f"pool {pool.directory} ran out of space {said}: free space or grow the pool, then retry"
    )
    assert set(os.listdir(pool.images)) == images_before
    assert pool.volumes.find("name", name) is None
