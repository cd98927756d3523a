"""The socket is 0660 (or as configured) and never lives in a world-writable directory unless forced."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from elastivol.process import ServerProcess, serve_args
from tests.reliability.conftest import NODE, ZONE


def _server(pool: Path, sock_dir: Path, *extra: str) -> ServerProcess:
    return ServerProcess(serve_args(pool=pool, node_id=NODE, zone=ZONE, allowed_roots=[pool.parent], extra=extra),
                         f"unix://{sock_dir}/csi.sock", pool.parent / "logs" / f"sock-{sock_dir.name}.log")


@pytest.mark.parametrize("mode", [None, "0600"])
def test_socket_mode(rel_pool: Path, mode: str | None) -> None:
    sock_dir = rel_pool.parent / f"sock-{mode}"
    sock_dir.mkdir(mode=0o750, exist_ok=True)
    server = _server(rel_pool, sock_dir, *(["--socket-mode", mode] if mode else [])).start()
    try:
        st = os.stat(sock_dir / "csi.sock")
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == (0o660 if mode is None else 0o600)
    finally:
        server.stop()


def test_world_writable_socket_dir(rel_pool: Path) -> None:
    sock_dir = rel_pool.parent / "sock-open"
    sock_dir.mkdir(exist_ok=True)
    os.chmod(sock_dir, 0o1777)
    server = _server(rel_pool, sock_dir)
    server.start(wait=False)
    assert server.proc is not None and server.proc.wait(30) != 0
    assert "world-writable" in server.log_tail()
    assert not (sock_dir / "csi.sock").exists()
    forced = _server(rel_pool, sock_dir, "--force-unsafe-socket-dir").start()
    forced.stop()
