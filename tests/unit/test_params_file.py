"""The EFS parameter surface: names, defaults, every error message, directories and volume handles."""

from __future__ import annotations

import pytest

from elastivol.errors import InvalidArgument, InvalidParameter
from elastivol.params.file import (
    DEFAULT_GID_RANGE,
    FileParameters,
    VolumeHandle,
    access_point_directory,
    access_point_spec,
    parse_file_parameters,
    parse_volume_handle,
    reuse_key,
    unique_suffix,
)

FS = "fs-0123456789abcdef0"
AP = "fsap-0123456789abcdef0"
BASE = {"provisioningMode": "efs-ap", "fileSystemId": FS, "directoryPerms": "700"}
PVC = {
    "csi.storage.k8s.io/pvc/name": "logs",
    "csi.storage.k8s.io/pvc/namespace": "airflow",
    "csi.storage.k8s.io/pv/name": "pvc-1234",
}


def parse(**extra: str) -> FileParameters:
    return parse_file_parameters({**BASE, **extra})


def error(raw: dict[str, str]) -> str:
    with pytest.raises(InvalidArgument) as info:
        parse_file_parameters(raw)
    return info.value.message


def test_seed_003_storage_class() -> None:
    p = parse(gidRangeStart="1000", gidRangeEnd="2000", basePath="/prod_airflow")
    assert p.fs_id == FS
    assert p.directory_perms == 0o700
    assert p.gid_range == (1000, 2000)
    assert p.base_path == "/prod_airflow"
    assert access_point_directory(p, "pvc-1234") == "/prod_airflow/pvc-1234"


def test_defaults() -> None:
    p = parse()
    assert p.gid_range == DEFAULT_GID_RANGE == (50000, 60000)
    assert p.uid is None and p.gid is None
    assert p.base_path == "/"
    assert p.ensure_unique_directory is True
    assert p.reuse_access_point is False
    assert p.delete_access_point_root_dir is False
    assert p.enforce_capacity is False
    assert access_point_directory(p, "pvc-1") == "/pvc-1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"fileSystemId": FS, "directoryPerms": "700"}, "Missing provisioningMode parameter"),
        ({**BASE, "provisioningMode": "efs-dir"}, "supported modes: efs-ap"),
        ({**BASE, "provisioningMode": ""}, "supported modes: efs-ap"),
        ({"provisioningMode": "efs-ap", "directoryPerms": "700"}, "Missing fileSystemId parameter"),
        ({**BASE, "fileSystemId": "  "}, "Parameter fileSystemId cannot be empty"),
        ({"provisioningMode": "efs-ap", "fileSystemId": FS}, "Missing directoryPerms parameter"),
        ({**BASE, "directoryPerms": "800"}, "is not a file mode"),
        ({**BASE, "directoryPerms": "7"}, "is not a file mode"),
        ({**BASE, "directoryPerms": "rwx"}, "is not a file mode"),
        ({**BASE, "uid": "abc"}, "Failed to parse invalid uid"),
        ({**BASE, "uid": "-1"}, "uid must be greater or equal than 0"),
        ({**BASE, "gid": "-5"}, "gid must be greater or equal than 0"),
        ({**BASE, "gid": "1.5"}, "Failed to parse invalid gid"),
        ({**BASE, "uid": "4294967295"}, "too large"),
        ({**BASE, "gidRangeStart": "1000"}, "Missing gidRangeEnd parameter"),
        ({**BASE, "gidRangeEnd": "2000"}, "Missing gidRangeStart parameter"),
        ({**BASE, "gidRangeStart": "2000", "gidRangeEnd": "2000"}, "gidRangeEnd must be greater than gidRangeStart"),
        ({**BASE, "gidRangeStart": "2000", "gidRangeEnd": "1000"}, "gidRangeEnd must be greater than gidRangeStart"),
        ({**BASE, "gidRangeStart": "0", "gidRangeEnd": "10"}, "gidRangeStart must be greater than 0"),
        ({**BASE, "gidRangeStart": "x", "gidRangeEnd": "10"}, "Failed to parse invalid gidRangeStart"),
        ({**BASE, "basePath": "/" + "a" * 100}, "at most 100"),
        ({**BASE, "basePath": "/a/b/c/d/e"}, "5 levels deep; at most 4"),
        ({**BASE, "basePath": "/a/../../etc"}, "must not contain '..'"),
        ({**BASE, "basePath": "/.elastivol/x"}, "must not be under /.elastivol"),
        ({**BASE, "subPathPattern": "${.PVC.labels.team}"}, "contains invalid elements"),
        ({**BASE, "subPathPattern": "${.PVC.name"}, "contains invalid elements"),
        ({**BASE, "subPathPattern": "a}b"}, "contains invalid elements"),
        ({**BASE, "subPathPattern": "../${.PVC.name}"}, "must not contain '..'"),
        ({**BASE, "ensureUniqueDirectory": "yes"}, "Invalid value for ensureUniqueDirectory"),
        ({**BASE, "reuseAccessPoint": "maybe"}, "Invalid value for reuseAccessPoint"),
        ({**BASE, "deleteAccessPointRootDir": "y"}, "Invalid value for deleteAccessPointRootDir"),
        ({**BASE, "enforceCapacity": "on"}, "Invalid value for enforceCapacity"),
        ({**BASE, "type": "gp3"}, "unknown parameter 'type'"),
        ({**BASE, "FILESYSTEMID": FS}, "given twice"),
    ],
)
def test_parameter_errors(raw: dict[str, str], expected: str) -> None:
    assert expected in error(raw)


