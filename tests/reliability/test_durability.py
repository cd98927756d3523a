"""Data written and fsynced in a volume survives restarts, restage, snapshot/restore, clone and expansion.

Checksums are compared at every step. (Lab down/up is not covered: the lab is still being built.)
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.process import ServerProcess
from tests.helpers import Vol, code_of, new_volume
from tests.reliability.conftest import NODE, ZONE, ServerFactory
from tests.reliability.invariants import all_clean

GiB = 1 << 30
SIZE = 4 << 20


def _child(parent: Vol, client: CsiClient, name: str, source: csi_pb2.VolumeContentSource, size: int) -> Vol:
    vol = client.create_volume(name, size, cap=parent.cap, zone=ZONE, source=source)
    work = parent.staging.parent.parent.parent
    return Vol(client, vol, parent.cap, work / "kubelet" / "staging" / vol.volume_id,
               work / "kubelet" / "pods" / name / "mount", NODE, {})


def _restart(server: ServerProcess, vol: Vol, *, hard: bool) -> CsiClient:
    vol.client.close()
    if hard:
        server.kill()
    else:
        server.stop()
    server.start()
    client = CsiClient(server.endpoint)
    vol.client = client
    # The CO repeats what it is unsure of after a plugin restart; each call must be a no-op.
    vol.controller_publish()
    vol.stage()
    vol.publish()
    return client


def _expand(client: CsiClient, vol: Vol, size: int) -> None:
    client.controller.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vol.id, capacity_range=csi_pb2.CapacityRange(required_bytes=size)), timeout=60)
    node_req = csi_pb2.NodeExpandVolumeRequest(
        volume_id=vol.id, volume_path=str(vol.target), staging_target_path=str(vol.staging),
        capacity_range=csi_pb2.CapacityRange(required_bytes=size))
    code = code_of(client.node.NodeExpandVolume, node_req, timeout=60)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        # ext4 without CAP_SYS_RESOURCE grows at its next stage instead.
        vol.unpublish()
        vol.unstage()
        vol.stage()
        vol.publish()
    else:
        assert code == grpc.StatusCode.OK
    st = os.statvfs(vol.target)
    assert st.f_blocks * st.f_frsize > size * 0.9, "the filesystem did not grow"


@pytest.mark.parametrize("kind", ["xfs", "ext4"])
def test_data_survives(kind: str, rel_pool: Path, server_factory: ServerFactory) -> None:
    server = server_factory(f"durable-{kind}").start()
    client = CsiClient(server.endpoint)
    vol = new_volume(client, rel_pool.parent, f"durable-{kind}", kind=kind, node_id=NODE)
    vol.up()
    checksum = vol.write(SIZE)

    client = _restart(server, vol, hard=True)
    assert vol.checksum(SIZE) == checksum, "after SIGKILL and restart"
    client = _restart(server, vol, hard=False)
    assert vol.checksum(SIZE) == checksum, "after a graceful restart"

    vol.unpublish()
    vol.unstage()
    vol.stage()
    vol.publish()
    assert vol.checksum(SIZE) == checksum, "after unstage and restage"

    snap = client.controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
        name=f"durable-{kind}", source_volume_id=vol.id), timeout=120).snapshot
    snap_src = csi_pb2.VolumeContentSource(
        snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snap.snapshot_id))
    vol_src = csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=vol.id))
    for what, source in (("restore", snap_src), ("clone", vol_src)):
        child = _child(vol, client, f"durable-{kind}-{what}", source, 1 * GiB)
        child.up()
        assert child.checksum(SIZE) == checksum, f"in the {what}"
        child.down()
        child.delete()

    _expand(client, vol, 2 * GiB)
    assert vol.checksum(SIZE) == checksum, "after expansion"
    client = _restart(server, vol, hard=True)
    assert vol.checksum(SIZE) == checksum, "after expansion and a restart"

    vol.down()
    client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    vol.delete()
    client.close()
    assert all_clean(rel_pool) == []
