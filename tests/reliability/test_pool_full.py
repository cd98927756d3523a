"""The pool runs out of space in the middle of a create: RESOURCE_EXHAUSTED, and nothing half-made stays."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from tests.helpers import expect_error
from tests.reliability.conftest import ServerFactory, pool_while_used
from tests.reliability.invariants import all_clean

GiB = 1 << 30


@pytest.fixture(scope="module")
def rel_pool() -> Iterator[Path]:
    """A 4 GiB pool, so filling it is quick."""
    yield from pool_while_used(4 * GiB, "elastivol-full-")


def test_out_of_space_mid_create(rel_pool: Path, server_factory: ServerFactory) -> None:
    # Overcommit lets the up-front check pass, so the failure comes from the filesystem itself,
    # half-way through preallocating the image.
    server = server_factory("full", extra=("--overcommit-ratio", "10")).start()
    with CsiClient(server.endpoint) as client:
        for size in (6 * GiB, 5 * GiB):
            details = expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, client.create_volume, f"too-big-{size}", size,
                                   parameters={"preallocate": "true"}, zone="zone-a")
            assert "space" in details
            assert all_clean(rel_pool) == [], f"after a failed {size}-byte create"
        # The pool still works, and a retry with a size that fits succeeds under the same name.
        vol = client.create_volume("too-big-fits", 1 * GiB, parameters={"preallocate": "true"}, zone="zone-a")
        client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id))
    assert all_clean(rel_pool) == []


def test_exhausted_up_front(rel_pool: Path, server_factory: ServerFactory) -> None:
    server = server_factory("full-strict").start()
    with CsiClient(server.endpoint) as client:
        expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, client.create_volume, "way-too-big", 64 * GiB,
                     zone="zone-a", match="cannot hold")
    assert all_clean(rel_pool) == []