def test_errors_name_their_key() -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_file_parameters({**BASE, "gidRangeEnd": "5"})
    assert info.value.key == "gidRangeStart"


def test_go_style_booleans_and_case_insensitive_keys() -> None:
    p = parse_file_parameters({**BASE, "ensureuniquedirectory": "False", "DeleteAccessPointRootDir": "1",
                               "enforceCapacity": "TRUE", "reuseAccessPoint": "f"})
    assert (p.ensure_unique_directory, p.delete_access_point_root_dir, p.enforce_capacity) == (False, True, True)
    assert p.reuse_access_point is False


def test_ids_and_az_are_accepted() -> None:
    p = parse(uid="1000", gid="0", az="us-east-1a")
    assert (p.uid, p.gid, p.az) == (1000, 0, "us-east-1a")


def test_sub_path_pattern_with_unique_suffix() -> None:
    p = parse_file_parameters({**BASE, **PVC, "basePath": "/airflow", "subPathPattern": "${.PVC.namespace}/${.PVC.name}"})
    d = access_point_directory(p, "pvc-1234")
    assert d == f"/airflow/airflow/logs-{unique_suffix('pvc-1234')}"
    # The suffix is stable across retries of one CreateVolume and differs between volumes.
    assert access_point_directory(p, "pvc-1234") == d
    assert access_point_directory(p, "pvc-5678") != d


def test_sub_path_pattern_without_suffix_shares_the_directory() -> None:
    raw = {**BASE, **PVC, "subPathPattern": "shared/${.PV.name}-x", "ensureUniqueDirectory": "false"}
    p = parse_file_parameters(raw)
    assert access_point_directory(p, "a") == access_point_directory(p, "b") == "/shared/pvc-1234-x"


def test_pattern_needs_provisioner_metadata() -> None:
    p = parse(subPathPattern="${.PVC.name}")
    with pytest.raises(InvalidParameter, match="--extra-create-metadata"):
        access_point_directory(p, "pvc-1")


def test_efs_path_limits_on_the_final_directory() -> None:
    p = parse_file_parameters({**BASE, **PVC, "basePath": "/a/b/c/d", "subPathPattern": "${.PVC.namespace}/${.PVC.name}"})
    with pytest.raises(InvalidArgument, match="levels deep"):
        access_point_directory(p, "pvc-1")
    p = parse(basePath="/" + "b" * 90)
    with pytest.raises(InvalidArgument, match="EFS allows at most 100"):
        access_point_directory(p, "pvc-0123456789")


