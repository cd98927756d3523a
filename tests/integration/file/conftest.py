"""Fixtures for the file driver: a btrfs pool with quotas, three kinds of roots, and two node plugins.

* ``btrfs_fs``: a root on the btrfs pool (subvolumes, quotas, O(1) snapshots);
* ``xfs_fs``: a root on the session's XFS pool (reflink, no quotas: tree-copy snapshots);
* ``plain_fs``: a root on the host's own filesystem (no reflink, no quotas).

The file driver runs as two real processes: node-a (zone-a) with the controller (``--mode all``)
and node-b (zone-b), a node plugin only. Everything they mount lives under one work directory,
which is unmounted and removed at the end of the package.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from elastivol.client import CsiClient
from elastivol.node import loop, mount
from elastivol.process import ServerProcess
from elastivol.providers.local.file.registry import FileRegistry
from elastivol.providers.local.pool import Pool, init_pool
from tests.helpers import served


def _cleanup(work: Path) -> None:
    devices = loop.under(work)  # before unmounting: a pool's files are found only while it is mounted
    for m in sorted(mount.mounts(), key=lambda m: len(m.target), reverse=True):
        if m.target.startswith(str(work) + "/"):
            mount.unmount_all(m.target)
    for d in devices:
        loop.detach(d.path, expect=d.backing)


@pytest.fixture(scope="package")
def fwork() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="elastivol-file-", dir="/var/tmp"))
    yield work
    _cleanup(work)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="package")
def fspool(fwork: Path) -> Path:
    pool = fwork / "fspool"
    config = init_pool(pool, 4 << 30, "btrfs")
    assert config.quotas == "btrfs-qgroup", config
    return pool


@pytest.fixture(scope="package")
def registry(fspool: Path) -> FileRegistry:
    return FileRegistry(Pool(fspool))


@pytest.fixture(scope="package")
def btrfs_fs(registry: FileRegistry, fspool: Path) -> str:
    root = fspool / "fs" / "main"
    root.mkdir(parents=True)
    fs = registry.register("main", str(root))
    assert fs.quotas == "btrfs-qgroup" and fs.reflink
    return fs.id


@pytest.fixture(scope="package")
def xfs_fs(registry: FileRegistry, pool_dir: Path) -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="fileroot-", dir=pool_dir))
    fs = registry.register("xfs", str(root))
    assert fs.reflink and fs.quotas == "none"
    yield fs.id
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="package")
def plain_fs(registry: FileRegistry, fwork: Path) -> str:
    root = fwork / "plain"
    root.mkdir()
    fs = registry.register("plain", str(root))
    assert not fs.reflink and fs.quotas == "none"
    return fs.id


@pytest.fixture(scope="package")
def file_server(fspool: Path, fwork: Path) -> Iterator[ServerProcess]:
    yield from served(fwork, "file-a", "file-a", pool=fspool, driver="file", node_id="node-a", zone="zone-a",
                      zones=["zone-a", "zone-b"])


@pytest.fixture(scope="package")
def file_node_b(fspool: Path, fwork: Path) -> Iterator[ServerProcess]:
    yield from served(fwork, "file-b", "file-b", pool=fspool, driver="file", mode="node", node_id="node-b",
                      zone="zone-b")


@pytest.fixture
def client(file_server: ServerProcess) -> Iterator[CsiClient]:
    with CsiClient(file_server.endpoint, timeout=60) as c:
        yield c


@pytest.fixture
def client_b(file_node_b: ServerProcess) -> Iterator[CsiClient]:
    with CsiClient(file_node_b.endpoint, timeout=60) as c:
        yield c
