"""Test support for the aws provider: a moto server, a tiny IMDS, a fake NVMe device tree.

These fakes stand in for what cannot exist here (EC2's API, the instance metadata service, an
NVMe EBS device); they are kept small and do nothing clever.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client.parser import text_string_to_metric_families

from elastivol.client import CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.node import loop, mount
from elastivol.process import ServerProcess
from elastivol.providers.aws.awsmetrics import AwsMetrics
from elastivol.providers.aws.clients import AwsClients
from elastivol.providers.aws.node.nvme import BY_ID_PREFIX, serial_of
from elastivol.providers.aws.settings import AwsSettings
from tests.support import SERVE_MODULE, serve_env
from tests.support.aws_faults import FaultConfig, FaultLayer

REGION = "us-east-1"
ZONE_A, ZONE_B = "us-east-1a", "us-east-1b"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- moto ------------------------------------------------------------------------------------------
@dataclass
class Request:
    service: str
    action: str
    params: dict[str, Any]
    key: str  # the access key id that signed it ("fault-layer" for the fault layer's own checks)


@dataclass
class Moto:
    url: str
    recording: Path
    proc: subprocess.Popen[bytes]

    def mark(self) -> int:
        return self.recording.stat().st_size if self.recording.exists() else 0

    def requests(self, since: int = 0) -> list[Request]:
        """What moto received since ``mark()``: the truth about what was sent to "AWS"."""
        if not self.recording.exists():
            return []
        with open(self.recording, "rb") as fh:
            fh.seek(since)
            lines = fh.read().decode().splitlines()
        return [r for r in (_request(json.loads(line)) for line in lines if line.strip()) if r is not None]

    def counts(self, since: int = 0) -> Counter[str]:
        return Counter(r.action for r in self.requests(since) if r.key != "fault-layer")


def _request(entry: dict[str, Any]) -> Request | None:
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode(errors="replace")
    auth = entry.get("headers", {}).get("Authorization", "")
    key = auth.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in auth else ""
    path = urlsplit(entry.get("url", "")).path
    if path.startswith("/moto-api"):
        return None
    if body.startswith("Action=") or "&Action=" in body:
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        service = "sts" if form.get("Version") == "2011-06-15" else "ec2"
        return Request(service, form.get("Action", ""), form, key)
    if path.startswith("/2015-02-01/"):
        params = json.loads(body) if body.strip().startswith("{") else {}
        resource = path.split("/")[2]
        action = {("POST", "access-points"): "CreateAccessPoint", ("GET", "access-points"): "DescribeAccessPoints",
                  ("DELETE", "access-points"): "DeleteAccessPoint", ("POST", "file-systems"): "CreateFileSystem",
                  ("GET", "file-systems"): "DescribeFileSystems", ("POST", "resource-tags"): "TagResource"}.get(
            (entry.get("method", ""), resource), f"{entry.get('method')} {resource}")
        return Request("efs", action, params, key)
    return None


def start_moto(work: Path) -> Moto:
    port = free_port()
    recording = work / "moto_recording.jsonl"
    env = {**os.environ, "MOTO_EC2_LOAD_DEFAULT_AMIS": "false", "MOTO_ENABLE_RECORDING": "True",
           "MOTO_RECORDER_FILEPATH": str(recording)}
    log = open(work / "moto.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start; see {work / 'moto.log'}") from None
            time.sleep(0.1)
    return Moto(url, recording, proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- IMDS ------------------------------------------------------------------------------------------
@dataclass
class FakeImds:
    """IMDSv2 as EC2 serves it: a PUT for a token, then GETs that must carry it."""

    instance_id: str = "i-0123456789abcdef0"
    zone: str = ZONE_A
    instance_type: str = "m5.large"
    answer_put: bool = True  # False: drop the token request, as a hop limit of 1 does in a pod
    gets_without_token: int = 0
    server: ThreadingHTTPServer | None = None
    tokens: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeImds:
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_PUT(self) -> None:
                if self.path != "/latest/api/token" or not imds.answer_put:
                    time.sleep(1)  # dropped: the client must give up on its own timeout
                    return
                if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    self.send_response(400)
                    self.end_headers()
                    return
                token = f"token-{len(imds.tokens)}"
                imds.tokens.add(token)
                self._send(token)

            def do_GET(self) -> None:
                if self.headers.get("X-aws-ec2-metadata-token") not in imds.tokens:
                    imds.gets_without_token += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                if self.path == "/latest/dynamic/instance-identity/document":
                    self._send(json.dumps({"instanceId": imds.instance_id, "availabilityZone": imds.zone,
                                           "instanceType": imds.instance_type, "region": imds.zone[:-1]}))
                else:
                    self.send_response(404)
                    self.end_headers()

            def _send(self, text: str) -> None:
                data = text.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# -- the fake NVMe device tree -------------------------------------------------------------------
class Disks:
    """Plays EBS and udev for the node: a sparse file and a loop device per attached volume, with
    the links and the serial a Nitro instance shows. Snapshots and restores copy the files, so data
    written before a snapshot is there after a restore."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.dev = work / "dev"
        self.sys = work / "sys"
        self.store = work / "ebs"
        for d in (self.dev / "disk" / "by-id", self.sys / "block", self.store):
            d.mkdir(parents=True, exist_ok=True)
        self.loops: dict[str, str] = {}
        self.next = 1

    def image(self, volume_id: str) -> Path:
        return self.store / f"{volume_id}.img"

    def ensure(self, volume_id: str, size_gib: int = 1) -> Path:
        path = self.image(volume_id)
        if not path.exists():
            with open(path, "wb") as fh:
                fh.truncate(size_gib << 30)
        return path

    def attach(self, volume_id: str, serial_for: str | None = None, size_gib: int = 1) -> str:
        """The volume appears on the node as /dev/nvmeNn1 (serial: ``serial_for``, normally itself)."""
        device = loop.attach(self.ensure(volume_id, size_gib), direct_io=False)
        name = f"nvme{self.next}n1"
        self.next += 1
        (self.dev / name).symlink_to(device.path)
        (self.sys / "block" / name / "device").mkdir(parents=True)
        (self.sys / "block" / name / "device" / "serial").write_text(serial_of(serial_for or volume_id) + "\n")
        (self.dev / "disk" / "by-id" / (BY_ID_PREFIX + serial_of(volume_id))).symlink_to(f"../../{name}")
        self.loops[volume_id] = device.path
        return name

    def detach(self, volume_id: str) -> None:
        link = self.dev / "disk" / "by-id" / (BY_ID_PREFIX + serial_of(volume_id))
        if link.is_symlink():
            name = os.readlink(link).rsplit("/", 1)[-1]
            link.unlink()
            (self.dev / name).unlink(missing_ok=True)
            shutil.rmtree(self.sys / "block" / name, ignore_errors=True)
        path = self.loops.pop(volume_id, None)
        if path is not None:
            loop.detach(path)

    def grow(self, volume_id: str, size_gib: int) -> None:
        with open(self.image(volume_id), "r+b") as fh:
            fh.truncate(size_gib << 30)
        if volume_id in self.loops:
            loop.refresh_capacity(self.loops[volume_id])

    def snapshot(self, snapshot_id: str, volume_id: str) -> None:
        subprocess.run(["cp", "--sparse=always", str(self.image(volume_id)), str(self.store / f"{snapshot_id}.img")],
                       check=True, timeout=60)

    def restore(self, volume_id: str, snapshot_id: str) -> None:
        subprocess.run(["cp", "--sparse=always", str(self.store / f"{snapshot_id}.img"), str(self.image(volume_id))],
                       check=True, timeout=60)

    def cleanup(self) -> None:
        """After a failed test: unmount what still uses our loop devices, then detach them."""
        devices = set(self.loops.values())
        for m in sorted(mount.mounts(), key=lambda m: len(m.target), reverse=True):
            if m.source in devices:
                mount.unmount_all(m.target)
        for volume_id in list(self.loops):
            try:
                self.detach(volume_id)
            except Exception as exc:  # keep cleaning the rest
                print(f"could not detach {volume_id}: {exc}")


