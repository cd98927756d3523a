"""The EFS provider against moto and the fault layer, in process (the gRPC path is in test_file_grpc)."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from elastivol.domain import AccessPointSpec
from elastivol.errors import AlreadyExists, Exhausted, InvalidArgument, PermissionDenied
from elastivol.params.file import access_point_spec, parse_file_parameters
from elastivol.providers.aws.controller.efs import EfsProvider
from elastivol.providers.aws.efs_model import CAPACITY_TAG
from elastivol.providers.aws.mounter import MountRequest
from tests.aws.support import Moto, make_clients
from tests.support.aws_faults import FaultConfig
from tests.support.efs import RecordingMounter

PVC = {"csi.storage.k8s.io/pvc/name": "logs", "csi.storage.k8s.io/pvc/namespace": "airflow",
       "csi.storage.k8s.io/pv/name": "pvc-1234"}


@pytest.fixture
def fs_id(raw_efs: Any) -> str:
    return str(raw_efs.create_file_system(CreationToken=uuid.uuid4().hex)["FileSystemId"])


def provider(cluster: str, tmp_path: Path, config: FaultConfig | None = None) -> tuple[EfsProvider, RecordingMounter]:
    clients, _, _ = make_clients(config or FaultConfig())
    mounter = RecordingMounter(tmp_path / "efs", "us-east-1", tmp_path / "mounts.jsonl")
    return EfsProvider(clients, clients.settings, cluster_id=cluster, mounter=mounter, work_dir=str(tmp_path)), mounter


def ap_spec(fs_id: str, name: str, **params: str) -> AccessPointSpec:
    raw = {"provisioningMode": "efs-ap", "fileSystemId": fs_id, "directoryPerms": "700", **PVC, **params}
    return access_point_spec(parse_file_parameters(raw), name, 5 << 30)


def test_create_access_point_request_fields(cluster: str, tmp_path: Path, fs_id: str, moto: Moto) -> None:
    efs, _ = provider(cluster, tmp_path)
    mark = moto.mark()
    ap = efs.create_access_point(ap_spec(fs_id, "pvc-fields", gidRangeStart="1000", gidRangeEnd="2000",
                                         basePath="/prod_airflow", uid="1001"))
    (create,) = [r for r in moto.requests(mark) if r.action == "CreateAccessPoint"]
    p = create.params
    assert p["FileSystemId"] == fs_id and p["PosixUser"] == {"Uid": 1001, "Gid": 1000}
    assert p["RootDirectory"] == {"Path": "/prod_airflow/pvc-fields",
                                  "CreationInfo": {"OwnerUid": 1001, "OwnerGid": 1000, "Permissions": "700"}}
    tags = {t["Key"]: t["Value"] for t in p["Tags"]}
    assert tags["CSIVolumeName"] == "pvc-fields" and tags["elastivol.io/cluster"] == cluster
    assert tags["kubernetes.io/created-for/pvc/namespace"] == "airflow" and tags[CAPACITY_TAG] == str(5 << 30)
    assert len(p["ClientToken"]) <= 64
    assert (ap.uid, ap.gid, ap.perms, ap.directory) == (1001, 1000, 0o700, "/prod_airflow/pvc-fields")


def test_retry_is_idempotent_even_when_the_listing_lags(cluster: str, tmp_path: Path, fs_id: str, moto: Moto) -> None:
    efs, _ = provider(cluster, tmp_path, FaultConfig(consistency_lag=3))
    first = efs.create_access_point(ap_spec(fs_id, "pvc-lag"))
    mark = moto.mark()
    again = efs.create_access_point(ap_spec(fs_id, "pvc-lag"))  # the listing misses it: the ClientToken answers
    assert again.id == first.id and moto.counts(mark)["CreateAccessPoint"] == 0
    with pytest.raises(AlreadyExists):
        efs.create_access_point(ap_spec(fs_id, "pvc-lag", basePath="/elsewhere"))


def test_gid_allocation_under_concurrency_with_pagination(cluster: str, tmp_path: Path, fs_id: str, moto: Moto) -> None:
    efs, _ = provider(cluster, tmp_path, FaultConfig(consistency_lag=1, latency_ms=5))
    efs.PAGE = 4
    got: list[int] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        ap = efs.create_access_point(ap_spec(fs_id, f"pvc-gid-{i}", gidRangeStart="7000", gidRangeEnd="7011"))
        with lock:
            got.append(ap.gid)

    mark = moto.mark()
    threads = [threading.Thread(target=create, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got) == list(range(7000, 7012)), "every access point has its own GID"
    pages = [r for r in moto.requests(mark) if r.action == "DescribeAccessPoints"]
    assert pages, "the allocation lists the existing access points"
    with pytest.raises(Exhausted, match="gidRangeEnd"):
        efs.create_access_point(ap_spec(fs_id, "pvc-gid-full", gidRangeStart="7000", gidRangeEnd="7011"))


def test_listing_follows_next_token(cluster: str, tmp_path: Path, fs_id: str) -> None:
    efs, _ = provider(cluster, tmp_path)
    efs.PAGE = 2
    for i in range(5):
        efs.create_access_point(ap_spec(fs_id, f"pvc-page-{i}"))
    assert {a.name for a in efs.list_access_points(fs_id)} == {f"pvc-page-{i}" for i in range(5)}


def test_reuse_and_delete(cluster: str, tmp_path: Path, fs_id: str) -> None:
    efs, _ = provider(cluster, tmp_path)
    first = efs.create_access_point(ap_spec(fs_id, "pvc-reuse-1", reuseAccessPoint="true"))
    second = efs.create_access_point(ap_spec(fs_id, "pvc-reuse-2", reuseAccessPoint="true"))
    assert second.id == first.id, "the same PVC gets its access point back"
    efs.delete_access_point(fs_id, first.id)
    efs.delete_access_point(fs_id, first.id)  # NotFound counts as success
    assert all(a.id != first.id for a in efs.list_access_points(fs_id))


def test_root_directory_deletion_and_its_guards(cluster: str, tmp_path: Path, fs_id: str) -> None:
    efs, mounter = provider(cluster, tmp_path)
    spec = ap_spec(fs_id, "pvc-rm", deleteAccessPointRootDir="true", basePath="/base")
    ap = efs.create_access_point(spec)
    data = mounter.backing(MountRequest(fs_id, "/", ap, str(tmp_path / "pod")))
    (data / "file.txt").write_text("x")
    assert data.stat().st_mode & 0o777 == 0o700 and data.stat().st_gid == ap.gid
    efs.delete_access_point(fs_id, ap.id)
    assert not data.exists(), "the access point's directory is deleted with it"
    ops = [json.loads(line)["op"] for line in (tmp_path / "mounts.jsonl").read_text().splitlines()]
    assert ops == ["mount", "unmount"], "the controller mounts the file system root to delete, then unmounts"
    # Two access points on one directory: deleting one keeps the directory.
    a = efs.create_access_point(ap_spec(fs_id, "pvc-shared", deleteAccessPointRootDir="true", basePath="/base",
                                        subPathPattern="shared", ensureUniqueDirectory="false"))
    b = efs.create_access_point(ap_spec(fs_id, "pvc-shared-2", basePath="/base", subPathPattern="shared",
                                        ensureUniqueDirectory="false"))
    shared = mounter.backing(MountRequest(fs_id, "/", a, str(tmp_path / "pod2")))
    efs.delete_access_point(fs_id, a.id)
    assert shared.exists()
    efs.delete_access_point(fs_id, b.id)


def test_capacity_is_recorded_not_enforced(cluster: str, tmp_path: Path, fs_id: str) -> None:
    efs, _ = provider(cluster, tmp_path)
    with pytest.raises(InvalidArgument, match="no per-directory quota"):
        efs.create_access_point(ap_spec(fs_id, "pvc-quota", enforceCapacity="true"))
    ap = efs.create_access_point(ap_spec(fs_id, "pvc-grow"))
    grown = efs.expand_access_point(fs_id, ap.id, 10 << 30)
    assert grown.capacity_bytes == 10 << 30 == efs.get_access_point(fs_id, ap.id).capacity_bytes


def test_probe(cluster: str, tmp_path: Path) -> None:
    assert provider(cluster, tmp_path)[0].health().ready
    denied = {"operation": "DescribeFileSystems", "code": "AccessDeniedException", "status": 403, "message": "denied"}
    with pytest.raises(PermissionDenied, match="elasticfilesystem:DescribeFileSystems"):
        provider(cluster, tmp_path, FaultConfig(errors=[denied]))[0].health()
