"""The file driver with --provider aws (EFS access points), through the real gRPC socket.

There is no NFS client here: the server's recording mounter logs the efs-utils command a node
would run and binds a local directory that plays the file system, so two pods share data.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from elastivol.client import volume_capability
from elastivol.csi import csi_pb2
from tests.aws.support import ZONE_A, AwsServer, FakeImds, Moto, imds_env, start_server, sub_work
from tests.helpers import expect_error

SEED_003 = {"provisioningMode": "efs-ap", "directoryPerms": "700", "gidRangeStart": "1000", "gidRangeEnd": "2000",
            "basePath": "/prod_airflow"}
EVERY = {**SEED_003, "subPathPattern": "${.PVC.namespace}/${.PVC.name}", "ensureUniqueDirectory": "true",
         "reuseAccessPoint": "false", "deleteAccessPointRootDir": "true", "az": ZONE_A, "uid": "1500"}
PVC = {"csi.storage.k8s.io/pvc/name": "logs", "csi.storage.k8s.io/pvc/namespace": "airflow",
       "csi.storage.k8s.io/pv/name": "pvc-7f3a"}
RWX = volume_capability(mode="MULTI_NODE_MULTI_WRITER")


@pytest.fixture(scope="module")
def work(aws_work: Path) -> Path:
    return sub_work(aws_work, "file")


@pytest.fixture(scope="module")
def fs_id(raw_efs: Any) -> str:
    return str(raw_efs.create_file_system(CreationToken=uuid.uuid4().hex, Tags=[{"Key": "Name", "Value": "efs_fs"}])["FileSystemId"])


@pytest.fixture(scope="module")
def server(work: Path, aws_env: dict[str, str]) -> Iterator[AwsServer]:
    imds = FakeImds(instance_id="i-0aaaaaaaaaaaaaaaa", zone=ZONE_A).start()
    env = {"ELASTIVOL_EFS_FAKE_ROOT": str(work / "efs"), **imds_env(imds)}
    srv = start_server(work, cluster=f"file-{uuid.uuid4().hex[:8]}", driver="file", env=env,
                       faults={"latency_ms": 5, "consistency_lag": 1})
    yield srv
    srv.stop()
    imds.stop()


def create(client: Any, name: str, params: dict[str, str]) -> csi_pb2.Volume:
    req = csi_pb2.CreateVolumeRequest(name=name, volume_capabilities=[RWX], parameters=params,
                                      capacity_range=csi_pb2.CapacityRange(required_bytes=5 << 30))
    volume: csi_pb2.Volume = client.controller.CreateVolume(req).volume
    return volume


def publish(client: Any, volume_id: str, target: Path) -> None:
    client.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
        volume_id=volume_id, target_path=str(target), volume_capability=RWX))


def unpublish(client: Any, volume_id: str, target: Path) -> None:
    client.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target)))


def test_access_point_lifecycle_with_every_parameter(server: AwsServer, work: Path, fs_id: str, moto: Moto) -> None:
    client = server.client()
    mark = moto.mark()
    vol = create(client, "pvc-7f3a", {**EVERY, "fileSystemId": fs_id, **PVC})
    (req,) = [r for r in moto.requests(mark) if r.action == "CreateAccessPoint"]
    p = req.params
    gid = p["PosixUser"]["Gid"]
    assert 1000 <= gid <= 2000 and p["PosixUser"]["Uid"] == 1500
    path = p["RootDirectory"]["Path"]
    assert path.startswith("/prod_airflow/airflow/logs-") and len(path) <= 100
    assert p["RootDirectory"]["CreationInfo"] == {"OwnerUid": 1500, "OwnerGid": gid, "Permissions": "700"}
    tags = {t["Key"]: t["Value"] for t in p["Tags"]}
    assert tags["elastivol.io/delete-root-dir"] == "true" and tags["kubernetes.io/created-for/pvc/name"] == "logs"
    assert vol.volume_id.startswith(f"{fs_id}::fsap-")
    # EFS is regional: no zone on the volume, and no accessibility constraints advertised.
    assert list(vol.accessible_topology) == []
    caps = client.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest()).capabilities
    assert csi_pb2.PluginCapability.Service.VOLUME_ACCESSIBILITY_CONSTRAINTS not in \
        {c.service.type for c in caps if c.HasField("service")}

    # Two pods share the data through the access point.
    first, second = work / "pods" / "a" / "mount", work / "pods" / "b" / "mount"
    publish(client, vol.volume_id, first)
    publish(client, vol.volume_id, second)
    (first / "out.txt").write_text("efs file test\n")
    assert (second / "out.txt").read_text() == "efs file test\n"
    commands = [json.loads(line) for line in (work / "efs" / "mounts.jsonl").read_text().splitlines()]
    argv = next(c["argv"] for c in commands if c["op"] == "mount" and c["target"] == str(first))
    ap_id = vol.volume_id.split("::")[1]
    assert argv[:4] == ["mount", "-t", "efs", "-o"] and argv[4].split(",")[:2] == ["tls", f"accesspoint={ap_id}"]
    assert argv[5] == f"{fs_id}:/"

    grown = client.controller.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vol.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=8 << 30)))
    assert grown.capacity_bytes == 8 << 30 and not grown.node_expansion_required
    # At or below the current capacity: the current capacity, and the recorded tag is left alone.
    smaller = client.controller.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vol.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=6 << 30)))
    assert smaller.capacity_bytes == 8 << 30

    for target in (first, second):
        unpublish(client, vol.volume_id, target)
    root = work / "efs" / fs_id / path.lstrip("/")
    assert root.exists()
    client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id))
    client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id))
    assert not root.exists(), "deleteAccessPointRootDir removed the directory"


def test_gid_allocation_under_concurrency(server: AwsServer, fs_id: str) -> None:
    params = {**SEED_003, "fileSystemId": fs_id, "gidRangeStart": "3000", "gidRangeEnd": "3007"}
    got: list[int] = []
    lock = threading.Lock()

    def make(i: int) -> None:
        with server.client() as client:
            vol = create(client, f"pvc-gid-{i}", params)
        with lock:
            got.append(int(vol.volume_context["storage.elastivol.io/gid"]))

    threads = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got) == list(range(3000, 3008))
    message = expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, create, server.client(), "pvc-gid-full", params)
    assert "gidRangeEnd" in message


def test_enforce_capacity_is_refused_with_the_reason(server: AwsServer, fs_id: str) -> None:
    message = expect_error(grpc.StatusCode.INVALID_ARGUMENT, create, server.client(), "pvc-quota",
                           {**SEED_003, "fileSystemId": fs_id, "enforceCapacity": "true"})
    assert "EFS has no per-directory quota" in message
