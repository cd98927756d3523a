"""Fixtures of the reliability suite: its own small pools and servers it may kill."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from elastivol.node import _sys, loop, mount
from elastivol.process import ServerProcess, serve_args
from tests.reliability.pods import PodServer, pod_host
from tests.support import SERVE_MODULE, serve_env

MNT_DETACH = 2
NODE = "node-rel"
ZONE = "zone-a"


def _unmount_under(root: str, *, keep: str = "") -> None:
    for m in sorted(mount.mounts(), key=lambda m: len(m.target), reverse=True):
        if m.target.startswith(root + "/") and m.target != keep:
            try:
                mount.unmount(m.target)
            except Exception:
                _sys.umount2(m.target, MNT_DETACH)


def _detach_under(root: Path) -> None:
    # By identity, so devices attached by a plugin in another mount namespace are found too.
    for d in loop.under(root):
        try:
            loop.detach(d.path, expect=d.backing)
        except Exception as exc:
            print(f"could not detach {d.path}: {exc}")


def cleanup_work(work: Path) -> None:
    """Unmount everything under ``work``, detach the loops it backs: volumes first, the pool last."""
    pool = work / "pool"
    _unmount_under(str(work), keep=str(pool))
    _detach_under(pool)
    _unmount_under(str(work))
    _detach_under(work)


def keep_logs(work: Path) -> None:
    """Copy the servers' logs out of a work dir about to be removed (for post-mortems)."""
    logs = work / "logs"
    if logs.is_dir():
        shutil.copytree(logs, Path(tempfile.gettempdir()) / "elastivol-reliability-logs" / work.name,
                        dirs_exist_ok=True)


def make_pool(size: int, prefix: str) -> Path:
    from elastivol.providers.local.pool import init_pool

    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    init_pool(work / "pool", size, "xfs")
    return work / "pool"


def pool_while_used(size: int, prefix: str) -> Iterator[Path]:
    """The body of a pool fixture: a new pool, then, once done with, its mounts and loops gone, logs
    kept, its work dir removed."""
    pool = make_pool(size, prefix)
    yield pool
    cleanup_work(pool.parent)
    keep_logs(pool.parent)
    shutil.rmtree(pool.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def rel_pool() -> Iterator[Path]:
    """A 12 GiB (sparse) xfs reflink pool of this module's own."""
    yield from pool_while_used(12 << 30, "elastivol-rel-")


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def server_factory(rel_pool: Path) -> Iterator[ServerFactory]:
    """Makes (unstarted) servers on the module's pool; stops whatever is still running after the test."""
    made: list[ServerProcess] = []
    work = rel_pool.parent

    def factory(name: str = "rel", *, env: dict[str, str] | None = None, extra: tuple[str, ...] = (),
                roots: tuple[Path, ...] = ()) -> ServerProcess:
        server = ServerProcess(
            serve_args(pool=rel_pool, node_id=NODE, zone=ZONE, allowed_roots=list(roots or [work]), extra=extra),
            f"unix://{work}/{name}-{os.getpid()}-{len(made)}.sock",
            work / "logs" / f"{name}.log",
            env=serve_env(env),
            module=SERVE_MODULE,  # the real CLI, with the crash hook the env may ask for
        )
        made.append(server)
        return server

    yield factory
    for server in made:
        server.stop()


PodFactory = Callable[..., PodServer]


@pytest.fixture
def pods(rel_pool: Path) -> Iterator[PodFactory]:
    """Makes (unstarted) servers that run as pods: each start in a new mount namespace, the pool
    bound at a path of its own, the host's kubelet dir shared (see tests.reliability.pods)."""
    work = rel_pool.parent
    made: list[PodServer] = []
    with pod_host(work) as ns_dir:

        def factory(name: str, *, env: dict[str, str] | None = None) -> PodServer:
            server = PodServer(
                serve_args(pool=rel_pool, node_id=NODE, zone=ZONE, allowed_roots=[work]),
                f"unix://{work}/{name}-{os.getpid()}-{len(made)}.sock",
                work / "logs" / f"{name}.log",
                env=serve_env(env),
                module=SERVE_MODULE,
                host_pool=rel_pool,
                ns_dir=ns_dir,
                name=name,
            )
            made.append(server)
            return server

        try:
            yield factory
        finally:
            for server in made:
                server.stop()
