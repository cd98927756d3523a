"""kill -9 the server mid-lifecycle; a new server finishes it from what is on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.process import ServerProcess, serve_args
from tests.helpers import leaked, new_volume


@pytest.fixture
def restartable(pool_dir: Path) -> Iterator[tuple[ServerProcess, Path]]:
    work = pool_dir.parent
    server = ServerProcess(
        serve_args(pool=pool_dir, node_id="node-r", zone="zone-a", allowed_roots=[work]),
        f"unix://{work}/restart.sock",
        work / "logs" / "restart.log",
    )
    server.start()
    yield server, work
    server.stop()


@pytest.mark.parametrize("kind", ["ext4", "block"])
def test_sigkill_mid_lifecycle_then_finish(restartable: tuple[ServerProcess, Path], pool_dir: Path, kind: str) -> None:
    server, work = restartable
    with CsiClient(server.endpoint) as client:
        vol = new_volume(client, work, f"restart-{kind}", kind=kind, node_id="node-r")
        vol.up()
        checksum = vol.write()
    server.kill()
    server.start()
    with vol.reconnected(server.endpoint) as client:
        # The CO retries the steps it is unsure of; every one must succeed against the new process.
        vol.controller_publish()
        vol.stage()
        vol.publish()
        assert vol.checksum() == checksum
        listed = [e.volume.volume_id for e in client.controller.ListVolumes(csi_pb2.ListVolumesRequest()).entries]
        assert vol.id in listed
        vol.down()
        vol.delete()
    assert leaked(pool_dir) == []
