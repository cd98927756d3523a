from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from elastivol.client import CsiClient
from elastivol.process import ServerProcess, serve_args


@pytest.fixture(scope="module")
def block_server(pool_dir: Path) -> Iterator[ServerProcess]:
    """A block server in `all` mode (node-a, zone-a; controller serves zone-a and zone-b)."""
    work = pool_dir.parent
    endpoint = f"unix://{work}/block-{id(object())}.sock"
    server = ServerProcess(
        serve_args(pool=pool_dir, node_id="node-a", zone="zone-a", zones=["zone-a", "zone-b"], allowed_roots=[work]),
        endpoint,
        work / "logs" / "block-server.log",
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def node_b(pool_dir: Path) -> Iterator[ServerProcess]:
    """A second node plugin (node-b in zone-b) sharing the pool."""
    work = pool_dir.parent
    server = ServerProcess(
        serve_args(mode="node", pool=pool_dir, node_id="node-b", zone="zone-b", allowed_roots=[work]),
        f"unix://{work}/node-b.sock",
        work / "logs" / "node-b.log",
    ).start()
    yield server
    server.stop()


@pytest.fixture
def client(block_server: ServerProcess) -> Iterator[CsiClient]:
    with CsiClient(block_server.endpoint) as c:
        yield c


@pytest.fixture
def work(pool_dir: Path) -> Path:
    return pool_dir.parent
