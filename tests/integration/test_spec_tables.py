"""The CSI spec's error tables, edge by edge, for the block driver on the local provider, through
the real socket (issue 13, item 3). The aws provider's side is in tests/aws/test_block_grpc.py."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from elastivol.client import CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.node import mount
from tests.helpers import Vol, code_of, expect_error, leaked, new_volume

C = grpc.StatusCode
GiB = 1 << 30
UNKNOWN_VOL = "vol-0123456789abcdef0"


def _stats(client: CsiClient, volume_id: str, path: str) -> None:
    client.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=path), timeout=60)


def _expand(client: CsiClient, volume_id: str, path: str) -> None:
    client.node.NodeExpandVolume(csi_pb2.NodeExpandVolumeRequest(
        volume_id=volume_id, volume_path=path, capacity_range=csi_pb2.CapacityRange(required_bytes=GiB)), timeout=60)


NODE_CALLS: dict[str, Callable[[CsiClient, str, str], None]] = {"NodeGetVolumeStats": _stats, "NodeExpandVolume": _expand}


@pytest.fixture
def two_volumes(client: CsiClient, work: Path, pool_dir: Path) -> Any:
    """A filesystem volume and a raw block volume, both staged and published on node-a."""
    fs_vol = new_volume(client, work, "tables-fs")
    raw_vol = new_volume(client, work, "tables-raw", kind="block")
    fs_vol.up()
    raw_vol.up()
    yield fs_vol, raw_vol
    for v in (fs_vol, raw_vol):
        v.down()
        v.delete()
    assert leaked(pool_dir) == []


@pytest.mark.parametrize("method", sorted(NODE_CALLS))
def test_a_path_that_does_not_hold_the_volume_is_not_found(
    client: CsiClient, work: Path, two_volumes: tuple[Vol, Vol], method: str
) -> None:
    fs_vol, raw_vol = two_volumes
    call = NODE_CALLS[method]
    unmounted = work / "kubelet" / "pods" / "nothing-here"
    unmounted.mkdir(parents=True, exist_ok=True)
    cases = {
        "an unknown id at a real volume's path": (UNKNOWN_VOL, str(fs_vol.target), "does not exist"),
        "a relative path": (fs_vol.id, "some/path", "not absolute"),
        "a path outside the allowed roots": (fs_vol.id, "/etc", "outside the allowed roots"),
        "a directory with nothing mounted": (fs_vol.id, str(unmounted), "nothing is mounted there"),
        "another volume's filesystem": (fs_vol.id, str(raw_vol.target), "another volume"),
        "another volume's device": (raw_vol.id, str(fs_vol.target), "another volume"),
    }
    for case, (volume_id, path, words) in cases.items():
        details = expect_error(C.NOT_FOUND, call, client, volume_id, path)
        assert words in details, f"{method} with {case}: {details!r}"
    # The volumes at their own paths answer (the condition of the refusals above was the path).
    for vol in (fs_vol, raw_vol):
        assert code_of(call, client, vol.id, str(vol.target)) == C.OK


def test_stats_of_a_volume_at_its_path_reports_usage(client: CsiClient, two_volumes: tuple[Vol, Vol]) -> None:
    fs_vol, raw_vol = two_volumes
    fs_stats = client.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=fs_vol.id, volume_path=str(fs_vol.target)))
    assert {u.unit for u in fs_stats.usage} == {csi_pb2.VolumeUsage.BYTES, csi_pb2.VolumeUsage.INODES}
    assert not fs_stats.volume_condition.abnormal
    raw_stats = client.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=raw_vol.id, volume_path=str(raw_vol.target)))
    assert [u.total for u in raw_stats.usage] == [GiB]


def _stage_request(vol: Vol, cap: csi_pb2.VolumeCapability) -> csi_pb2.NodeStageVolumeRequest:
    return csi_pb2.NodeStageVolumeRequest(
        volume_id=vol.id, staging_target_path=str(vol.staging), volume_capability=cap,
        publish_context=vol.publish_context, volume_context=dict(vol.volume.volume_context))


def test_an_incompatible_second_stage_is_already_exists(client: CsiClient, work: Path, pool_dir: Path) -> None:
    vol = new_volume(client, work, "restage", kind="ext4")
    vol.cap = volume_capability(fs_type="ext4", mount_flags=("noatime",))
    vol.controller_publish()
    vol.stage()
    incompatible = {
        "another fs type": volume_capability(fs_type="xfs", mount_flags=("noatime",)),
        "other mount flags": volume_capability(fs_type="ext4", mount_flags=("noatime", "noexec")),
        "no atime flag (relatime)": volume_capability(fs_type="ext4"),
        "a read-only access mode": volume_capability(mode="SINGLE_NODE_READER_ONLY", fs_type="ext4",
                                                     mount_flags=("noatime",)),
    }
    for case, cap in incompatible.items():
        details = expect_error(C.ALREADY_EXISTS, client.node.NodeStageVolume, _stage_request(vol, cap))
        assert "unstage it first" in details, f"{case}: {details!r}"
    staged = mount.find_by_target(vol.staging)
    assert staged is not None and "noatime" in staged.options.split(",") and not staged.read_only
    # The same request again (what the kubelet sends after a restart) is still a no-op.
    vol.stage()
    assert code_of(client.node.NodeStageVolume, _stage_request(vol, vol.cap)) == C.OK
    vol.unstage()
    vol.controller_unpublish()
    vol.delete()
    assert leaked(pool_dir) == []


def test_raw_block_publish_again_with_another_readonly_is_already_exists(
    client: CsiClient, work: Path, pool_dir: Path
) -> None:
    vol = new_volume(client, work, "raw-again", kind="block")
    vol.up()
    details = expect_error(C.ALREADY_EXISTS, vol.publish, readonly=True)
    assert "readonly=False" in details
    vol.publish()  # the same publication again: OK
    vol.down()
    vol.delete()
    assert leaked(pool_dir) == []


def test_readonly_attach_stages_read_only_and_refuses_a_blank_volume(
    client: CsiClient, work: Path, pool_dir: Path
) -> None:
    """Local provider: ControllerPublishVolume(readonly) makes a read-only loop device, and
    NodeStageVolume agrees with it (see README, "Read-only attachments")."""
    caps = client.controller.ControllerGetCapabilities(csi_pb2.ControllerGetCapabilitiesRequest()).capabilities
    assert csi_pb2.ControllerServiceCapability.RPC.PUBLISH_READONLY in {c.rpc.type for c in caps}
    vol = new_volume(client, work, "ro-attach")
    vol.controller_publish(readonly=True)
    details = expect_error(C.FAILED_PRECONDITION, vol.stage)
    assert "blank and attached read-only" in details and "attach it read-write once" in details
    assert mount.find_by_target(vol.staging) is None, "nothing was mounted"
    vol.controller_unpublish()
    # Format it read-write once, write a file, then attach read-only: staged and published read-only.
    vol.up()
    (vol.target / "kept").write_text("kept")
    vol.down()
    vol.controller_publish(readonly=True)
    vol.stage()
    staged = mount.find_by_target(vol.staging)
    assert staged is not None and staged.read_only
    vol.publish()
    assert (vol.target / "kept").read_text() == "kept"
    with pytest.raises(OSError) as info:
        (vol.target / "new").write_text("no")
    assert info.value.errno == errno.EROFS
    vol.down()
    vol.delete()
    assert leaked(pool_dir) == []


def test_readonly_attach_of_a_raw_block_volume_refuses_writes_to_the_device(
    client: CsiClient, work: Path, pool_dir: Path
) -> None:
    vol = new_volume(client, work, "ro-raw", kind="block")
    vol.controller_publish(readonly=True)
    vol.stage()
    vol.publish(readonly=True)
    fd = os.open(vol.target, os.O_WRONLY)
    try:
        with pytest.raises(OSError) as info:
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
    finally:
        os.close(fd)
    assert info.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    vol.down()
    vol.delete()
    assert leaked(pool_dir) == []


def test_expand_to_the_current_size_or_less_returns_the_current_size(client: CsiClient, work: Path) -> None:
    vol = new_volume(client, work, "no-shrink", size=2 * GiB)

    def expand(required: int, limit: int = 0) -> csi_pb2.ControllerExpandVolumeResponse:
        return client.controller.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
            volume_id=vol.id, capacity_range=csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit)))

    assert expand(GiB).capacity_bytes == 2 * GiB
    assert expand(2 * GiB).capacity_bytes == 2 * GiB
    assert expand(GiB + 1).capacity_bytes == 2 * GiB
    got = client.controller.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id=vol.id)).volume
    assert got.capacity_bytes == 2 * GiB, "nothing shrank"
    # A limit below what the volume already has cannot be met without shrinking it.
    expect_error(C.OUT_OF_RANGE, expand, GiB, GiB, match="cannot shrink")
    vol.delete()
