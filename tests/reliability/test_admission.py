"""Atomic admission: concurrent creates and attaches, from two processes at once, at the limit's edge.

Each test runs two servers on one pool (as a controller and a second plugin sharing a pool would),
fires 16 calls at them together, and checks that exactly as many succeed as fit, that every other
call is RESOURCE_EXHAUSTED, and that the pool never promised more than it had.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.providers.local.pool import Pool
from tests.reliability.conftest import NODE, ServerFactory, pool_while_used
from tests.reliability.invariants import all_clean

GiB = 1 << 30
MiB = 1 << 20
CALLS = 16


@pytest.fixture(scope="module")
def rel_pool() -> Iterator[Path]:
    """A 12 GiB (sparse) pool of this module's own: volumes are whole GiB, so its edge is a few volumes away."""
    yield from pool_while_used(12 * GiB, "elastivol-admit-")


def _together(calls: list[Callable[[], object]]) -> list[grpc.StatusCode]:
    """Run every call at once (a barrier releases them together); the status code of each."""
    barrier = threading.Barrier(len(calls))
    codes: list[grpc.StatusCode] = [grpc.StatusCode.UNKNOWN] * len(calls)
    details: list[str] = [""] * len(calls)

    def one(i: int) -> None:
        barrier.wait()
        try:
            calls[i]()
            codes[i] = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            codes[i] = exc.code()
            details[i] = exc.details() or ""

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    unexpected = [(c, d) for c, d in zip(codes, details, strict=True)
                  if c not in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED)]
    assert not unexpected, unexpected
    return codes


def _delete_all(client: CsiClient, pool_dir: Path) -> None:
    for rec in Pool(pool_dir).volumes.all(fresh=True):
        for a in rec.get("attachments", []):
            client.controller.ControllerUnpublishVolume(
                csi_pb2.ControllerUnpublishVolumeRequest(volume_id=rec["id"], node_id=a["node_id"]), timeout=60)
        client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=rec["id"]), timeout=60)


def test_concurrent_creates_never_overcommit(rel_pool: Path, server_factory: ServerFactory) -> None:
    servers = [server_factory(f"admit-create-{i}").start() for i in range(2)]
    clients = [CsiClient(s.endpoint) for s in servers]
    try:
        available = Pool(rel_pool).available_bytes()
        # Whole GiB (the driver rounds up to them), sized so that about 5 fit with spare room:
        # metadata writes cannot tip the count.
        size = (available * 2 // 11) // GiB * GiB
        fit = available // size
        assert 0 < fit < CALLS
        calls: list[Callable[[], object]] = [
            (lambda i=i: clients[i % 2].create_volume(f"admit-{i}", size, zone="zone-a")) for i in range(CALLS)
        ]
        codes = _together(calls)
        made = Pool(rel_pool).volumes.all(fresh=True)
        assert codes.count(grpc.StatusCode.OK) == fit, codes
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == CALLS - fit
        assert len(made) == fit
        assert sum(int(r["size_bytes"]) for r in made) <= available
        usage = Pool(rel_pool).usage()
        assert usage.provisioned_bytes - usage.allocated_bytes <= usage.free_bytes, "the pool promised more than it has"
        # Nothing is left reserved once the calls are done: one more volume of the spare fits.
        spare = Pool(rel_pool).available_bytes()
        assert spare >= available - fit * size - 64 * MiB
        _delete_all(clients[0], rel_pool)
    finally:
        for c in clients:
            c.close()
    assert all_clean(rel_pool) == []


def test_concurrent_attaches_respect_the_node_limit(rel_pool: Path, server_factory: ServerFactory) -> None:
    limit = 3
    extra = ("--max-volumes-per-node", str(limit), "--overcommit-ratio", "20")
    servers = [server_factory(f"admit-attach-{i}", extra=extra).start() for i in range(2)]
    clients = [CsiClient(s.endpoint) for s in servers]
    try:
        ids = [clients[0].create_volume(f"attach-{i}", GiB, zone="zone-a").volume_id for i in range(CALLS)]

        def publish(i: int) -> object:
            cap = csi_pb2.VolumeCapability(
                mount=csi_pb2.VolumeCapability.MountVolume(),
                access_mode=csi_pb2.VolumeCapability.AccessMode(
                    mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER),
            )
            return clients[i % 2].controller.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
                volume_id=ids[i], node_id=NODE, volume_capability=cap), timeout=60)

        codes = _together([(lambda i=i: publish(i)) for i in range(CALLS)])
        assert codes.count(grpc.StatusCode.OK) == limit, codes
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == CALLS - limit
        attached = [r["id"] for r in Pool(rel_pool).volumes.all(fresh=True)
                    for a in r.get("attachments", []) if a["node_id"] == NODE]
        assert len(attached) == limit
        assert sorted(attached) == sorted(ids[i] for i, c in enumerate(codes) if c == grpc.StatusCode.OK)
        _delete_all(clients[0], rel_pool)
    finally:
        for c in clients:
            c.close()
    assert all_clean(rel_pool) == []
