"""Many calls at once on one name or one volume: one winner, the rest OK or ABORTED, nothing broken or left."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import grpc

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.providers.local.pool import Pool
from tests.helpers import code_of, new_volume
from tests.reliability.conftest import NODE, ServerFactory
from tests.reliability.invariants import all_clean

C = grpc.StatusCode
GiB = 1 << 30


def _until_ok(fn: Callable[[], object], tries: int = 50) -> None:
    for _ in range(tries):
        code = code_of(fn)
        if code == C.OK:
            return
        assert code == C.ABORTED, code
        time.sleep(0.1)
    raise AssertionError("still ABORTED")


def test_hundred_creates_one_name(rel_pool: Path, server_factory: ServerFactory) -> None:
    server = server_factory("same-name").start()
    with CsiClient(server.endpoint) as client:
        def create(_: int) -> tuple[C, str]:
            try:
                return C.OK, client.create_volume("same-name", 1 * GiB, zone="zone-a").volume_id
            except grpc.RpcError as exc:
                return exc.code(), exc.details() or ""
        with ThreadPoolExecutor(100) as pool:
            results = list(pool.map(create, range(100)))
        codes = Counter(code for code, _ in results)
        assert set(codes) <= {C.OK, C.ABORTED}, results
        ids = {vid for code, vid in results if code == C.OK}
        assert len(ids) == 1, ids
        assert [r["id"] for r in Pool(rel_pool).volumes.all() if r["name"] == "same-name"] == list(ids)
        print(f"100 concurrent CreateVolume(same-name): {dict((c.name, n) for c, n in codes.items())}")
        volume_id = ids.pop()
        _until_ok(lambda: client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id)))
    assert all_clean(rel_pool) == []


def test_node_calls_race_on_one_volume(rel_pool: Path, server_factory: ServerFactory) -> None:
    server = server_factory("node-race").start()
    with CsiClient(server.endpoint) as client:
        vol = new_volume(client, rel_pool.parent, "node-race", kind="xfs", node_id=NODE)
        vol.up()
        checksum = vol.write(1 << 20)
        targets = [rel_pool.parent / "kubelet" / "pods" / f"race-{i}" / "mount" for i in range(3)]
        ops: list[Callable[[], object]] = [vol.stage, vol.unstage]
        for t in targets:
            ops += [lambda t=t: vol.publish(t), lambda t=t: vol.unpublish(t)]
        rng = random.Random(8)
        plan = [rng.choice(ops) for _ in range(160)]
        with ThreadPoolExecutor(16) as pool:
            codes = Counter(pool.map(code_of, plan))
        assert set(codes) <= {C.OK, C.ABORTED, C.FAILED_PRECONDITION}, codes
        # Back to a known state, as the CO would drive it: the data must be exactly as written.
        _until_ok(vol.stage)
        _until_ok(lambda: vol.publish(targets[0]))
        vol.target = targets[0]
        assert vol.checksum(1 << 20) == checksum
        for t in [*targets, rel_pool.parent / "kubelet" / "pods" / "node-race" / "mount"]:
            _until_ok(lambda t=t: vol.unpublish(t))
        _until_ok(vol.unstage)
        vol.controller_unpublish()
        vol.delete()
    assert all_clean(rel_pool) == []


def test_snapshot_while_delete(rel_pool: Path, server_factory: ServerFactory) -> None:
    server = server_factory("snap-delete").start()
    with CsiClient(server.endpoint) as client:
        for round_ in range(4):
            vol = client.create_volume(f"snap-del-{round_}", 1 * GiB, zone="zone-a")
            snap_req = csi_pb2.CreateSnapshotRequest(name=f"snap-del-{round_}", source_volume_id=vol.volume_id)
            del_req = csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id)
            calls: list[Callable[[], object]] = [partial(client.controller.CreateSnapshot, snap_req)] * 4
            calls += [partial(client.controller.DeleteVolume, del_req)] * 4
            random.Random(round_).shuffle(calls)
            with ThreadPoolExecutor(8) as pool:
                codes = Counter(pool.map(code_of, calls))
            assert set(codes) <= {C.OK, C.ABORTED, C.NOT_FOUND, C.FAILED_PRECONDITION}, codes
            _until_ok(partial(client.controller.DeleteVolume, del_req))
            listed = client.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest()).entries
            for entry in listed:
                assert entry.snapshot.ready_to_use
                client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=entry.snapshot.snapshot_id))
            assert all_clean(rel_pool) == [], codes
