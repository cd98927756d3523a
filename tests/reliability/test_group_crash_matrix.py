"""SIGKILL the server at every group snapshot crash point, restart it, let the CO retry, check the pool.

A kill while the members are frozen leaves them frozen (the kernel keeps a freeze); the restart
thaws them from the markers. A half-made group is completed when every member was cut and rolled
back otherwise; a half-deleted group is finished. Nothing may be left frozen, half-made or leaked.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from elastivol import crashpoints
from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.node import fs as hostfs
from elastivol.providers.local import group_snapshots
from elastivol.providers.local.pool import FROZEN_PREFIX, Pool
from tests.helpers import Vol, expect_error, new_volume
from tests.reliability.conftest import NODE, ServerFactory
from tests.reliability.invariants import all_clean
from tests.support import crash

GROUP_POINTS = sorted(p for p in crashpoints.KNOWN if p.startswith("group."))

WRITE = """
import os, sys
with open(sys.argv[1], "wb") as fh:
    fh.write(b"written after the restart")
    fh.flush()
    os.fsync(fh.fileno())
"""


def test_matrix_covers_every_group_point() -> None:
    assert group_snapshots.crashpoints is crashpoints
    assert {"group.after_intent", "group.while_frozen", "group.after_members",
            "group.delete_after_member"} == set(GROUP_POINTS)


def _writable(vol: Vol) -> None:
    """A write through the pod's mount finishes: bounded, so a filesystem left frozen fails the test."""
    writer = subprocess.Popen([sys.executable, "-c", WRITE, str(vol.target / "after.txt")])
    try:
        assert writer.wait(30) == 0
    except subprocess.TimeoutExpired:
        hostfs.thaw(str(vol.staging))
        writer.wait(30)
        pytest.fail(f"a write to {vol.id} still blocked 30 s after the restart: it was left frozen")


def _create(client: CsiClient, name: str, vols: list[Vol]) -> csi_pb2.VolumeGroupSnapshot:
    return client.group.CreateVolumeGroupSnapshot(csi_pb2.CreateVolumeGroupSnapshotRequest(
        name=name, source_volume_ids=[v.id for v in vols]), timeout=60).group_snapshot


def _delete(client: CsiClient, group: csi_pb2.VolumeGroupSnapshot) -> None:
    client.group.DeleteVolumeGroupSnapshot(csi_pb2.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id=group.group_snapshot_id, snapshot_ids=[s.snapshot_id for s in group.snapshots]), timeout=60)


@pytest.mark.parametrize("point", GROUP_POINTS)
def test_group_crash_at(point: str, rel_pool: Path, server_factory: ServerFactory) -> None:
    server = server_factory(f"gcrash-{point}", env={crash.ENV: point}).start()
    client = CsiClient(server.endpoint)
    name = f"g-{point.replace('.', '-').replace('_', '-')}"
    vols = [new_volume(client, rel_pool.parent, f"{name}-{i}", node_id=NODE) for i in range(2)]
    try:
        for vol in vols:
            vol.up()
            vol.write(1 << 20)
        group = None
        if point == "group.delete_after_member":
            group = _create(client, name, vols)
            expect_error(grpc.StatusCode.UNAVAILABLE, _delete, client, group)
        else:
            expect_error(grpc.StatusCode.UNAVAILABLE, _create, client, name, vols)
        assert server.proc is not None and server.proc.wait(10) == -9
        if point == "group.while_frozen":
            assert list(rel_pool.joinpath("locks").glob(f"{FROZEN_PREFIX}*.json")), "the freeze left no marker"

        server.env = {}
        server.start()
        client.close()
        client = CsiClient(server.endpoint)
        for vol in vols:
            vol.client = client
            _writable(vol)
        assert not list(rel_pool.joinpath("locks").glob(f"{FROZEN_PREFIX}*.json"))
        log = server.log_path.read_text()
        assert "half-made-group-snapshot" in log, "start-up recovery did not report the group"
        pool = Pool(rel_pool)
        leftovers = [r for r in group_snapshots.group_store(pool).all(fresh=True) if r.get("state") != "ready"]
        assert leftovers == []
        if group is not None:
            # The delete was finished by recovery; the CO's retry is OK and finds nothing.
            _delete(client, group)
            assert group_snapshots.group_store(pool).all(fresh=True) == []
        else:
            # The CO retries the same name: one complete group, whatever recovery did.
            again = _create(client, name, vols)
            assert again.ready_to_use and len(again.snapshots) == 2
            assert len(group_snapshots.group_store(pool).all(fresh=True)) == 1
            _delete(client, again)
        assert [r for r in pool.snapshots.all(fresh=True) if r["name"].startswith(name)] == []
        for vol in vols:
            vol.down()
            vol.delete()
    finally:
        for vol in vols:
            with contextlib.suppress(Exception):
                hostfs.thaw(str(vol.staging))  # never leave a frozen filesystem to the next test
        client.close()
    assert all_clean(rel_pool) == []
