"""Volume group snapshots (issue 14 item 2) through the real socket: the CSI GroupController."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import grpc
import pytest

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.errors import Exhausted
from elastivol.node import copy as hostcopy
from elastivol.node import fs as hostfs
from elastivol.providers.local.block import LocalBlockProvider
from elastivol.providers.local.group_snapshots import LocalGroupSnapshots
from elastivol.providers.local.pool import FROZEN_PREFIX, Pool
from tests.alternation import AlternatingWriter, invariant_holds, read_counter
from tests.helpers import expect_error, leaked, new_volume
from tests.integration.test_block_snapshots import from_snapshot, restored, snapshot

C = grpc.StatusCode
GROUPS = 20  # group snapshots cut while the writer runs
CAP = csi_pb2.GroupControllerServiceCapability.RPC.CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT


def create_group(client: CsiClient, name: str, volume_ids: list[str], params: dict[str, str] | None = None
                 ) -> csi_pb2.VolumeGroupSnapshot:
    return client.group.CreateVolumeGroupSnapshot(csi_pb2.CreateVolumeGroupSnapshotRequest(
        name=name, source_volume_ids=volume_ids, parameters=params or {}), timeout=120).group_snapshot


def get_group(client: CsiClient, group_id: str, snapshot_ids: list[str]) -> csi_pb2.VolumeGroupSnapshot:
    return client.group.GetVolumeGroupSnapshot(csi_pb2.GetVolumeGroupSnapshotRequest(
        group_snapshot_id=group_id, snapshot_ids=snapshot_ids), timeout=60).group_snapshot


def delete_group(client: CsiClient, group_id: str, snapshot_ids: list[str]) -> None:
    client.group.DeleteVolumeGroupSnapshot(csi_pb2.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id=group_id, snapshot_ids=snapshot_ids), timeout=60)


def members(group: csi_pb2.VolumeGroupSnapshot) -> dict[str, str]:
    """source volume id -> member snapshot id."""
    return {s.source_volume_id: s.snapshot_id for s in group.snapshots}


def restored_counter(client: CsiClient, work: Path, snapshot_id: str, name: str) -> int:
    """Restore a snapshot into a new volume, mount it, and read its counter."""
    vol = restored(client, work, name, from_snapshot(snapshot_id), 1 << 30)
    vol.up()
    try:
        return read_counter(vol.target)
    finally:
        vol.down()
        vol.delete()


def test_capabilities(client: CsiClient) -> None:
    caps = client.group.GroupControllerGetCapabilities(csi_pb2.GroupControllerGetCapabilitiesRequest())
    assert [c.rpc.type for c in caps.capabilities] == [CAP]
    plugin = client.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    services = {c.service.type for c in plugin.capabilities if c.HasField("service")}
    assert csi_pb2.PluginCapability.Service.GROUP_CONTROLLER_SERVICE in services


def test_group_lifecycle(client: CsiClient, pool_dir: Path, work: Path) -> None:
    a = new_volume(client, work, "grp-a")
    b = new_volume(client, work, "grp-b")
    idle = new_volume(client, work, "grp-idle")  # never staged: snapshotted without a freeze
    a.up()
    b.up()
    sums = {a.id: a.write(4 << 20), b.id: b.write(4 << 20)}
    group = create_group(client, "group-1", [a.id, b.id, idle.id], {"tagSpecification_1": "team=db"})
    assert group.group_snapshot_id.startswith("vgs-") and group.ready_to_use
    assert group.creation_time.seconds > 0
    assert sorted(members(group)) == sorted([a.id, b.id, idle.id])
    assert {s.group_snapshot_id for s in group.snapshots} == {group.group_snapshot_id}
    assert all(s.ready_to_use and s.size_bytes == 1 << 30 for s in group.snapshots)
    snap_ids = [s.snapshot_id for s in group.snapshots]

    # Name idempotency: same volumes (any order) -> the same group; another set -> ALREADY_EXISTS.
    again = create_group(client, "group-1", [idle.id, b.id, a.id], {"tagSpecification_1": "team=db"})
    assert again.group_snapshot_id == group.group_snapshot_id and sorted(members(again).values()) == sorted(snap_ids)
    expect_error(C.ALREADY_EXISTS, create_group, client, "group-1", [a.id, b.id], match="group-1")
    expect_error(C.NOT_FOUND, create_group, client, "group-2", [a.id, "vol-0123456789abcdef0"], match="vol-0123456789abcdef0")
    expect_error(C.INVALID_ARGUMENT, create_group, client, "group-3", [a.id, a.id], match="more than once")
    expect_error(C.INVALID_ARGUMENT, create_group, client, "group-4", [])
    expect_error(C.INVALID_ARGUMENT, create_group, client, "group-5", [a.id], {"colour": "blue"}, match="colour")

    # Members are ordinary snapshots: listed, with their group, and restorable.
    listed = client.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest()).entries
    by_id = {e.snapshot.snapshot_id: e.snapshot for e in listed}
    assert set(snap_ids) <= set(by_id)
    assert {by_id[s].group_snapshot_id for s in snap_ids} == {group.group_snapshot_id}
    for vol in (a, b):
        vol.write(4 << 20)  # overwrite: the restore must bring back the group's instant
    for vol, name in ((a, "grp-restore-a"), (b, "grp-restore-b")):
        new = restored(client, work, name, from_snapshot(members(group)[vol.id]), 1 << 30)
        new.up()
        assert new.checksum(4 << 20) == sums[vol.id]
        new.down()
        new.delete()

    # Get / Delete check the member list; an unknown group is NOT_FOUND on get and OK on delete.
    got = get_group(client, group.group_snapshot_id, snap_ids)
    assert got.ready_to_use and sorted(members(got).values()) == sorted(snap_ids)
    expect_error(C.INVALID_ARGUMENT, get_group, client, group.group_snapshot_id, snap_ids[:1], match="not the members")
    expect_error(C.INVALID_ARGUMENT, delete_group, client, group.group_snapshot_id, snap_ids[1:])
    expect_error(C.NOT_FOUND, get_group, client, "vgs-0123456789abcdef0", snap_ids)
    expect_error(C.INVALID_ARGUMENT, get_group, client, group.group_snapshot_id, [])
    delete_group(client, group.group_snapshot_id, snap_ids)
    expect_error(C.NOT_FOUND, get_group, client, group.group_snapshot_id, snap_ids)
    delete_group(client, group.group_snapshot_id, snap_ids)  # again: OK
    delete_group(client, "vgs-0123456789abcdef0", snap_ids)
    delete_group(client, "not-a-group", snap_ids)
    remaining = {e.snapshot.snapshot_id for e in client.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest()).entries}
    assert not set(snap_ids) & remaining
    assert not [p for p in (pool_dir / "snapshots").iterdir() if p.stem in snap_ids]

    # The freeze window is in the log, for the two staged members only.
    log = (work / "logs" / "block-server.log").read_text()
    assert f"group snapshot {group.group_snapshot_id} (group-1): 3 members, 2 filesystems frozen for" in log
    for vol in (a, b):
        vol.down()
    for vol in (a, b, idle):
        vol.delete()


def test_group_keeps_cross_volume_invariant_singles_break_it(client: CsiClient, pool_dir: Path, work: Path) -> None:
    """The issue's proof: every restored group satisfies B <= A <= B+1; A-then-B singles do not."""
    a = new_volume(client, work, "alt-a")
    b = new_volume(client, work, "alt-b")
    a.up()
    b.up()
    seen: list[tuple[int, int]] = []
    broken: list[tuple[int, int]] = []

    def check(snap_a: str, snap_b: str, i: int) -> tuple[int, int]:
        # Restored one by one (and the snapshots dropped) to keep what the pool must promise small.
        return restored_counter(client, work, snap_a, f"alt-ra-{i}"), restored_counter(client, work, snap_b, f"alt-rb-{i}")

    with AlternatingWriter(a.target, b.target) as writer:
        time.sleep(0.2)
        for i in range(GROUPS):
            group = create_group(client, f"alt-group-{i}", [a.id, b.id])
            m = members(group)
            pair = check(m[a.id], m[b.id], i)
            seen.append(pair)
            assert invariant_holds(*pair), f"group {i} broke the invariant: A={pair[0]} B={pair[1]}"
            delete_group(client, group.group_snapshot_id, list(m.values()))
        for i in range(3):
            first = snapshot(client, f"alt-single-a-{i}", a.id).snapshot_id
            time.sleep(0.3)  # a CO taking the PVCs one by one: the writer moves on in between
            second = snapshot(client, f"alt-single-b-{i}", b.id).snapshot_id
            pair = check(first, second, 100 + i)
            if not invariant_holds(*pair):
                broken.append(pair)
            for snap_id in (first, second):
                client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap_id))
    assert writer.n > 100, f"the writer made only {writer.n} rounds; the test proves nothing"
    assert len({p[0] for p in seen}) > 1, f"every group caught the same instant {seen}: the writer was not running"
    assert broken, "single snapshots taken one after the other never broke the invariant"
    print(f"\n{GROUPS} groups, all consistent: {seen}\nsingles that broke it (A, B): {broken}; writer rounds {writer.n}")
    a.down()
    b.down()
    a.delete()
    b.delete()
    assert not leaked(pool_dir)