# -- in-process clients ----------------------------------------------------------------------------
def make_clients(config: FaultConfig | None = None, **settings: Any) -> tuple[AwsClients, FaultLayer | None, AwsMetrics]:
    """Clients as the provider makes them, with their own metrics and, when given, a fault layer."""
    faults = FaultLayer(config) if config is not None else None
    metrics = AwsMetrics(None)  # unregistered: one set per test, no clash in a shared registry
    values = {**AwsSettings.from_env().__dict__, **settings}
    return AwsClients(AwsSettings(**values), metrics, faults, REGION), faults, metrics


# -- a server process ----------------------------------------------------------------------------
@dataclass
class AwsServer:
    process: ServerProcess
    metrics_port: int

    @property
    def endpoint(self) -> str:
        return self.process.endpoint

    def client(self) -> CsiClient:
        return CsiClient(self.endpoint, timeout=120)

    def metrics(self) -> dict[tuple[str, str], float]:
        """Counters by (metric, operation) from the server's Prometheus endpoint."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("elastivol_aws_api_") and sample.name.endswith("_total"):
                    key = (sample.name, sample.labels.get("operation", ""))
                    out[key] = out.get(key, 0.0) + sample.value
        return out

    def calls(self, kind: str = "calls") -> Counter[str]:
        name = f"elastivol_aws_api_{kind}_total"
        return Counter({op: int(v) for (metric, op), v in self.metrics().items() if metric == name})

    def stop(self) -> None:
        self.process.stop()


def sub_work(aws_work: Path, prefix: str) -> Path:
    """A new directory of one test module's own under the session's work dir."""
    path = aws_work / f"{prefix}-{uuid.uuid4().hex[:6]}"
    path.mkdir()
    return path


def imds_env(imds: FakeImds) -> dict[str, str]:
    """What points a child server's boto3 at the fake instance metadata service (the suite turns it off)."""
    return {"AWS_EC2_METADATA_DISABLED": "false", "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url}


def start_server(
    work: Path,
    *,
    cluster: str,
    driver: str = "block",
    node_id: str = "i-00000000000000000",
    faults: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    wait: bool = True,
    name: str = "",
) -> AwsServer:
    name = name or f"{driver}-{uuid.uuid4().hex[:6]}"
    port = free_port()
    args = [
        "--driver", driver, "--mode", "all", "--provider", "aws", "--cluster-id", cluster,
        "--zone", ZONE_A, "--zones", f"{ZONE_A},{ZONE_B}", "--node-id", node_id,
        "--allowed-root", str(work), "--metrics-address", f"127.0.0.1:{port}", "--log-format", "json",
    ]
    child_env = dict(env or {})
    if faults is not None:
        child_env["ELASTIVOL_AWS_FAULTS"] = json.dumps(faults)
    # Through the support package's entry point: it puts the fault layer (and an EFS stand-in) in.
    process = ServerProcess(args, f"unix://{work}/{name}.sock", work / "logs" / f"{name}.log", serve_env(child_env),
                            module=SERVE_MODULE)
    process.start(wait=wait, timeout=60)
    return AwsServer(process, port)


def lifecycle_steps(client: CsiClient, ids: dict[str, str], where: dict[str, str]) -> dict[str, Callable[[str], None]]:
    """The controller's part of a volume lifecycle, one function per phase, each taking a CSI name:
    create (records the id in ``ids``), attach and detach (to the instance ``where`` names), delete."""

    def create(name: str) -> None:
        ids[name] = client.create_volume(name, 1 << 30, zone=ZONE_A, parameters={"type": "gp3"}).volume_id

    def attach(name: str) -> None:
        client.controller.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id=ids[name], node_id=where[name], volume_capability=volume_capability()), timeout=300)

    def detach(name: str) -> None:
        client.controller.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
            volume_id=ids[name], node_id=where[name]), timeout=300)

    def delete(name: str) -> None:
        client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=ids[name]), timeout=300)

    return {"create": create, "attach": attach, "detach": detach, "delete": delete}
