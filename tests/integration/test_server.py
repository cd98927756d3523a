"""The server itself: socket handling, logs without secrets, metrics, Probe, SIGTERM."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from elastivol.client import CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.process import ServerProcess, serve_args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(pool_dir: Path, name: str, *extra: str) -> ServerProcess:
    work = pool_dir.parent
    return ServerProcess(
        serve_args(pool=pool_dir, node_id=f"node-{name}", zone="zone-a", allowed_roots=[work], extra=extra),
        f"unix://{work}/sock-{name}/csi.sock",
        work / "logs" / f"{name}.log",
    )


def test_socket_mode_and_stale_socket(pool_dir: Path) -> None:
    server = start(pool_dir, "sockmode")
    sock = Path(server.endpoint[len("unix://"):])
    sock.parent.mkdir(parents=True, exist_ok=True)
    # A stale socket left by a dead process: bound, never listened on.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()
    server.start()
    try:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o660
        # A second server on a live socket is refused, and says why.
        second = start(pool_dir, "sockmode")
        second.start(wait=False)
        assert second.proc is not None and second.proc.wait(30) != 0
        assert "already listening" in second.log_path.read_text()
    finally:
        assert server.stop() == 0
    assert not sock.exists(), "a clean shutdown removes its socket"


def test_world_writable_socket_dir_is_refused(pool_dir: Path) -> None:
    server = start(pool_dir, "unsafe")
    sock_dir = Path(server.endpoint[len("unix://"):]).parent
    sock_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(sock_dir, 0o777)
    server.start(wait=False)
    assert server.proc is not None and server.proc.wait(30) != 0
    assert "world-writable" in server.log_path.read_text()


def test_logs_carry_request_ids_and_never_secrets(pool_dir: Path) -> None:
    server = start(pool_dir, "logs", "--log-level", "debug").start()
    secret = "hunter2-very-secret-value"
    try:
        with CsiClient(server.endpoint) as client:
            req = csi_pb2.CreateVolumeRequest(
                name="log-secret", volume_capabilities=[volume_capability()], secrets={"password": secret},
                capacity_range=csi_pb2.CapacityRange(required_bytes=1 << 30))
            vid = client.controller.CreateVolume(req).volume.volume_id
            bad = csi_pb2.CreateVolumeRequest(
                name="log-secret-bad", volume_capabilities=[volume_capability()], secrets={"token": secret},
                parameters={"unknownKey": "x"})
            with pytest.raises(grpc.RpcError):
                client.controller.CreateVolume(bad)
            client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid, secrets={"k": secret}))
    finally:
        server.stop()
    text = server.log_path.read_text()
    assert secret not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    calls = [entry for entry in lines if entry.get("method") == "CreateVolume"]
    assert len(calls) == 2
    assert all(len(c["request_id"]) == 12 and c["duration_ms"] >= 0 for c in calls)
    assert {c["code"] for c in calls} == {"OK", "INVALID_ARGUMENT"}
    assert any("unknownKey" in c.get("error", "") for c in calls)
    assert any("***" in json.dumps(c.get("request", {})) for c in calls), "debug logs show redacted requests"


def test_metrics_count_calls_by_code(pool_dir: Path) -> None:
    port = free_port()
    server = start(pool_dir, "metrics", "--metrics-address", f"127.0.0.1:{port}").start()
    try:
        with CsiClient(server.endpoint) as client:
            client.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
            with pytest.raises(grpc.RpcError):
                client.controller.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id="vol-nope"))
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.stop()
    assert 'elastivol_csi_operations_total{code="OK",driver="block.csi.elastivol.io",method="GetPluginInfo"} 1.0' in body
    assert 'method="ControllerGetVolume"' in body and 'code="NOT_FOUND"' in body
    assert "elastivol_csi_operation_seconds_bucket" in body
    # With metrics served, the controller's own families are there too (they are not built without).
    assert "# HELP elastivol_group_snapshot_freeze_seconds " in body and "# HELP elastivol_pool_bytes " in body


def test_a_method_the_driver_does_not_offer_is_unimplemented(pool_dir: Path) -> None:
    server = start(pool_dir, "unimplemented").start()
    try:
        with CsiClient(server.endpoint) as client, pytest.raises(grpc.RpcError) as refused:
            client.controller.GetSnapshot(csi_pb2.GetSnapshotRequest(snapshot_id="snap-nope"), timeout=10)
    finally:
        server.stop()
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "csi.v1.Controller/GetSnapshot is not offered" in (refused.value.details() or "")


def test_probe_reports_an_unusable_pool(pool_dir: Path) -> None:
    server = start(pool_dir, "probe").start()
    marker = pool_dir / "pool.json"
    moved = pool_dir / "pool.json.away"
    try:
        with CsiClient(server.endpoint) as client:
            assert client.identity.Probe(csi_pb2.ProbeRequest()).ready.value
            marker.rename(moved)
            try:
                resp, call = client.identity.Probe.with_call(csi_pb2.ProbeRequest())
                assert resp.ready.value is False
                reason = dict(call.trailing_metadata())["elastivol-not-ready-reason"]
                assert "is gone" in reason
            finally:
                moved.rename(marker)
            assert client.identity.Probe(csi_pb2.ProbeRequest()).ready.value
    finally:
        server.stop()


def test_sigterm_finishes_in_flight_calls(pool_dir: Path) -> None:
    server = start(pool_dir, "sigterm")
    server.env["ELASTIVOL_PAUSE_AT"] = "create.after_image=1.5"
    server.start()
    before = set(os.listdir(pool_dir / "images"))
    result: dict[str, object] = {}
    with CsiClient(server.endpoint) as client:
        def create() -> None:
            try:
                result["vol"] = client.create_volume("sigterm-vol", 1 << 30)
            except grpc.RpcError as exc:
                result["err"] = exc

        t = threading.Thread(target=create)
        t.start()
        deadline = time.monotonic() + 20
        while set(os.listdir(pool_dir / "images")) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        code = server.stop()  # SIGTERM while the create is paused half-way
        t.join(30)
    assert code == 0
    assert "err" not in result, result.get("err")
    vol = result["vol"]
    assert isinstance(vol, csi_pb2.Volume)
    again = start(pool_dir, "sigterm2").start()
    try:
        with CsiClient(again.endpoint) as client:
            got = client.controller.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id=vol.volume_id))
            assert got.volume.volume_id == vol.volume_id
            client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id))
    finally:
        again.stop()
    assert not (pool_dir / "images" / f"{vol.volume_id}.img").exists()
