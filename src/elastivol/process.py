"""Running `elastivol serve` as a child process (demo, lab, tests, benchmarks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from elastivol.client import CsiClient
from elastivol.errors import Unavailable


@dataclass
class ServerProcess:
    args: list[str]
    endpoint: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    # argv put before the server's own, to run it through a wrapper that execs it (e.g. one
    # that enters a new mount namespace, as a container runtime would).
    prefix: list[str] = field(default_factory=list)
    # What `python -m` runs: elastivol's CLI, or a module that puts parts into it and then runs it
    # (tests/support/serve.py); either takes the CLI's arguments.
    module: str = "elastivol"

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", self.module, "serve", "--endpoint", self.endpoint, *self.args],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        with CsiClient(self.endpoint) as client:
            try:
                client.wait_ready(timeout)
            except Unavailable:
                code = self.proc.poll() if self.proc else None
                tail = self.log_tail()
                raise Unavailable(
                    f"server did not become ready (exit code {code}); last log lines:\n{tail}"
                ) from None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1


def serve_args(
    *,
    driver: str = "block",
    mode: str = "all",
    pool: str | Path,
    node_id: str = "node-a",
    zone: str = "zone-a",
    zones: Sequence[str] = (),
    allowed_roots: Sequence[str | Path] = (),
    extra: Sequence[str] = (),
) -> list[str]:
    args = ["--driver", driver, "--mode", mode, "--pool", str(pool), "--log-format", "json"]
    if mode in ("node", "all"):
        args += ["--node-id", node_id]
    args += ["--zone", zone]
    if zones:
        args += ["--zones", ",".join(zones)]
    for root in allowed_roots:
        args += ["--allowed-root", str(root)]
    return args + list(extra)
