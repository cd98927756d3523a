"""A private pool under /var/tmp, a served driver on it, and the cleanup that leaves nothing behind."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from elastivol.client import CsiClient
from elastivol.node import loop, mount
from elastivol.process import ServerProcess, serve_args
from elastivol.providers.local.pool import PoolConfig, init_pool

NODE = "bench-node"
ZONE = "zone-a"


@dataclass
class Env:
    work: Path
    pool: Path
    config: PoolConfig
    server: ServerProcess
    client: CsiClient

    @property
    def kubelet(self) -> Path:
        return self.work / "kubelet"

    def restart(self) -> None:
        self.client.close()
        self.server.stop()
        self.server.start()
        self.client = CsiClient(self.server.endpoint, timeout=300)


def cleanup(work: Path) -> list[str]:
    """Unmount everything under ``work`` (deepest first), detach loops backed there, remove it."""
    problems: list[str] = []
    prefix = str(work) + "/"
    for m in sorted((m for m in mount.mounts() if m.target.startswith(prefix)), key=lambda m: -len(m.target)):
        if m.target == str(work / "pool"):
            continue
        try:
            mount.unmount_all(m.target)
        except Exception as exc:
            problems.append(f"umount {m.target}: {exc}")
    for d in loop.under(work / "pool") if (work / "pool").is_dir() else []:
        try:
            loop.detach(d.path, expect=d.backing)
        except Exception as exc:
            problems.append(f"detach {d.path}: {exc}")
    pool = work / "pool"
    with contextlib.suppress(Exception):
        mount.unmount_all(str(pool))
    for d in loop.under(work) if work.is_dir() else []:
        try:
            loop.detach(d.path, expect=d.backing)
        except Exception as exc:
            problems.append(f"detach {d.path}: {exc}")
    shutil.rmtree(work, ignore_errors=True)
    return problems


@contextlib.contextmanager
def served_pool(
    tag: str, size: int, *, driver: str = "block", fs: str | None = None, extra: list[str] | None = None
) -> Iterator[Env]:
    work = Path(tempfile.mkdtemp(prefix=f"elastivol-bench-{tag}-", dir="/var/tmp"))
    server: ServerProcess | None = None
    client: CsiClient | None = None
    try:
        pool = work / "pool"
        cfg = init_pool(pool, size, fs)
        server = ServerProcess(
            serve_args(driver=driver, pool=pool, node_id=NODE, zone=ZONE, allowed_roots=[work], extra=extra or []),
            f"unix://{work}/csi.sock",
            work / "server.log",
            env={"ELASTIVOL_LOG_LEVEL": "warning"},
        )
        server.start(timeout=60)
        client = CsiClient(server.endpoint, timeout=300)
        env = Env(work, pool, cfg, server, client)
        yield env
        client = env.client
        server = env.server
    finally:
        if client is not None:
            client.close()
        if server is not None:
            server.stop()
        cleanup(work)


def run(argv: list[str], timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout)
