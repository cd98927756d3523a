"""DeleteVolume: root directories removed only when asked, only when unused, never the root or outside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc

from elastivol.client import CsiClient
from elastivol.providers.local.file.registry import FileRegistry
from tests.helpers import expect_error
from tests.integration.file.helpers import ap_dir, create, delete, published, root_of, sc

PVC = {"csi.storage.k8s.io/pvc/name": "logs", "csi.storage.k8s.io/pvc/namespace": "airflow"}


def test_directory_kept_by_default_and_removed_when_asked(
    client: CsiClient, btrfs_fs: str, registry: FileRegistry, fwork: Path
) -> None:
    kept = create(client, "pvc-keep", sc(btrfs_fs, basePath="/del"))
    removed = create(client, "pvc-remove", sc(btrfs_fs, basePath="/del", deleteAccessPointRootDir="true"))
    for v in (kept, removed):
        pod = published(client, fwork, v.volume_id, f"del-{v.volume_id[-4:]}")
        (pod.target / "nested" / "deep").mkdir(parents=True)
        (pod.target / "nested" / "deep" / "f").write_bytes(b"x" * 100_000)
        pod.unpublish()
    kept_dir, removed_dir = ap_dir(registry, kept), ap_dir(registry, removed)
    delete(client, kept.volume_id)
    delete(client, removed.volume_id)
    assert (kept_dir / "nested" / "deep" / "f").exists(), "EFS's default: the data outlives the volume"
    assert not removed_dir.exists()
    assert list((root_of(registry, btrfs_fs) / ".elastivol" / "trash").iterdir()) == []
    # Deleting again, or an access point that never existed, is OK.
    delete(client, removed.volume_id)
    delete(client, f"{btrfs_fs}::fsap-0123456789abcdef0")
    delete(client, "not-a-volume-id")


def test_shared_directory_survives_until_its_last_access_point(
    client: CsiClient, xfs_fs: str, registry: FileRegistry
) -> None:
    params = sc(xfs_fs, subPathPattern="${.PVC.namespace}/${.PVC.name}", ensureUniqueDirectory="false",
                deleteAccessPointRootDir="true", **PVC)
    first = create(client, "pvc-share-1", params)
    second = create(client, "pvc-share-2", params)
    assert first.volume_id != second.volume_id
    shared = ap_dir(registry, first)
    assert shared == ap_dir(registry, second) and str(shared).endswith("/airflow/logs")
    (shared / "data").write_text("shared")
    delete(client, first.volume_id)
    assert (shared / "data").read_text() == "shared", "another access point still uses the directory"
    delete(client, second.volume_id)
    assert not shared.exists()


def test_a_directory_holding_another_access_point_is_kept(
    client: CsiClient, plain_fs: str, registry: FileRegistry
) -> None:
    outer = create(client, "outer", sc(plain_fs, basePath="/nest", deleteAccessPointRootDir="true"))
    inner = create(client, "inner", sc(plain_fs, basePath="/nest/outer", deleteAccessPointRootDir="true"))
    inner_dir = ap_dir(registry, inner)
    delete(client, outer.volume_id)
    assert inner_dir.exists(), "removing the outer directory would wipe the inner access point"
    delete(client, inner.volume_id)
    assert not inner_dir.exists()


def _tamper(registry: FileRegistry, volume_id: str, directory: str) -> None:
    _fs, _, ap_id = volume_id.partition("::")
    rec = registry.access_points.get(ap_id)
    assert rec is not None
    rec["directory"] = directory
    registry.access_points.put(ap_id, rec)


def test_root_and_outside_paths_are_refused(client: CsiClient, plain_fs: str, registry: FileRegistry,
                                            fwork: Path) -> None:
    root = root_of(registry, plain_fs)
    outside = fwork / "outside-data"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    (root / "keep-me").write_text("root data")
    vol = create(client, "pvc-tamper", sc(plain_fs, deleteAccessPointRootDir="true"))
    for directory, why in (
        ("/", "file system root"),
        ("/../outside-data", "'..'"),
        ("/.elastivol", "elastivol's own directory"),
    ):
        _tamper(registry, vol.volume_id, directory)
        expect_error(grpc.StatusCode.FAILED_PRECONDITION, delete, client, vol.volume_id, match=why)
    # A link planted where a parent directory was (by a pod with write access) is not followed.
    (root / "planted").symlink_to(outside)
    _tamper(registry, vol.volume_id, "/planted/precious-dir")
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, delete, client, vol.volume_id, match="symbolic link")
    assert (outside / "precious").read_text() == "keep"
    assert (root / "keep-me").read_text() == "root data"
    _tamper(registry, vol.volume_id, "/pvc-tamper")
    delete(client, vol.volume_id)
    assert not (root / "pvc-tamper").exists()
    (root / "planted").unlink()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "elastivol", "fs", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "250"})


def test_fs_cli(client: CsiClient, fspool: Path, fwork: Path) -> None:
    root = fwork / "cli-root"
    root.mkdir()
    made = _cli("create", "--pool", str(fspool), "--name", "cli", "--root", str(root))
    assert made.returncode == 0, made.stderr
    fs_id = made.stdout.strip()
    assert fs_id.startswith("fs-") and len(fs_id) == 20
    again = _cli("create", "--pool", str(fspool), "--name", "cli", "--root", str(root))
    assert again.stdout.strip() == fs_id, "same name and root: same id"
    clash = _cli("create", "--pool", str(fspool), "--name", "cli2", "--root", str(root / "inner"))
    assert clash.returncode == 1 and "does not exist" in clash.stderr
    (root / "inner").mkdir()
    clash = _cli("create", "--pool", str(fspool), "--name", "cli2", "--root", str(root / "inner"))
    assert clash.returncode == 1 and "overlaps file system" in clash.stderr
    listed = _cli("list", "--pool", str(fspool))
    assert fs_id in listed.stdout and "cli-root" in listed.stdout
    vol = create(client, "pvc-cli", sc(fs_id))
    refused = _cli("delete", "--pool", str(fspool), fs_id)
    assert refused.returncode == 1 and "--force" in refused.stderr and "1 access point" in refused.stderr
    forced = _cli("delete", "--pool", str(fspool), fs_id, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (root / "pvc-cli").is_dir(), "forgetting a file system never deletes its data"
    assert fs_id not in _cli("list", "--pool", str(fspool)).stdout
    delete(client, vol.volume_id)  # its file system is gone: nothing to do, OK