def test_failure_part_way_rolls_back_and_thaws(client: CsiClient, pool_dir: Path, work: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of space on the third member: the two made are removed, every filesystem thawed.

    The provider runs in this process on the server's pool (pools are shared between processes),
    so the third copy can be made to fail with ENOSPC; the freezes, copies and thaws are real.
    """
    vols = [new_volume(client, work, f"roll-{i}") for i in range(3)]
    for vol in vols:
        vol.up()
    pool = Pool(pool_dir)
    groups = LocalGroupSnapshots(pool, LocalBlockProvider(pool, ["zone-a", "zone-b"]))
    real_clone = hostcopy.clone_file
    calls: list[str] = []

    def clone(src: str, dst: str, **kw: bool) -> str:
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_clone(src, dst, **kw)

    monkeypatch.setattr(hostcopy, "clone_file", clone)
    snaps_before = set(os.listdir(pool_dir / "snapshots"))
    with pytest.raises(Exhausted, match="ran out of space while cutting group snapshot 'rolled'"):
        groups.create_group_snapshot("rolled", [v.id for v in vols], {})
    assert len(calls) == 3
    assert set(os.listdir(pool_dir / "snapshots")) == snaps_before
    assert not [r for r in pool.snapshots.all(fresh=True) if r["name"].startswith("rolled/")]
    assert groups.groups.find("name", "rolled") is None
    assert not list((pool_dir / "locks").glob(f"{FROZEN_PREFIX}*"))
    for vol in vols:
        hostfs.freeze(str(vol.staging))  # would say "already frozen" had the rollback not thawed it
        hostfs.thaw(str(vol.staging))
    # The CO's retry, with the space back, makes the whole group.
    monkeypatch.setattr(hostcopy, "clone_file", real_clone)
    group = create_group(client, "rolled", [v.id for v in vols])
    assert group.ready_to_use and len(group.snapshots) == 3
    delete_group(client, group.group_snapshot_id, [s.snapshot_id for s in group.snapshots])
    for vol in vols:
        vol.down()
        vol.delete()


def test_a_member_deleted_on_its_own_does_not_block_the_group_delete(client: CsiClient, pool_dir: Path,
                                                                      work: Path) -> None:
    a = new_volume(client, work, "lone-a")
    b = new_volume(client, work, "lone-b")
    group = create_group(client, "lone", [a.id, b.id])
    snap_ids = [s.snapshot_id for s in group.snapshots]
    log = (work / "logs" / "block-server.log").read_text()
    assert f"group snapshot {group.group_snapshot_id} (lone): 2 members, none staged on this host" in log
    client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap_ids[0]))
    got = get_group(client, group.group_snapshot_id, snap_ids)
    assert not got.ready_to_use and [s.snapshot_id for s in got.snapshots] == snap_ids[1:]
    expect_error(C.INVALID_ARGUMENT, delete_group, client, group.group_snapshot_id, snap_ids[1:])
    delete_group(client, group.group_snapshot_id, snap_ids)
    expect_error(C.NOT_FOUND, get_group, client, group.group_snapshot_id, snap_ids)
    assert not [p for p in (pool_dir / "snapshots").iterdir() if p.stem in snap_ids]
    a.delete()
    b.delete()