def test_reuse_key_needs_the_pvc_and_includes_its_namespace() -> None:
    with pytest.raises(InvalidParameter, match="extra-create-metadata"):
        reuse_key(parse(reuseAccessPoint="true"))
    a = reuse_key(parse_file_parameters({**BASE, **PVC, "reuseAccessPoint": "true"}))
    b = reuse_key(parse_file_parameters({**BASE, **PVC, "csi.storage.k8s.io/pvc/namespace": "other"}))
    assert a != b and len(a) == 64


def test_spec() -> None:
    p = parse_file_parameters({**BASE, **PVC, "uid": "10", "enforceCapacity": "true", "deleteAccessPointRootDir": "true"})
    spec = access_point_spec(p, "pvc-1234", 5 << 30, source_snapshot_id="snap-0123456789abcdef0")
    assert spec.directory == "/pvc-1234"
    assert (spec.uid, spec.gid, spec.perms, spec.capacity_bytes) == (10, None, 0o700, 5 << 30)
    assert spec.enforce_capacity and spec.delete_root_dir
    assert spec.tags["kubernetes.io/created-for/pvc/name"] == "logs"
    assert spec.source_snapshot_id == "snap-0123456789abcdef0"


@pytest.mark.parametrize(
    ("handle", "expected"),
    [
        (FS, VolumeHandle(FS)),
        (f"{FS}:", VolumeHandle(FS)),
        (f"{FS}::", VolumeHandle(FS)),
        (f"{FS}:/data/logs", VolumeHandle(FS, "data/logs")),
        (f"{FS}:data//logs/", VolumeHandle(FS, "data/logs")),
        (f"{FS}::{AP}", VolumeHandle(FS, "", AP)),
        (f"{FS}:/sub:{AP}", VolumeHandle(FS, "sub", AP)),
    ],
)
def test_handles(handle: str, expected: VolumeHandle) -> None:
    assert parse_volume_handle(handle) == expected


def test_handle_round_trip() -> None:
    for h in (FS, f"{FS}:/a/b", f"{FS}::{AP}", f"{FS}:/a:{AP}"):
        assert parse_volume_handle(h).volume_id == h


@pytest.mark.parametrize(
    ("handle", "expected"),
    [
        ("fs-123", "expected a file system ID of the form 'fs-'"),
        ("vol-0123456789abcdef0", "expected a file system ID"),
        (f"{FS}x", "expected a file system ID"),
        (f"{FS}:/a:{AP}:extra", "expected at most three fields"),
        (f"{FS}::fsap-123", "invalid access point ID 'fsap-123'"),
        (f"{FS}:/a:vol-1", "invalid access point ID"),
        (f"{FS}:/../etc", "with '..'"),
    ],
)
def test_malformed_handles(handle: str, expected: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_volume_handle(handle)
    assert expected in info.value.message
    assert "fs-ID:/subpath:fsap-ID" in info.value.message or "fs-ID::fsap-ID" in info.value.message or ".." in expected


@pytest.mark.parametrize("key", ["uid", "gid", "gidRangeStart", "gidRangeEnd"])
def test_ids_longer_than_int_reads_are_invalid_parameters(key: str) -> None:
    with pytest.raises(InvalidParameter, match=rf"^{key} is too large"):
        parse(**{key: "7" * 5000})


def test_a_bad_volume_handle_names_the_field() -> None:
    with pytest.raises(InvalidArgument, match=r"^volume ID \(volume_id\) ' ' is invalid"):
        parse_volume_handle(" ")


def test_id_spellings_at_the_edges() -> None:
    assert parse(uid="0" * 5000 + "42").uid == 42
    assert parse(uid="-0").uid == 0
    for bad in ("--5", "-" + "0" * 5000 + "1", "+5", "4294967295"):
        with pytest.raises(InvalidParameter, match="uid"):
            parse(uid=bad)
