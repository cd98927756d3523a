"""A plugin killed between FIFREEZE and FITHAW leaves the volume's filesystem frozen; the restart thaws it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.errors import FailedPrecondition
from elastivol.node import fs as hostfs
from elastivol.providers.local.pool import FROZEN_PREFIX
from tests.helpers import expect_error, new_volume
from tests.reliability.conftest import NODE, ServerFactory
from tests.reliability.invariants import all_clean
from tests.support import crash

WRITE = """
import os, sys
with open(sys.argv[1], "wb") as fh:
    fh.write(b"after the restart")
    fh.flush()
    os.fsync(fh.fileno())
"""


@pytest.mark.parametrize("kind", ["xfs", "ext4"])
def test_restart_thaws_a_filesystem_a_killed_snapshot_left_frozen(
    kind: str, rel_pool: Path, server_factory: ServerFactory
) -> None:
    server = server_factory(f"frozen-{kind}", env={crash.ENV: "freeze.while_frozen"}).start()
    client = CsiClient(server.endpoint)
    vol = new_volume(client, rel_pool.parent, f"frozen-{kind}", kind=kind, node_id=NODE)
    snapshot = csi_pb2.CreateSnapshotRequest(name=f"frozen-{kind}-snap", source_volume_id=vol.id)
    try:
        vol.up()
        vol.write(1 << 20)
        expect_error(grpc.StatusCode.UNAVAILABLE, client.controller.CreateSnapshot, snapshot, timeout=60)
        assert server.proc is not None and server.proc.wait(10) == -9
        # The kernel kept it frozen: a second freeze says so (a write would block until a thaw).
        with pytest.raises(FailedPrecondition, match="already frozen"):
            hostfs.freeze(str(vol.staging))
        assert list(rel_pool.joinpath("locks").glob(f"{FROZEN_PREFIX}*.json")), "the freeze left no marker"

        server.env = {}
        server.start()
        client.close()
        client = vol.client = CsiClient(server.endpoint)
        # Writable again, through the pod's mount: bounded, so a regression fails instead of hanging.
        writer = subprocess.Popen([sys.executable, "-c", WRITE, str(vol.target / "after.txt")])
        try:
            assert writer.wait(30) == 0
        except subprocess.TimeoutExpired:
            hostfs.thaw(str(vol.staging))  # a writer blocked on a frozen filesystem cannot even be killed
            writer.wait(30)
            pytest.fail("a write to the volume still blocked 30 s after the restart: it was left frozen")
        assert (vol.target / "after.txt").read_bytes() == b"after the restart"
        assert not list(rel_pool.joinpath("locks").glob(f"{FROZEN_PREFIX}*.json"))
        assert "frozen-filesystem" in server.log_path.read_text()
        # The CO's retry of the snapshot succeeds, freezing and thawing as it should.
        assert client.controller.CreateSnapshot(snapshot, timeout=60).snapshot.ready_to_use
        vol.write(4096, name="after-snapshot.bin")
        client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(
            snapshot_id=client.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest(
                source_volume_id=vol.id), timeout=30).entries[0].snapshot.snapshot_id), timeout=30)
        vol.down()
        vol.delete()
    finally:
        with contextlib.suppress(Exception):
            hostfs.thaw(str(vol.staging))  # never leave a frozen filesystem to the next test
        client.close()
    assert all_clean(rel_pool) == []
