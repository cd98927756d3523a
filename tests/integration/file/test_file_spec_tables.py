"""The CSI spec's error tables for the file driver on the local provider, through the real socket
(issue 13, item 3): NodeGetVolumeStats answers NOT_FOUND for a path that does not hold the
volume, and ControllerExpandVolume to a size at or below the current one returns the current size.
(The file driver has no NodeStageVolume and no NodeExpandVolume.)"""

from __future__ import annotations

from pathlib import Path

import grpc

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from tests.helpers import code_of, expect_error
from tests.integration.file.helpers import create, delete, mounted_under, published, sc

C = grpc.StatusCode
MiB = 1 << 20


def _stats(client: CsiClient, volume_id: str, path: str) -> None:
    client.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=path), timeout=60)


def test_stats_of_a_path_that_does_not_hold_the_volume_is_not_found(
    client: CsiClient, xfs_fs: str, fwork: Path
) -> None:
    a = create(client, "pvc-tables-a", sc(xfs_fs))
    b = create(client, "pvc-tables-b", sc(xfs_fs))
    pod_a = published(client, fwork, a.volume_id, "tables-a")
    pod_b = published(client, fwork, b.volume_id, "tables-b")
    empty = fwork / "kubelet" / "node-a" / "pods" / "tables-none"
    empty.mkdir(parents=True, exist_ok=True)
    cases = {
        "an id this driver never makes": ("not-a-volume-id", str(pod_a.target), "does not exist"),
        "a relative path": (a.volume_id, "some/path", "not absolute"),
        "a path outside the allowed roots": (a.volume_id, "/etc", "outside the allowed roots"),
        "a directory with nothing mounted": (a.volume_id, str(empty), "not a published volume"),
        "another volume's directory": (a.volume_id, str(pod_b.target), "another directory"),
    }
    for case, (volume_id, path, words) in cases.items():
        details = expect_error(C.NOT_FOUND, _stats, client, volume_id, path)
        assert words in details, f"{case}: {details!r}"
    assert code_of(_stats, client, a.volume_id, str(pod_a.target)) == C.OK
    assert code_of(_stats, client, b.volume_id, str(pod_b.target)) == C.OK
    pod_a.unpublish()
    pod_b.unpublish()
    assert mounted_under(fwork) == []
    delete(client, a.volume_id)
    delete(client, b.volume_id)


def test_expand_to_the_current_capacity_or_less_returns_the_current_capacity(
    client: CsiClient, xfs_fs: str
) -> None:
    vol = create(client, "pvc-tables-expand", sc(xfs_fs), size=64 * MiB)

    def expand(required: int) -> csi_pb2.ControllerExpandVolumeResponse:
        return client.controller.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
            volume_id=vol.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=required)))

    assert expand(32 * MiB).capacity_bytes == 64 * MiB
    assert expand(64 * MiB).capacity_bytes == 64 * MiB
    assert expand(128 * MiB).capacity_bytes == 128 * MiB
    assert expand(64 * MiB).capacity_bytes == 128 * MiB, "a capacity never shrinks"
    delete(client, vol.volume_id)
