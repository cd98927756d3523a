"""Volume lifecycles at concurrency 16 against one server: no errors but ABORTED retries, no leaks, bounded RSS.

The full 500 lifecycles fit the CI budget (about 35 s on 2 cores); ``ELASTIVOL_LOAD_COUNT`` overrides the count.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from elastivol.client import CsiClient
from elastivol.process import ServerProcess
from tests.helpers import new_volume
from tests.reliability.conftest import NODE, ServerFactory
from tests.reliability.invariants import all_clean

COUNT = int(os.environ.get("ELASTIVOL_LOAD_COUNT", "500"))
CONCURRENCY = 16
MiB = 1 << 20
ABORTED_RETRIES: Counter[str] = Counter()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _retrying(step: str, fn: Callable[[], object]) -> None:
    for _ in range(100):
        try:
            fn()
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ABORTED:
                raise AssertionError(f"{step}: {exc.code().name}: {exc.details()}") from None
            ABORTED_RETRIES[step] += 1
            time.sleep(0.05)
    raise AssertionError(f"{step}: still ABORTED after 100 tries")


def lifecycle(client: CsiClient, work: Path, i: int) -> None:
    vol = new_volume(client, work, f"load-{i}", kind="ext4", size=32 * MiB, node_id=NODE)
    for step, fn in (("ControllerPublishVolume", vol.controller_publish), ("NodeStageVolume", vol.stage),
                     ("NodePublishVolume", vol.publish)):
        _retrying(step, fn)
    checksum = vol.write(1 * MiB)
    assert vol.checksum(1 * MiB) == checksum
    for step, fn in (("NodeUnpublishVolume", vol.unpublish), ("NodeUnstageVolume", vol.unstage),
                     ("ControllerUnpublishVolume", vol.controller_unpublish), ("DeleteVolume", vol.delete)):
        _retrying(step, fn)


def run_load(server: ServerProcess, work: Path, count: int) -> tuple[float, int]:
    with CsiClient(server.endpoint) as client:
        lifecycle(client, work, -1)  # warm up: imports, first mkfs, caches
        rss_before = _rss(server.pid)
        start = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            errors = [f for f in (pool.submit(lifecycle, client, work, i) for i in range(count))]
            failures = [str(f.exception()) for f in errors if f.exception() is not None]
        elapsed = time.monotonic() - start
        assert failures == [], f"{len(failures)} lifecycles failed, first: {failures[:3]}"
        return count / elapsed, _rss(server.pid) - rss_before


def test_load(rel_pool: Path, server_factory: ServerFactory) -> None:
    # Volumes round up to 1 GiB; they are sparse and 1 MiB of each is written, so overcommit the pool.
    server = server_factory("load", extra=("--overcommit-ratio", "4")).start()
    throughput, growth = run_load(server, rel_pool.parent, COUNT)
    print(f"\nload: {COUNT} lifecycles at concurrency {CONCURRENCY}: {throughput:.2f} lifecycles/s, "
          f"server RSS grew {growth / MiB:.1f} MiB, ABORTED retries {dict(ABORTED_RETRIES)}")
    assert growth <= 50 * MiB
    assert server.proc is not None and server.proc.poll() is None
    assert all_clean(rel_pool) == []
