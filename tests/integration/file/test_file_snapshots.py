"""Snapshots of file volumes (EFS has none): copy-on-write copies that restore into new access points."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import grpc
import pytest

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.providers.local.file.registry import FileRegistry
from tests.helpers import expect_error
from tests.integration.file.helpers import ap_dir, create, delete, sc

MiB = 1 << 20


def _make_tree(top: Path) -> None:
    (top / "logs" / "2024" / "01").mkdir(parents=True)
    for i in range(20):
        (top / "logs" / "2024" / "01" / f"task-{i}.log").write_bytes(os.urandom(4096 + i * 1000))
    (top / "big.bin").write_bytes(os.urandom(3 * MiB))
    (top / "owned").write_text("belongs to 4242:4343")
    os.chown(top / "owned", 4242, 4343)
    os.chmod(top / "owned", 0o640)
    os.chown(top / "logs", 1111, 2222)
    os.chmod(top / "logs", 0o2750)
    (top / "latest").symlink_to("logs/2024/01/task-19.log")
    os.link(top / "big.bin", top / "big-hardlink.bin")
    os.utime(top / "owned", ns=(1_000_000_000, 1_500_000_000_000_000_000))


def _manifest(top: Path) -> dict[str, tuple[object, ...]]:
    """Everything a restore must keep: content, owner, group, mode, link targets, mtimes of files."""
    found: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(top))
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(path), st.st_uid, st.st_gid)
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[rel] = ("file", digest, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return found


def _snapshot(client: CsiClient, volume_id: str, name: str) -> csi_pb2.Snapshot:
    return client.controller.CreateSnapshot(
        csi_pb2.CreateSnapshotRequest(source_volume_id=volume_id, name=name), timeout=60).snapshot


def _from(snapshot_id: str) -> csi_pb2.VolumeContentSource:
    return csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snapshot_id))


@pytest.mark.parametrize("kind", ["btrfs", "xfs"])
def test_snapshot_and_restore_keep_contents_and_ownership(
    client: CsiClient, registry: FileRegistry, btrfs_fs: str, xfs_fs: str, kind: str
) -> None:
    fs_id = btrfs_fs if kind == "btrfs" else xfs_fs
    params = sc(fs_id, directoryPerms="750", basePath="/snaps")
    source = create(client, f"pvc-snapsrc-{kind}", params, size=64 * MiB)
    src_dir = ap_dir(registry, source)
    _make_tree(src_dir)
    before = _manifest(src_dir)
    snap = _snapshot(client, source.volume_id, f"snapshot-{kind}")
    assert snap.ready_to_use and snap.source_volume_id == source.volume_id and snap.size_bytes == 64 * MiB
    assert _snapshot(client, source.volume_id, f"snapshot-{kind}").snapshot_id == snap.snapshot_id, "idempotent"
    # The source moves on; the snapshot does not.
    (src_dir / "big.bin").write_bytes(b"changed")
    (src_dir / "owned").unlink()
    restored = create(client, f"pvc-restored-{kind}", params, size=64 * MiB, source=_from(snap.snapshot_id))
    assert restored.content_source.snapshot.snapshot_id == snap.snapshot_id
    dst_dir = ap_dir(registry, restored)
    assert _manifest(dst_dir) == before
    src_st, dst_st = os.stat(src_dir), os.stat(dst_dir)
    assert (dst_st.st_uid, dst_st.st_gid, stat.S_IMODE(dst_st.st_mode)) == (src_st.st_uid, src_st.st_gid, 0o750)
    assert os.stat(dst_dir / "big-hardlink.bin").st_ino == os.stat(dst_dir / "big.bin").st_ino
    # Restoring into a smaller volume than the snapshot's source is refused.
    expect_error(grpc.StatusCode.OUT_OF_RANGE, create, client, f"pvc-small-{kind}", params, size=MiB,
                 source=_from(snap.snapshot_id), match="at least")
    listed = client.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest(source_volume_id=source.volume_id))
    assert [e.snapshot.snapshot_id for e in listed.entries] == [snap.snapshot_id]
    expect_error(grpc.StatusCode.ALREADY_EXISTS, _snapshot, client, restored.volume_id, f"snapshot-{kind}")
    client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    assert list((Path(registry.get_filesystem(fs_id).root) / ".elastivol" / "snapshots").iterdir()) == []
    assert _manifest(dst_dir) == before, "a restored volume does not depend on its snapshot"
    for v in (source, restored):
        delete(client, v.volume_id)


def test_btrfs_snapshot_is_a_read_only_subvolume(client: CsiClient, registry: FileRegistry, btrfs_fs: str) -> None:
    vol = create(client, "pvc-ro-snap", sc(btrfs_fs))
    snap = _snapshot(client, vol.volume_id, "ro-snap")
    copy = Path(registry.get_filesystem(btrfs_fs).root) / ".elastivol" / "snapshots" / snap.snapshot_id
    assert copy.stat().st_ino == 256, "a btrfs subvolume"
    with pytest.raises(OSError):
        (copy / "x").write_text("snapshots are read-only")
    client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    assert not copy.exists()
    delete(client, vol.volume_id)


def test_no_snapshots_without_reflink(client: CsiClient, plain_fs: str) -> None:
    vol = create(client, "pvc-plain-snap", sc(plain_fs))
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, _snapshot, client, vol.volume_id, "plain-snap",
                 match="has no copy-on-write copies")
    delete(client, vol.volume_id)


def test_snapshot_errors(client: CsiClient, btrfs_fs: str) -> None:
    expect_error(grpc.StatusCode.NOT_FOUND, _snapshot, client, "nonsense", "s1")
    expect_error(grpc.StatusCode.NOT_FOUND, _snapshot, client, f"{btrfs_fs}::fsap-0123456789abcdef0", "s2")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, _snapshot, client, btrfs_fs, "s3", match="static volume")
    expect_error(grpc.StatusCode.NOT_FOUND, create, client, "pvc-from-nothing", sc(btrfs_fs),
                 source=_from("snap-0123456789abcdef0"))
    clone = csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id="x"))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, create, client, "pvc-clone", sc(btrfs_fs), source=clone,
                 match="take a VolumeSnapshot")
    client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id="snap-0123456789abcdef0"))
