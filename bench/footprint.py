"""Footprint: time to a ready socket and resident memory of `elastivol serve`, per role and provider,
beside the Go hostpathplugin (the Kubernetes project's reference driver).

Each server is started on its own (nothing else is starting at the same time); "ready" is the time
from spawning the process to the first Probe answered ready=true on its unix socket, the median of
a few starts. RSS (VmRSS of /proc/PID/status) is read once ready and again after N lifecycles, where
a lifecycle is what the role serves in one volume's life:

- block, local: CreateVolume, ControllerPublishVolume (controller) → NodeStageVolume (real loop
  device, mkfs.ext4, mount), NodePublishVolume (bind), NodeUnpublishVolume, NodeUnstageVolume (node)
  → ControllerUnpublishVolume, DeleteVolume (controller). The controller and the node are two processes.
- file, local: CreateVolume (an access point; controller) → NodePublishVolume, NodeGetVolumeStats,
  NodeUnpublishVolume (node) → DeleteVolume.
- block controller, aws (moto in server mode): CreateVolume, ControllerPublishVolume,
  ControllerUnpublishVolume, DeleteVolume.
- hostpathplugin (controller and node in one process): CreateVolume, NodeStageVolume,
  NodePublishVolume (bind), NodeUnpublishVolume, NodeUnstageVolume, DeleteVolume.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.core import Result, Target
from bench.env import cleanup
from elastivol.client import CsiClient, volume_capability
from elastivol.csi import csi_pb2, csi_pb2_grpc

LIFECYCLES = {"smoke": 3, "quick": 10, "full": 100}
STARTS = {"smoke": 1, "quick": 3, "full": 5}
NODE = "fp-node"
ZONE = "zone-a"
MiB = 1 << 20
HOSTPATH_ENV = "HOSTPATHPLUGIN"

# (row label, what the target applies to): the targets.
NODE_ROW = "block node (local)"
AWS_ROW = "block controller (aws)"
HOSTPATH_ROW = "hostpathplugin (Go, all-in-one)"
TARGET_NODE_RSS_MIB = 40.0
TARGET_NODE_READY_MS = 150.0
TARGET_AWS_RSS_MIB = 60.0


def hostpath_binary() -> Path | None:
    """``$HOSTPATHPLUGIN`` or ``../shared/tools/hostpathplugin`` beside the repository."""
    given = os.environ.get(HOSTPATH_ENV)
    candidates = [Path(given)] if given else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "tools" / "hostpathplugin")
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of /proc/PID/status: VmRSS (all resident pages), RssAnon (private memory;
    the rest of VmRSS is mapped files: the interpreter, shared libraries, bytecode)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


@dataclass
class Server:
    name: str
    argv: list[str]
    socket: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def environment(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        # An installed elastivol has its bytecode compiled (pip does it; the image sets
        # PYTHONDONTWRITEBYTECODE only afterwards). A source checkout run with that variable set
        # would compile every module at every start, which no deployment does: keep the bytecode
        # in the work directory instead, written by the warm-up start.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.log.parent / "pycache")
        return env

    def start(self, timeout: float = 60.0) -> float:
        """Spawn, wait for the first ready Probe; the seconds that took."""
        self.socket.unlink(missing_ok=True)
        log = open(self.log, "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     env=self.environment(), start_new_session=True)
        log.close()
        while True:
            # A fresh channel per try: a channel that failed to connect backs off for a second,
            # which would be measured as start-up time.
            if self.socket.exists():
                with grpc.insecure_channel(self.endpoint) as channel:
                    try:
                        reply = csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=1)
                        # An unset ``ready`` means ready (the spec; hostpathplugin leaves it unset).
                        if not reply.HasField("ready") or reply.ready.value:
                            return time.perf_counter() - t0
                    except grpc.RpcError:
                        pass
            if self.proc.poll() is not None or time.perf_counter() - t0 > timeout:
                tail = self.log.read_text(errors="replace").splitlines()[-10:]
                raise RuntimeError(f"{self.name} did not become ready; log:\n" + "\n".join(tail))
            time.sleep(0.002)

    def rss(self, field: str = "VmRSS") -> int:
        assert self.proc is not None
        return rss_bytes(self.proc.pid, field)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def elastivol_server(work: Path, name: str, args: list[str], env: dict[str, str] | None = None) -> Server:
    socket = work / f"{name}.sock"
    argv = [sys.executable, "-m", "elastivol", "serve", "--endpoint", f"unix://{socket}", "--log-level", "warning",
            *args]
    return Server(name, argv, socket, work / f"{name}.log", env or {})


def ready_times(server: Server, starts: int) -> float:
    """Median seconds to ready over ``starts`` starts, after one warm-up start (bytecode, page
    cache); the server is left running after the last."""
    server.start()
    server.stop()
    times = []
    for i in range(starts):
        times.append(server.start())
        if i < starts - 1:
            server.stop()
    return statistics.median(times)


@dataclass
class Row:
    role: str
    lifecycle: str
    ready_s: float = float("nan")
    rss_ready: int = 0
    rss_after: int = 0
    anon_after: int = 0


def measure(rows: list[Row], row: Row, servers: list[Server], starts: int, lifecycle: Callable[[int], None],
            n: int) -> None:
    """Start ``servers`` in order (each measured), run ``n`` lifecycles, and fill one row per server."""
    per: list[Row] = []
    for s in servers:
        r = Row(s.name, row.lifecycle)
        r.ready_s = ready_times(s, starts)
        r.rss_ready = s.rss()
        per.append(r)
    for i in range(n):
        lifecycle(i)
    for s, r in zip(servers, per, strict=True):
        r.rss_after = s.rss()
        r.anon_after = s.rss("RssAnon")
        rows.append(r)


def _node_stay(client: CsiClient, vid: str, stage: str, target: str, cap: csi_pb2.VolumeCapability,
               publish_context: dict[str, str] | None = None) -> None:
    """A pod's stay on a node: NodeStage, NodePublish, NodeUnpublish, NodeUnstage of one volume."""
    client.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
        volume_id=vid, staging_target_path=stage, volume_capability=cap, publish_context=publish_context),
        timeout=60)
    client.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
        volume_id=vid, staging_target_path=stage, target_path=target, volume_capability=cap), timeout=60)
    client.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(volume_id=vid, target_path=target), timeout=60)
    client.node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=stage),
                                  timeout=60)


