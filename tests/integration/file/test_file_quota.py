"""Capacity: enforced with btrfs quotas (EDQUOT inside the pod, raised by an online expand), and usage stats."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.providers.local.file.usage import UsageWalker
from tests.helpers import expect_error
from tests.integration.file.helpers import create, delete, published, sc

MiB = 1 << 20
# A "pod": writes N MiB into a file on the volume and exits with the errno it met (0: none).
POD_WRITER = """
import errno, os, sys
path, mib = sys.argv[1], int(sys.argv[2])
try:
    with open(path, "wb") as fh:
        for _ in range(mib):
            fh.write(b"\\xab" * (1 << 20))
            fh.flush()
        os.fsync(fh.fileno())
except OSError as exc:
    sys.exit(exc.errno)
"""


def _pod_write(target: Path, name: str, mib: int) -> int:
    return subprocess.run([sys.executable, "-c", POD_WRITER, str(target / name), str(mib)],
                          timeout=60).returncode


def _stats(client: CsiClient, volume_id: str, path: Path) -> tuple[csi_pb2.NodeGetVolumeStatsResponse, float]:
    started = time.monotonic()
    resp = client.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=str(path)))
    return resp, time.monotonic() - started


def _bytes(resp: csi_pb2.NodeGetVolumeStatsResponse) -> csi_pb2.VolumeUsage:
    return next(u for u in resp.usage if u.unit == csi_pb2.VolumeUsage.BYTES)


def test_write_past_capacity_fails_with_edquot_until_expanded(
    client: CsiClient, client_b: CsiClient, btrfs_fs: str, fwork: Path
) -> None:
    vol = create(client, "pvc-quota", sc(btrfs_fs, enforceCapacity="true", directoryPerms="777"), size=16 * MiB)
    assert vol.capacity_bytes == 16 * MiB
    pod = published(client_b, fwork, vol.volume_id, "quota", node="node-b")
    assert _pod_write(pod.target, "fits.bin", 8) == 0
    assert _pod_write(pod.target, "too-big.bin", 24) == errno.EDQUOT
    os.remove(pod.target / "too-big.bin")
    os.sync()  # quota numbers follow the transaction commit
    resp, took = _stats(client_b, vol.volume_id, pod.target)
    usage = _bytes(resp)
    assert took < 1.0
    assert usage.total == 16 * MiB, "with a quota, the volume's size is its capacity"
    assert 8 * MiB <= usage.used < 9 * MiB and usage.available == usage.total - usage.used
    # Online expansion: the controller alone raises the quota; no node step, no remount.
    grown = client.controller.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vol.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=64 * MiB)))
    assert grown.capacity_bytes == 64 * MiB and not grown.node_expansion_required
    assert _pod_write(pod.target, "now-fits.bin", 24) == 0
    os.sync()
    assert _bytes(_stats(client_b, vol.volume_id, pod.target)[0]).total == 64 * MiB
    pod.unpublish()
    delete(client, vol.volume_id)


def test_capacity_is_recorded_but_not_enforced_by_default(client: CsiClient, btrfs_fs: str, fwork: Path) -> None:
    vol = create(client, "pvc-no-enforce", sc(btrfs_fs, directoryPerms="777"), size=4 * MiB)
    assert vol.capacity_bytes == 4 * MiB
    pod = published(client, fwork, vol.volume_id, "no-enforce")
    assert _pod_write(pod.target, "big.bin", 12) == 0, "as on EFS, capacity is only a number"
    os.sync()
    usage = _bytes(_stats(client, vol.volume_id, pod.target)[0])
    assert usage.used >= 12 * MiB, "usage comes from the access point's quota group even without a limit"
    pod.unpublish()
    delete(client, vol.volume_id)


def test_stats_without_quotas_walk_the_tree(client: CsiClient, xfs_fs: str, fwork: Path) -> None:
    vol = create(client, "pvc-walk", sc(xfs_fs, directoryPerms="777"))
    pod = published(client, fwork, vol.volume_id, "walk")
    for i in range(50):
        d = pod.target / f"d{i % 5}"
        d.mkdir(exist_ok=True)
        (d / f"f{i}").write_bytes(b"z" * 65536)
    resp, took = _stats(client, vol.volume_id, pod.target)
    usage = _bytes(resp)
    assert took < 1.0
    assert usage.used >= 50 * 65536
    assert usage.total > usage.available > 0, "total and available come from statvfs"
    assert resp.volume_condition.message == "healthy" and not resp.volume_condition.abnormal
    inodes = next(u for u in resp.usage if u.unit == csi_pb2.VolumeUsage.INODES)
    assert inodes.used >= 55
    pod.unpublish()
    delete(client, vol.volume_id)


def test_walk_is_bounded_and_finishes_in_the_background(tmp_path: Path) -> None:
    for i in range(200):
        (tmp_path / f"f{i}").write_bytes(b"q" * 4096)
    walker = UsageWalker(budget=0.0, ttl=60)
    first = walker.usage(str(tmp_path))
    assert not first.exact, "no time at all: a lower bound"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        later = walker.usage(str(tmp_path))
        if later.exact:
            break
        time.sleep(0.01)
    assert later.exact and later.used_bytes >= 200 * 4096
    # Cached: a new file is not seen until the entry expires.
    (tmp_path / "new").write_bytes(b"n" * (1 << 20))
    assert walker.usage(str(tmp_path)).used_bytes == later.used_bytes


def test_stats_of_an_unpublished_path(client: CsiClient, btrfs_fs: str, fwork: Path) -> None:
    vol = create(client, "pvc-stats-none", sc(btrfs_fs))
    expect_error(grpc.StatusCode.NOT_FOUND, client.node.NodeGetVolumeStats, csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=vol.volume_id, volume_path=str(fwork / "kubelet" / "never")), match="not a published volume")
    delete(client, vol.volume_id)
