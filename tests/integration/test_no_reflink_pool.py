"""A pool without reflink still works: snapshots and clones are full sparse copies, and it says so."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.process import ServerProcess, serve_args
from elastivol.providers.local.pool import init_pool
from tests.helpers import Vol, leaked, new_volume


@pytest.fixture(scope="module")
def plain_pool() -> Iterator[Path]:
    # /var/tmp is the host's ext4: no reflink.
    work = Path(tempfile.mkdtemp(prefix="elastivol-noreflink-", dir="/var/tmp"))
    pool = work / "pool"
    config = init_pool(pool, in_place=True)
    assert not config.reflink and config.backing_image == ""
    yield pool
    shutil.rmtree(work, ignore_errors=True)


def test_snapshot_restore_and_clone_are_full_copies(plain_pool: Path) -> None:
    work = plain_pool.parent
    server = ServerProcess(serve_args(pool=plain_pool, allowed_roots=[work]), f"unix://{work}/csi.sock",
                           work / "server.log").start()
    try:
        with CsiClient(server.endpoint) as client:
            _, call = client.identity.Probe.with_call(csi_pb2.ProbeRequest())
            assert "no reflink" in dict(call.trailing_metadata())["elastivol-notice"]
            vol = new_volume(client, work, "plain")
            vol.up()
            checksum = vol.write(32 << 20)
            snap = client.controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
                name="plain-snap", source_volume_id=vol.id)).snapshot
            assert snap.ready_to_use
            record = json.loads((plain_pool / "meta" / "snapshots" / f"{snap.snapshot_id}.json").read_text())
            assert record["data"]["method"] == "copy"
            # Staged on this host at snapshot time: the filesystem was frozen around the copy.
            assert record["data"]["consistency"] == "filesystem"
            vol.down()
            src = csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource(
                snapshot_id=snap.snapshot_id))
            restored = client.create_volume("plain-restored", 1 << 30, cap=vol.cap, zone="zone-a", source=src)
            copy = Vol(client, restored, vol.cap, work / "kubelet" / "staging" / restored.volume_id,
                       work / "kubelet" / "pods" / "plain-restored" / "mount", "node-a", {})
            copy.up()
            assert copy.checksum(32 << 20) == checksum
            copy.down()
            copy.delete()
            client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
            vol.delete()
    finally:
        server.stop()
    assert "no reflink" in server.log_path.read_text()
    info = subprocess.run([sys.executable, "-m", "elastivol", "pool", "info", str(plain_pool)],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    assert "NO: snapshots and clones are full copies" in info
    assert leaked(plain_pool) == []


def test_a_deleted_image_is_told_apart_from_another_pools_on_the_same_filesystem(plain_pool: Path) -> None:
    from elastivol import ids
    from elastivol.node import loop
    from elastivol.providers.local.pool import Pool

    other_dir = plain_pool.parent / "other-pool"
    init_pool(other_dir, in_place=True)
    ours, other = Pool(plain_pool), Pool(other_dir)
    image = ours.image_path(ids.new_id("vol"))
    with open(image, "wb") as fh:
        fh.truncate(16 << 20)
    dev = loop.attach(image)
    try:
        assert [f.device.path for f in ours.loop_devices()] == [dev.path]
        image.unlink()
        # Both pools share /var/tmp's filesystem; the sysfs folder (visible here) says whose it was.
        [found] = ours.loop_devices()
        assert found.deleted and found.object_id == image.stem and found.device.path == dev.path
        assert other.loop_devices() == []
    finally:
        loop.detach(dev.path, expect=dev.backing)
    shutil.rmtree(other_dir)