def _block_local(work: Path, pool: Path, n: int, starts: int, rows: list[Row]) -> None:
    kubelet = work / "kubelet"
    ctl = elastivol_server(work, "block controller (local)",
                           ["--driver", "block", "--mode", "controller", "--pool", str(pool), "--zone", ZONE])
    node = elastivol_server(work, NODE_ROW, ["--driver", "block", "--mode", "node", "--pool", str(pool),
                                             "--node-id", NODE, "--zone", ZONE, "--allowed-root", str(work)])
    cap = volume_capability()
    try:
        def cycle(i: int) -> None:
            with CsiClient(ctl.endpoint) as c, CsiClient(node.endpoint) as nd:
                vid = c.create_volume(f"fp-{i}-{uuid.uuid4().hex[:6]}", 1 << 30, zone=ZONE).volume_id
                ctx = c.controller.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
                    volume_id=vid, node_id=NODE, volume_capability=cap), timeout=60).publish_context
                stage, target = str(kubelet / "stage" / vid), str(kubelet / "pods" / vid / "mount")
                _node_stay(nd, vid, stage, target, cap, dict(ctx))
                c.controller.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
                    volume_id=vid, node_id=NODE), timeout=60)
                c.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), timeout=60)

        measure(rows, Row("", "create, attach, stage (mkfs.ext4), publish, unpublish, unstage, detach, delete"),
                [node, ctl], starts, cycle, n)  # the node first: it registers itself, for attach
    finally:
        ctl.stop()
        node.stop()


