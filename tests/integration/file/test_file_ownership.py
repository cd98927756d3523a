"""Access point directories get the requested owner, group and mode; read-only publishes refuse writes."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import grpc
import pytest

from elastivol.client import BLOCK, CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.node import mount
from elastivol.providers.local.file.registry import FileRegistry
from tests.helpers import expect_error
from tests.integration.file.helpers import ap_dir, create, delete, published, sc


def test_allocated_owner_and_seed_003_mode(client: CsiClient, btrfs_fs: str, registry: FileRegistry, fwork: Path) -> None:
    params = sc(btrfs_fs, directoryPerms="700", gidRangeStart="1000", gidRangeEnd="2000", basePath="/prod_airflow")
    vol = create(client, "pvc-airflow-logs", params)
    d = ap_dir(registry, vol)
    assert str(d).endswith("/prod_airflow/pvc-airflow-logs")
    st = os.stat(d)
    # As in EFS, a missing uid takes the allocated GID too.
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o700)
    assert vol.volume_context["storage.elastivol.io/gid"] == "1000"
    pod = published(client, fwork, vol.volume_id, "owner")
    st = os.stat(pod.target)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o700)
    pod.unpublish()
    delete(client, vol.volume_id)


def test_explicit_uid_gid_and_setgid_mode(client: CsiClient, plain_fs: str, registry: FileRegistry) -> None:
    vol = create(client, "pvc-explicit", sc(plain_fs, uid="1234", gid="5678", directoryPerms="2770"))
    st = os.stat(ap_dir(registry, vol))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o2770)
    delete(client, vol.volume_id)


@pytest.mark.parametrize(("mode", "readonly"), [("MULTI_NODE_READER_ONLY", False), ("MULTI_NODE_MULTI_WRITER", True)])
def test_read_only_publishes_refuse_writes(
    client: CsiClient, client_b: CsiClient, btrfs_fs: str, fwork: Path, mode: str, readonly: bool
) -> None:
    vol = create(client, f"pvc-rox-{readonly}", sc(btrfs_fs, directoryPerms="777"), mode=mode)
    writer = published(client, fwork, vol.volume_id, f"writer-{readonly}", mode="MULTI_NODE_MULTI_WRITER")
    (writer.target / "data.txt").write_text("written before")
    reader = published(client_b, fwork, vol.volume_id, f"reader-{readonly}", node="node-b", mode=mode,
                       readonly=readonly)
    info = mount.find_by_target(str(reader.target))
    assert info is not None and info.read_only
    assert (reader.target / "data.txt").read_text() == "written before"
    with pytest.raises(OSError) as exc:
        (reader.target / "new.txt").write_text("must fail")
    assert exc.value.errno == errno.EROFS
    # The writer's mount is not affected by the reader's.
    (writer.target / "after.txt").write_text("still writable")
    reader.unpublish()
    writer.unpublish()
    delete(client, vol.volume_id)


def test_block_access_is_refused(client: CsiClient, btrfs_fs: str, fwork: Path) -> None:
    block = volume_capability(BLOCK, mode="MULTI_NODE_MULTI_WRITER")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.create_volume, "pvc-block", 1 << 30,
                 parameters=sc(btrfs_fs), cap=block, match="only filesystem volumes are supported")
    vol = create(client, "pvc-block-publish", sc(btrfs_fs))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.node.NodePublishVolume, csi_pb2.NodePublishVolumeRequest(
        volume_id=vol.volume_id, target_path=str(fwork / "kubelet" / "blk"), volume_capability=block),
        match="only filesystem volumes are supported")
    delete(client, vol.volume_id)


def test_mount_options(client: CsiClient, btrfs_fs: str, fwork: Path) -> None:
    vol = create(client, "pvc-opts", sc(btrfs_fs))
    # EFS transport options (tls, nfsvers) have nothing to act on in a bind; per-mount ones apply.
    pod = published(client, fwork, vol.volume_id, "opts", mount_flags=("tls", "nfsvers=4.1", "noexec", "nosuid"))
    info = mount.find_by_target(str(pod.target))
    assert info is not None and {"noexec", "nosuid"} <= set(info.options.split(","))
    pod.unpublish()
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, published, client, fwork, vol.volume_id, "opts-suid",
                 mount_flags=("suid",), match="--allow-privileged-mount-options")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, published, client, fwork, vol.volume_id, "opts-comma",
                 mount_flags=("ro,suid",), match="its own word")
    outside = csi_pb2.NodePublishVolumeRequest(volume_id=vol.volume_id, target_path="/var/tmp/not-kubelet/mount",
                                               volume_capability=volume_capability(mode="MULTI_NODE_MULTI_WRITER"))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.node.NodePublishVolume, outside,
                 match="outside the allowed roots")
    delete(client, vol.volume_id)
