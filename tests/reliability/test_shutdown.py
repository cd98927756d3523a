"""SIGTERM, as the kubelet sends it to a node plugin being replaced: no new calls, in-flight work
finishes within the grace period, and the process never outlives it."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc

from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.node import mount
from elastivol.server import EXIT_WORK_ABANDONED
from tests.helpers import new_volume
from tests.reliability.conftest import NODE, ServerFactory


def _stage_in_background(vol, result: dict[str, object]) -> threading.Thread:  # type: ignore[no-untyped-def]
    def run() -> None:
        try:
            vol.stage()
            result["code"] = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            result["code"] = exc.code()
            result["details"] = exc.details()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_sigterm_lets_running_work_finish(server_factory: ServerFactory, rel_pool: Path) -> None:
    work = rel_pool.parent
    setup = server_factory("term-setup").start()
    with CsiClient(setup.endpoint) as c:
        vol = new_volume(c, work, "term-finish", node_id=NODE)
        vol.controller_publish()
    setup.stop()
    # mkfs is done, the mount is 1.5 s away when SIGTERM arrives.
    server = server_factory("term", env={"ELASTIVOL_PAUSE_AT": "stage.after_mkfs=1.5"},
                            extra=("--shutdown-grace", "10")).start()
    with CsiClient(server.endpoint) as c:
        vol.client = c
        result: dict[str, object] = {}
        t = _stage_in_background(vol, result)
        time.sleep(0.5)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        # No new calls once shutdown began.
        try:
            c.identity.Probe(csi_pb2.ProbeRequest(), timeout=2)
            refused = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            refused = exc.code()
        t.join(15)
        code = server.proc.wait(15)
    assert refused is not grpc.StatusCode.OK, "a call after SIGTERM must be refused"
    assert result.get("code") is grpc.StatusCode.OK, result
    assert code == 0
    assert mount.find_by_target(str(vol.staging)) is not None, "the stage that was running finished"
    again = server_factory("term-after").start()
    with CsiClient(again.endpoint) as c:
        vol.client = c
        vol.stage()  # idempotent: same mount, no second mkfs
        assert sum(1 for m in mount.mounts() if m.target == str(vol.staging)) == 1
        vol.unstage()
        vol.controller_unpublish()
        vol.delete()


def test_grace_period_ends_the_process_even_with_work_running(server_factory: ServerFactory,
                                                               rel_pool: Path) -> None:
    work = rel_pool.parent
    server = server_factory("term-late", env={"ELASTIVOL_PAUSE_AT": "stage.after_mkfs=20"},
                            extra=("--shutdown-grace", "1"))
    server.start()
    with CsiClient(server.endpoint) as c:
        vol = new_volume(c, work, "term-late", node_id=NODE)
        vol.controller_publish()
        result: dict[str, object] = {}
        _stage_in_background(vol, result)
        time.sleep(0.5)
        assert server.proc is not None
        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(15)
        took = time.monotonic() - start
    assert code == EXIT_WORK_ABANDONED
    assert took < 5, f"the process outlived its 1 s grace period by far: {took:.1f} s"
    log = server.log_path.read_text()
    assert "NodeStageVolume on" in log and "did not finish within the 1.0s grace period" in log
    # The next plugin repairs what was left: mkfs done, never mounted.
    again = server_factory("term-late-after").start()
    with CsiClient(again.endpoint) as c:
        vol.client = c
        vol.stage()
        assert mount.find_by_target(str(vol.staging)) is not None
        vol.unstage()
        vol.controller_unpublish()
        vol.delete()