def _file_local(work: Path, pool: Path, n: int, starts: int, rows: list[Row]) -> None:
    from elastivol.providers.local.file.registry import FileRegistry
    from elastivol.providers.local.pool import Pool

    root = work / "shared"
    root.mkdir()
    fs = FileRegistry(Pool(pool)).register("footprint", str(root))
    ctl = elastivol_server(work, "file controller (local)",
                           ["--driver", "file", "--mode", "controller", "--pool", str(pool), "--zone", ZONE])
    node = elastivol_server(work, "file node (local)", ["--driver", "file", "--mode", "node", "--pool", str(pool),
                                                        "--node-id", NODE, "--zone", ZONE,
                                                        "--allowed-root", str(work)])
    cap = volume_capability(mode="MULTI_NODE_MULTI_WRITER")
    params = {"provisioningMode": "efs-ap", "fileSystemId": fs.id, "directoryPerms": "700"}
    try:
        def cycle(i: int) -> None:
            with CsiClient(ctl.endpoint) as c, CsiClient(node.endpoint) as nd:
                vid = c.create_volume(f"fp-{i}-{uuid.uuid4().hex[:6]}", 1 << 30, parameters=params, cap=cap).volume_id
                target = str(work / "kubelet" / "pods" / f"p{i}" / "mount")
                nd.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
                    volume_id=vid, target_path=target, volume_capability=cap), timeout=60)
                nd.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=target),
                                           timeout=60)
                nd.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(volume_id=vid, target_path=target),
                                            timeout=60)
                c.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), timeout=60)

        measure(rows, Row("", "create (access point), publish (bind), stats, unpublish, delete"),
                [node, ctl], starts, cycle, n)
    finally:
        ctl.stop()
        node.stop()


