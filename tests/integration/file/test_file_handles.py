"""Static volume handles, and every StorageClass mistake, through the real socket."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from elastivol.client import CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.providers.local.file.registry import FileRegistry
from tests.helpers import expect_error
from tests.integration.file.helpers import RWX, ap_dir, create, delete, published, root_of, sc

UNKNOWN_FS = "fs-0000000000000dead"


def test_every_static_handle_form(client: CsiClient, client_b: CsiClient, btrfs_fs: str,
                                  registry: FileRegistry, fwork: Path) -> None:
    root = root_of(registry, btrfs_fs)
    (root / "static" / "reports").mkdir(parents=True)
    (root / "static" / "reports" / "r.txt").write_text("report")
    vol = create(client, "pvc-static-ap", sc(btrfs_fs, directoryPerms="777"))
    _fs, _, ap_id = vol.volume_id.partition("::")
    (ap_dir(registry, vol) / "sub").mkdir()
    (ap_dir(registry, vol) / "sub" / "in-ap.txt").write_text("in access point")
    forms = {
        btrfs_fs: ("static/reports/r.txt", "report"),
        f"{btrfs_fs}:/static/reports": ("r.txt", "report"),
        f"{btrfs_fs}::{ap_id}": ("sub/in-ap.txt", "in access point"),
        f"{btrfs_fs}:/sub:{ap_id}": ("in-ap.txt", "in access point"),
    }
    pods = []
    for i, (handle, (name, content)) in enumerate(forms.items()):
        c = client if i % 2 == 0 else client_b
        pod = published(c, fwork, handle, f"static-{i}", node="node-a" if i % 2 == 0 else "node-b")
        assert (pod.target / name).read_text() == content, handle
        pods.append(pod)
    for pod in pods:
        pod.unpublish()
    # DeleteVolume of a static handle never touches the data it names.
    for handle in (btrfs_fs, f"{btrfs_fs}:/static/reports", f"{btrfs_fs}:/sub:{ap_id}"):
        delete(client, handle)
    assert (root / "static" / "reports" / "r.txt").exists()
    assert (ap_dir(registry, vol) / "sub" / "in-ap.txt").exists()
    delete(client, vol.volume_id)


@pytest.mark.parametrize(
    ("handle", "expected"),
    [
        ("fs-123", "expected a file system ID of the form 'fs-'"),
        ("efs-volume", "fs-ID, fs-ID:/subpath, fs-ID::fsap-ID or fs-ID:/subpath:fsap-ID"),
        ("{fs}:/a:{ap}:more", "expected at most three fields separated by ':'"),
        ("{fs}::fsap-12", "invalid access point ID 'fsap-12'"),
        ("{fs}:/a:ap-1", "expected 'fsap-' followed by 17"),
        ("{fs}:/../../etc", "with '..'"),
    ],
)
def test_malformed_handles_say_which_form_was_expected(
    client: CsiClient, btrfs_fs: str, fwork: Path, handle: str, expected: str
) -> None:
    handle = handle.format(fs=btrfs_fs, ap="fsap-0123456789abcdef0")
    message = expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.node.NodePublishVolume,
                           csi_pb2.NodePublishVolumeRequest(volume_id=handle, target_path=str(fwork / "kubelet" / "bad"),
                                                            volume_capability=volume_capability(mode=RWX)))
    assert expected in message


def test_missing_things_on_publish(client: CsiClient, btrfs_fs: str, registry: FileRegistry, fwork: Path) -> None:
    vol = create(client, "pvc-missing-sub", sc(btrfs_fs))
    _fs, _, ap_id = vol.volume_id.partition("::")
    expect_error(grpc.StatusCode.NOT_FOUND, published, client, fwork, f"{btrfs_fs}:/nope:{ap_id}", "m1",
                 match="subpath /nope does not exist in access point")
    expect_error(grpc.StatusCode.NOT_FOUND, published, client, fwork, f"{btrfs_fs}::fsap-0123456789abcdef0", "m2",
                 match="does not exist")
    expect_error(grpc.StatusCode.NOT_FOUND, published, client, fwork, UNKNOWN_FS, "m3", match="not registered")
    # A subpath through a symbolic link is refused, wherever the link points.
    os.symlink("/etc", ap_dir(registry, vol) / "link")
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, published, client, fwork, f"{btrfs_fs}:/link:{ap_id}", "m4",
                 match="symbolic link")
    delete(client, vol.volume_id)


def test_root_missing_on_the_node(client: CsiClient, registry: FileRegistry, fwork: Path) -> None:
    root = fwork / "vanishing"
    root.mkdir()
    fs = registry.register("vanishing", str(root))
    root.rmdir()
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, published, client, fwork, fs.id, "gone",
                 match="does not exist on this host: every node must see the file system at the same path")
    registry.unregister(fs.id)


def test_unknown_file_system(client: CsiClient) -> None:
    for fs_id in (UNKNOWN_FS, "fs-92107410"):
        expect_error(grpc.StatusCode.INVALID_ARGUMENT, create, client, "pvc-nofs", sc(fs_id),
                     match="File System does not exist")


PARAM_ERRORS = [
    ({"provisioningMode": None}, "Missing provisioningMode parameter"),
    ({"provisioningMode": "efs-dir"}, "supported modes: efs-ap"),
    ({"fileSystemId": None}, "Missing fileSystemId parameter"),
    ({"fileSystemId": " "}, "Parameter fileSystemId cannot be empty"),
    ({"directoryPerms": None}, "Missing directoryPerms parameter"),
    ({"directoryPerms": "999"}, "is not a file mode"),
    ({"uid": "x"}, "Failed to parse invalid uid"),
    ({"uid": "-1"}, "uid must be greater or equal than 0"),
    ({"gid": "-1"}, "gid must be greater or equal than 0"),
    ({"gidRangeStart": "100"}, "Missing gidRangeEnd parameter"),
    ({"gidRangeEnd": "100"}, "Missing gidRangeStart parameter"),
    ({"gidRangeStart": "0", "gidRangeEnd": "5"}, "gidRangeStart must be greater than 0"),
    ({"gidRangeStart": "200", "gidRangeEnd": "100"}, "gidRangeEnd must be greater than gidRangeStart"),
    ({"basePath": "/" + "x" * 101}, "EFS allows at most 100"),
    ({"basePath": "/1/2/3/4/5"}, "at most 4 are allowed"),
    ({"subPathPattern": "${.PVC.uid}"}, "contains invalid elements"),
    ({"subPathPattern": "${.PVC.name}"}, "--extra-create-metadata"),
    ({"ensureUniqueDirectory": "maybe"}, "Invalid value for ensureUniqueDirectory"),
    ({"reuseAccessPoint": "maybe"}, "Invalid value for reuseAccessPoint"),
    ({"reuseAccessPoint": "true"}, "needs the PVC name"),
    ({"deleteAccessPointRootDir": "maybe"}, "Invalid value for deleteAccessPointRootDir"),
    ({"enforceCapacity": "maybe"}, "Invalid value for enforceCapacity"),
    ({"iops": "3000"}, "unknown parameter 'iops'"),
]


@pytest.mark.parametrize(("change", "expected"), PARAM_ERRORS)
def test_every_parameter_error(client: CsiClient, btrfs_fs: str, change: dict[str, str | None], expected: str) -> None:
    params = sc(btrfs_fs)
    for key, value in change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, create, client, "pvc-bad-params", params, match=expected)


def test_enforce_capacity_needs_quotas(client: CsiClient, xfs_fs: str, plain_fs: str) -> None:
    for fs_id in (xfs_fs, plain_fs):
        expect_error(grpc.StatusCode.INVALID_ARGUMENT, create, client, "pvc-noquota", sc(fs_id, enforceCapacity="true"),
                     match='enforceCapacity: "true" needs per-directory quotas')


def test_reuse_access_point(client: CsiClient, btrfs_fs: str) -> None:
    pvc = {"csi.storage.k8s.io/pvc/name": "airflow-logs", "csi.storage.k8s.io/pvc/namespace": "airflow"}
    params = sc(btrfs_fs, reuseAccessPoint="true", basePath="/reuse", **pvc)
    first = create(client, "pvc-reuse-1", params)
    # The PVC is recreated (new PV name): it gets the same access point back.
    second = create(client, "pvc-reuse-2", params)
    assert second.volume_id == first.volume_id
    # ...but only if its path and ids still match the StorageClass.
    expect_error(grpc.StatusCode.ALREADY_EXISTS, create, client, "pvc-reuse-3", {**params, "basePath": "/elsewhere"},
                 match="not under basePath /elsewhere")
    expect_error(grpc.StatusCode.ALREADY_EXISTS, create, client, "pvc-reuse-4",
                 {**params, "gidRangeStart": "100", "gidRangeEnd": "200"}, match="outside gidRange 100-200")
    # Another namespace's PVC of the same name gets its own.
    other = create(client, "pvc-reuse-5", {**params, "csi.storage.k8s.io/pvc/namespace": "other"})
    assert other.volume_id != first.volume_id
    delete(client, first.volume_id)
    delete(client, other.volume_id)
