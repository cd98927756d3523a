"""A controller killed between the steps of a change leaves a record that the retried call completes."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.process import ServerProcess, serve_args
from elastivol.providers.local.file.registry import FileRegistry
from tests.helpers import code_of
from tests.integration.file.helpers import create, delete, root_of, sc
from tests.support import SERVE_MODULE, crash, serve_env


def _crashing(fspool: Path, fwork: Path, point: str, call: Callable[[CsiClient], object]) -> None:
    """Run ``call`` on a controller that SIGKILLs itself at ``point``."""
    server = ServerProcess(
        serve_args(driver="file", mode="controller", pool=fspool, zone="zone-a"),
        f"unix://{fwork}/crash.sock",
        fwork / "logs" / f"crash-{point}.log",
        env=serve_env({crash.ENV: point}),
        module=SERVE_MODULE,
    ).start()
    try:
        with CsiClient(server.endpoint, timeout=30) as c:
            assert code_of(call, c) == grpc.StatusCode.UNAVAILABLE, f"the server should have died at {point}"
        assert server.proc is not None and server.proc.wait(10) == -9
    finally:
        server.kill()


@pytest.mark.parametrize("point", ["accesspoint.after_record", "accesspoint.after_mkdir"])
def test_create_resumes_after_a_crash(
    client: CsiClient, registry: FileRegistry, btrfs_fs: str, fspool: Path, fwork: Path, point: str
) -> None:
    name = f"pvc-crash-{point.rsplit('.', 1)[-1]}"
    params = sc(btrfs_fs, basePath="/crash", directoryPerms="750", gidRangeStart="31000", gidRangeEnd="31999",
                enforceCapacity="true", deleteAccessPointRootDir="true")
    _crashing(fspool, fwork, point, lambda c: create(c, name, params, size=8 << 20))
    reserved = [r for r in registry.access_points_of(btrfs_fs) if r["name"] == name]
    assert len(reserved) == 1 and reserved[0]["state"] == "creating"
    vol = create(client, name, params, size=8 << 20)
    assert vol.volume_id.endswith(reserved[0]["id"]), "the retry completes the reserved access point"
    st = os.stat(root_of(registry, btrfs_fs) / "crash" / name)
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (reserved[0]["gid"], 0o750)
    _crashing(fspool, fwork, "accesspoint.delete_after_trash", lambda c: delete(c, vol.volume_id))
    delete(client, vol.volume_id)
    assert not (root_of(registry, btrfs_fs) / "crash" / name).exists()
    assert list((root_of(registry, btrfs_fs) / ".elastivol" / "trash").iterdir()) == []


def test_snapshot_resumes_after_a_crash(client: CsiClient, registry: FileRegistry, xfs_fs: str,
                                        fspool: Path, fwork: Path) -> None:
    vol = create(client, "pvc-crash-snap", sc(xfs_fs))
    _crashing(fspool, fwork, "filesnapshot.after_record", lambda c: c.controller.CreateSnapshot(
        csi_pb2.CreateSnapshotRequest(source_volume_id=vol.volume_id, name="crash-snap")))
    snap = client.controller.CreateSnapshot(
        csi_pb2.CreateSnapshotRequest(source_volume_id=vol.volume_id, name="crash-snap")).snapshot
    assert snap.ready_to_use
    client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    delete(client, vol.volume_id)
