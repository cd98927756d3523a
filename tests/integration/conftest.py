from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from elastivol.client import CsiClient
from elastivol.process import ServerProcess
from tests.helpers import served


@pytest.fixture(scope="module")
def block_server(pool_dir: Path) -> Iterator[ServerProcess]:
    """A block server in `all` mode (node-a, zone-a; controller serves zone-a and zone-b)."""
    yield from served(pool_dir.parent, f"block-{id(object())}", "block-server", pool=pool_dir, node_id="node-a",
                      zone="zone-a", zones=["zone-a", "zone-b"])


@pytest.fixture(scope="module")
def node_b(pool_dir: Path) -> Iterator[ServerProcess]:
    """A second node plugin (node-b in zone-b) sharing the pool."""
    yield from served(pool_dir.parent, "node-b", "node-b", pool=pool_dir, mode="node", node_id="node-b", zone="zone-b")


@pytest.fixture
def client(block_server: ServerProcess) -> Iterator[CsiClient]:
    with CsiClient(block_server.endpoint) as c:
        yield c


@pytest.fixture
def work(pool_dir: Path) -> Path:
    return pool_dir.parent
