"""GID allocation is race-free: concurrent CreateVolume calls never share a GID; exhaustion says what to do."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.providers.local.file.registry import FileRegistry
from tests.helpers import expect_error
from tests.integration.file.helpers import create, delete, sc

CONCURRENT = 100


def test_concurrent_creates_get_distinct_gids(client: CsiClient, btrfs_fs: str, registry: FileRegistry) -> None:
    params = sc(btrfs_fs, basePath="/gids", gidRangeStart="20000", gidRangeEnd="20999")
    with ThreadPoolExecutor(CONCURRENT) as pool:
        vols = list(pool.map(lambda i: create(client, f"pvc-gid-{i:03d}", params), range(CONCURRENT)))
    gids = [int(v.volume_context["storage.elastivol.io/gid"]) for v in vols]
    assert len(set(gids)) == CONCURRENT, sorted(gids)
    assert all(20000 <= g <= 20999 for g in gids)
    # What the records say is what the directories are.
    root = Path(registry.get_filesystem(btrfs_fs).root)
    assert sorted(os.stat(root / "gids" / f"pvc-gid-{i:03d}").st_gid for i in range(CONCURRENT)) == sorted(gids)
    # A retry of one of them (the CO retries every call) gets the same access point and GID.
    again = create(client, "pvc-gid-007", params)
    assert again.volume_id == vols[7].volume_id
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda v: delete(client, v.volume_id), vols))
    assert registry.access_points_of(btrfs_fs) == []


def test_exhausted_range_says_what_to_do(client: CsiClient, plain_fs: str) -> None:
    params = sc(plain_fs, basePath="/tiny", gidRangeStart="7000", gidRangeEnd="7002")
    vols = [create(client, f"pvc-tiny-{i}", params) for i in range(3)]
    assert sorted(v.volume_context["storage.elastivol.io/gid"] for v in vols) == ["7000", "7001", "7002"]
    message = expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, create, client, "pvc-tiny-3", params)
    assert "7000-7002" in message and "new StorageClass" in message and "wider" in message
    # A freed GID is handed out again.
    delete(client, vols[1].volume_id)
    reused = create(client, "pvc-tiny-4", params)
    assert reused.volume_context["storage.elastivol.io/gid"] == "7001"
    for v in (vols[0], vols[2], reused):
        delete(client, v.volume_id)


def test_explicit_gid_needs_no_range(client: CsiClient, plain_fs: str) -> None:
    params = sc(plain_fs, basePath="/fixed", uid="3000", gid="3000", gidRangeStart="9000", gidRangeEnd="9001")
    vols = [create(client, f"pvc-fixed-{i}", params) for i in range(3)]
    assert {v.volume_context["storage.elastivol.io/gid"] for v in vols} == {"3000"}
    for v in vols:
        client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=v.volume_id))
