"""Seed 000's EFS flow: two pods on two nodes in two zones share one ReadWriteMany volume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc

from elastivol import FILE_DRIVER_NAME
from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.node import mount
from elastivol.providers.local.file.registry import FileRegistry
from tests.helpers import expect_error
from tests.integration.file.helpers import RWX, ap_dir, create, delete, mounted_under, published, sc

WRITER = """
import os, sys, time
path, tag = sys.argv[1], sys.argv[2]
for i in range(40):
    with open(path, "a") as fh:
        fh.write(f"{tag} line {i}\\n")
        fh.flush()
        os.fsync(fh.fileno())
    time.sleep(0.005)
"""


def _writer(target: Path, name: str, tag: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(target / name), tag])


def test_two_nodes_in_two_zones_share_one_volume(
    client: CsiClient, client_b: CsiClient, btrfs_fs: str, registry: FileRegistry, fwork: Path
) -> None:
    vol = create(client, "pvc-shared", sc(btrfs_fs, basePath="/dynamic_provisioning"))
    assert list(vol.accessible_topology) == [], "file volumes must carry no zone (no PV node affinity)"
    pod1 = published(client, fwork, vol.volume_id, "app1", node="node-a")
    pod2 = published(client_b, fwork, vol.volume_id, "app2", node="node-b")
    # Each pod appends to its own file while the other does the same (seed 000's out1/out2.txt).
    writers = [_writer(pod1.target, "out1.txt", "app1"), _writer(pod2.target, "out2.txt", "app2")]
    assert [w.wait(30) for w in writers] == [0, 0]
    seen_by_1 = (pod1.target / "out2.txt").read_text().splitlines()
    seen_by_2 = (pod2.target / "out1.txt").read_text().splitlines()
    assert seen_by_1 == [f"app2 line {i}" for i in range(40)]
    assert seen_by_2 == [f"app1 line {i}" for i in range(40)]
    # Both are binds of the access point's directory, which holds both files.
    assert sorted(p.name for p in ap_dir(registry, vol).iterdir()) == ["out1.txt", "out2.txt"]
    pod1.unpublish()
    pod2.unpublish()
    assert mounted_under(fwork) == []
    delete(client, vol.volume_id)


def test_identity_and_capabilities(client: CsiClient, client_b: CsiClient) -> None:
    info = client.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert info.name == FILE_DRIVER_NAME == "file.csi.elastivol.io"
    caps = client.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest()).capabilities
    services = {c.service.type for c in caps if c.HasField("service")}
    expansion = {c.volume_expansion.type for c in caps if c.HasField("volume_expansion")}
    svc = csi_pb2.PluginCapability.Service
    # A regional file system: no VOLUME_ACCESSIBILITY_CONSTRAINTS (see test_regional.py).
    assert services == {svc.CONTROLLER_SERVICE}
    assert expansion == {csi_pb2.PluginCapability.VolumeExpansion.ONLINE}
    rpc = csi_pb2.ControllerServiceCapability.RPC
    ctrl = {c.rpc.type for c in client.controller.ControllerGetCapabilities(
        csi_pb2.ControllerGetCapabilitiesRequest()).capabilities}
    assert rpc.CREATE_DELETE_VOLUME in ctrl and rpc.EXPAND_VOLUME in ctrl and rpc.CREATE_DELETE_SNAPSHOT in ctrl
    assert rpc.PUBLISH_UNPUBLISH_VOLUME not in ctrl, "no attach step: attachRequired is false"
    node_caps = {c.rpc.type for c in client.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest()).capabilities}
    assert csi_pb2.NodeServiceCapability.RPC.STAGE_UNSTAGE_VOLUME not in node_caps
    assert csi_pb2.NodeServiceCapability.RPC.GET_VOLUME_STATS in node_caps
    for c, node, zone in ((client, "node-a", "zone-a"), (client_b, "node-b", "zone-b")):
        got = c.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
        assert got.node_id == node
        assert got.accessible_topology.segments["topology.kubernetes.io/zone"] == zone
    # node-b is a node plugin only, yet it says the plugin has a controller service (served on the
    # controller's socket), as a CO asking the node's socket must learn.
    expect_error(grpc.StatusCode.UNIMPLEMENTED, client_b.controller.ControllerGetCapabilities,
                 csi_pb2.ControllerGetCapabilitiesRequest())
    caps_b = client_b.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest()).capabilities
    assert {c.service.type for c in caps_b if c.HasField("service")} == services
    expect_error(grpc.StatusCode.UNIMPLEMENTED, client.controller.ControllerPublishVolume,
                 csi_pb2.ControllerPublishVolumeRequest(volume_id="x", node_id="node-a"))


def test_publish_and_unpublish_are_idempotent(client: CsiClient, btrfs_fs: str, fwork: Path) -> None:
    vol = create(client, "pvc-idem", sc(btrfs_fs))
    pod = published(client, fwork, vol.volume_id, "idem")
    pod.publish()
    assert sum(1 for m in mount.mounts() if m.target == str(pod.target)) == 1
    # The same target with another readonly setting is a conflict, not a silent change.
    pod.readonly = True
    expect_error(grpc.StatusCode.ALREADY_EXISTS, pod.publish, match="readonly")
    pod.unpublish()
    pod.unpublish()
    assert not pod.target.exists()
    # Create and delete are idempotent too, and the name keeps its access point.
    again = create(client, "pvc-idem", sc(btrfs_fs))
    assert again.volume_id == vol.volume_id
    expect_error(grpc.StatusCode.ALREADY_EXISTS, create, client, "pvc-idem", sc(btrfs_fs, directoryPerms="755"),
                 match="different settings")
    delete(client, vol.volume_id)
    delete(client, vol.volume_id)


def test_list_and_get_volume(client: CsiClient, btrfs_fs: str, registry: FileRegistry) -> None:
    vols = [create(client, f"pvc-list-{i}", sc(btrfs_fs), size=(i + 1) << 30) for i in range(3)]
    listed = {e.volume.volume_id: e for e in client.controller.ListVolumes(csi_pb2.ListVolumesRequest()).entries}
    for v in vols:
        assert listed[v.volume_id].volume.capacity_bytes == v.capacity_bytes
        assert not listed[v.volume_id].status.volume_condition.abnormal
    page = client.controller.ListVolumes(csi_pb2.ListVolumesRequest(max_entries=2))
    assert len(page.entries) == 2 and page.next_token
    got = client.controller.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id=vols[0].volume_id))
    assert got.volume.capacity_bytes == 1 << 30 and got.status.volume_condition.message == "healthy"
    ap_dir(registry, vols[1]).rename(ap_dir(registry, vols[1]).with_name("moved-away"))
    got = client.controller.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id=vols[1].volume_id))
    assert got.status.volume_condition.abnormal and "missing" in got.status.volume_condition.message
    for v in vols:
        delete(client, v.volume_id)


def test_readwriteoncepod_refuses_a_second_target(client: CsiClient, btrfs_fs: str, fwork: Path) -> None:
    vol = create(client, "pvc-rwop", sc(btrfs_fs), mode="SINGLE_NODE_SINGLE_WRITER")
    first = published(client, fwork, vol.volume_id, "rwop-1", mode="SINGLE_NODE_SINGLE_WRITER")
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, published, client, fwork, vol.volume_id, "rwop-2",
                 mode="SINGLE_NODE_SINGLE_WRITER", match="ReadWriteOncePod")
    # ReadWriteMany on the same node is fine.
    other = published(client, fwork, vol.volume_id, "rwx-3", mode=RWX)
    for p in (first, other):
        p.unpublish()
    delete(client, vol.volume_id)
