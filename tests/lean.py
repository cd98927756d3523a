"""What `elastivol serve` imports for one role: the process is started under ``python -X importtime``
(each import is reported on stderr as it happens), waited for until ready, and stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from elastivol.client import CsiClient

# Never on any serve path: the lab, the benchmarks, charts, rich's tables, and the metadata
# reader that only ``--version`` and GetPluginInfo need (imported on first use).
NEVER_SERVED = ("rich", "elastivol.lab", "bench", "matplotlib", "elastivol.demo", "elastivol.doctor",
                "elastivol.fs_cli", "elastivol.bench_cli")
NOT_FOR_LOCAL = ("boto3", "botocore", "elastivol.providers.aws")


def serve_imports(work: Path, args: list[str], env: dict[str, str] | None = None, timeout: float = 60,
                  mapped: list[str] | None = None) -> set[str]:
    """The modules a server started with ``args`` imported by the time it answered Probe ready; the
    files it had mapped then (shared libraries included) are appended to ``mapped`` if given."""
    socket = work / f"lean-{os.getpid()}-{len(args)}.sock"
    socket.unlink(missing_ok=True)
    err_path = work / f"{socket.name}.stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "elastivol", "serve", "--endpoint", f"unix://{socket}",
             "--log-level", "warning", *args],
            stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
        )
    try:
        with CsiClient(f"unix://{socket}") as client:
            client.wait_ready(timeout)
        if mapped is not None:
            maps = Path(f"/proc/{proc.pid}/maps").read_text().splitlines()
            mapped.extend(sorted({line.split()[-1] for line in maps if len(line.split()) >= 6}))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    text = err_path.read_text(errors="replace")
    err_path.unlink()
    names = set()
    for line in text.splitlines():
        # "import time:   self [us] |  cumulative | name", the name indented by its depth.
        if line.startswith("import time:") and line.count("|") == 2:
            head, _cum, name = line.split("|")
            if head.split(":")[1].strip().isdigit():
                names.add(name.strip())
    assert "elastivol.server" in names, f"no import report from the server:\n{text[-2000:]}"
    return names


def present(names: set[str], forbidden: tuple[str, ...]) -> list[str]:
    """The forbidden packages (or any module below one) among ``names``."""
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))