def _aws(work: Path, n: int, starts: int, rows: list[Row]) -> str:
    """The block controller on moto; '' or why it was not measured."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        return "block controller (aws) not measured: moto (server mode) is not installed: pip install 'elastivol[bench]'"
    import boto3

    from tests.aws.conftest import FAST
    from tests.aws.support import REGION, ZONE_A, start_moto, stop

    moto = start_moto(work)
    env = {"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(work / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(work / "none"), **FAST}
    ctl = elastivol_server(work, AWS_ROW, ["--driver", "block", "--mode", "controller", "--provider", "aws",
                                           "--zones", ZONE_A, "--cluster-id", "footprint"], env)
    try:
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto.url, aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        instance = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="m5.large",
                                     Placement={"AvailabilityZone": ZONE_A})["Instances"][0]["InstanceId"]
        cap = volume_capability()

        def cycle(i: int) -> None:
            with CsiClient(ctl.endpoint) as c:
                vid = c.create_volume(f"fp-{i}-{uuid.uuid4().hex[:6]}", 1 << 30, zone=ZONE_A,
                                      parameters={"type": "gp3"}).volume_id
                c.controller.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
                    volume_id=vid, node_id=instance, volume_capability=cap), timeout=120)
                c.controller.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
                    volume_id=vid, node_id=instance), timeout=120)
                c.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), timeout=120)

        measure(rows, Row("", "create, attach, detach, delete (EBS on moto)"), [ctl], starts, cycle, n)
    finally:
        ctl.stop()
        stop(moto.proc)
    return ""


def _hostpath(work: Path, n: int, starts: int, rows: list[Row]) -> str:
    binary = hostpath_binary()
    if binary is None:
        return f"hostpathplugin not found (../shared/tools/hostpathplugin or ${HOSTPATH_ENV}): no ratios"
    state = work / "hostpath-state"
    socket = work / "hostpath.sock"
    server = Server(HOSTPATH_ROW, [str(binary), "--endpoint", f"unix://{socket}", "--nodeid", NODE,
                                   "--drivername", "hostpath.csi.k8s.io", "--statedir", str(state)],
                    socket, work / "hostpath.log")
    cap = volume_capability()
    (work / "hp-pods").mkdir()  # hostpathplugin makes the target, not its parent (kubelet does)
    (work / "hp-stage").mkdir()
    try:
        def cycle(i: int) -> None:
            with CsiClient(server.endpoint) as c:
                vid = c.create_volume(f"fp-{i}-{uuid.uuid4().hex[:6]}", 1 << 30).volume_id
                stage, target = str(work / "hp-stage" / f"p{i}"), str(work / "hp-pods" / f"p{i}")
                _node_stay(c, vid, stage, target, cap)
                c.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), timeout=60)

        measure(rows, Row("", "create, stage, publish (bind), unpublish, unstage, delete"), [server], starts, cycle, n)
    finally:
        server.stop()
    return ""


def run(profile: str) -> Result:
    from elastivol.providers.local.pool import init_pool

    n, starts = LIFECYCLES[profile], STARTS[profile]
    r = Result("footprint", f"Footprint: ready time and RSS per role, after {n} lifecycles, beside hostpathplugin",
               profile)
    r.columns = ["role", "ready, ms", "ready / hostpath", "RSS ready, MiB", f"RSS after {n}, MiB", "RSS / hostpath",
                 "of which private, MiB", "lifecycle"]
    work = Path(tempfile.mkdtemp(prefix="elastivol-bench-footprint-", dir="/var/tmp"))
    rows: list[Row] = []
    notes: list[str] = []
    try:
        pool = work / "pool"
        init_pool(pool, 8 << 30, "xfs")
        notes.append(_hostpath(work, n, starts, rows))
        _block_local(work, pool, n, starts, rows)
        _file_local(work, pool, n, starts, rows)
        notes.append(_aws(work, n, starts, rows))
    finally:
        problems = cleanup(work)
        shutil.rmtree(work, ignore_errors=True)
    hp = next((x for x in rows if x.role == HOSTPATH_ROW), None)
    for x in rows:
        ready_ratio = x.ready_s / hp.ready_s if hp else float("nan")
        rss_ratio = x.rss_after / hp.rss_after if hp else float("nan")
        r.rows.append([x.role, x.ready_s * 1000, ready_ratio, x.rss_ready / MiB, x.rss_after / MiB, rss_ratio,
                       x.anon_after / MiB, x.lifecycle])
    r.figures = {x.role: {"ready_ms": round(x.ready_s * 1000, 1), "rss_ready_mib": round(x.rss_ready / MiB, 1),
                          "rss_after_mib": round(x.rss_after / MiB, 1), "rss_anon_after_mib": round(x.anon_after / MiB, 1)}
                for x in rows}
    r.figures["lifecycles"] = n
    r.figures["starts"] = starts
    by_role = {x.role: x for x in rows}
    if NODE_ROW in by_role:
        node = by_role[NODE_ROW]
        r.targets.append(Target(f"{NODE_ROW}: RSS after {n} lifecycles, MiB", node.rss_after / MiB, "<=",
                                TARGET_NODE_RSS_MIB))
        r.targets.append(Target(f"{NODE_ROW}: ready, ms", node.ready_s * 1000, "<=", TARGET_NODE_READY_MS))
    if AWS_ROW in by_role:
        r.targets.append(Target(f"{AWS_ROW}: RSS after {n} lifecycles, MiB", by_role[AWS_ROW].rss_after / MiB,
                                "<=", TARGET_AWS_RSS_MIB))
    r.notes += [x for x in notes if x]
    r.notes.append(f"ready: spawn to the first Probe answered ready=true, median of {starts} start(s) after a warm-up "
                   "start (bytecode compiled, as in an installed image); RSS: VmRSS "
                   "of /proc/PID/status; each server started alone, then all of a group serve the lifecycles")
    r.notes += [f"cleanup: {p}" for p in problems]
    return r
