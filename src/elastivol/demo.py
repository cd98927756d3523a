"""`elastivol demo`: the block lifecycle end to end, through the real socket, step by step.

It is also the smallest complete example of what a CO does with the driver: create,
attach, stage (format, mount), publish (bind), write, then the whole undo, and a second
stage/publish round that must find the same data.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from elastivol.client import BLOCK, MOUNT, CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.node import loop, mount
from elastivol.process import ServerProcess, serve_args
from elastivol.providers.local.pool import init_pool
from elastivol.units import human

NODE = "demo-node-a"
ZONE = "zone-a"


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class Row:
    volume: str
    zone: str
    node: str
    device: str
    mountpoint: str
    fs: str
    size: str
    checksum_ok: bool


class Recorder:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.steps: list[Step] = []

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, str]]:
        detail: dict[str, str] = {}
        start = time.perf_counter()
        try:
            yield detail
        except Exception as exc:
            self.steps.append(Step(name, False, time.perf_counter() - start, str(exc)[:200]))
            self.console.print(f"  [red]✗[/red] {name}: {exc}")
            raise
        took = time.perf_counter() - start
        self.steps.append(Step(name, True, took, detail.get("note", "")))
        self.console.print(f"  [green]✓[/green] {name} [dim]({took * 1000:.0f} ms){' — ' + detail['note'] if detail.get('note') else ''}[/dim]")


def _write_data(path: Path, block: bool) -> str:
    data = os.urandom(4 << 20)
    if block:
        with open(path, "r+b") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    else:
        with open(path / "out.txt", "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return hashlib.sha256(data).hexdigest()


def _read_sum(path: Path, block: bool) -> str:
    if block:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read(4 << 20)).hexdigest()
    return hashlib.sha256((path / "out.txt").read_bytes()).hexdigest()


def lifecycle(client: CsiClient, work: Path, pool_dir: Path, kind: str, rec: Recorder) -> Row:
    """One volume through every CSI step. ``kind`` is ext4, xfs or block."""
    block = kind == "block"
    cap = volume_capability(BLOCK if block else MOUNT, fs_type="" if block else kind)
    staging = work / "kubelet" / "plugins" / "staging" / kind
    target = work / "kubelet" / "pods" / "demo" / kind / ("dev" if block else "mount")
    with rec.step(f"{kind}: CreateVolume 4Gi gp3") as d:
        vol = client.create_volume(f"demo-{kind}", 4 << 30, parameters={"type": "gp3"}, cap=cap, zone=ZONE)
        d["note"] = vol.volume_id
    vid = vol.volume_id
    with rec.step(f"{kind}: ControllerPublishVolume → {NODE}"):
        pub = client.controller.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id=vid, node_id=NODE, volume_capability=cap), timeout=60)

    def stage_and_publish(round_: int) -> None:
        with rec.step(f"{kind}: NodeStageVolume" + (" (format)" if round_ == 1 and not block else "")):
            client.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
                volume_id=vid, staging_target_path=str(staging), volume_capability=cap,
                publish_context=dict(pub.publish_context), volume_context=dict(vol.volume_context)), timeout=120)
        with rec.step(f"{kind}: NodePublishVolume"):
            client.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
                volume_id=vid, staging_target_path=str(staging), target_path=str(target), volume_capability=cap,
                publish_context=dict(pub.publish_context), volume_context=dict(vol.volume_context)), timeout=60)

    def unpublish_and_unstage() -> None:
        with rec.step(f"{kind}: NodeUnpublishVolume"):
            client.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(volume_id=vid, target_path=str(target)), timeout=60)
        with rec.step(f"{kind}: NodeUnstageVolume"):
            client.node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=str(staging)), timeout=60)

    stage_and_publish(1)
    with rec.step(f"{kind}: write 4 MiB and fsync") as d:
        checksum = _write_data(target, block)
        d["note"] = f"sha256 {checksum[:12]}…"
    devices = loop.find(str(pool_dir / "images" / f"{vid}.img"))
    device = devices[0].path if devices else "?"
    unpublish_and_unstage()
    stage_and_publish(2)
    with rec.step(f"{kind}: same checksum after unstage/restage") as d:
        again = _read_sum(target, block)
        if again != checksum:
            raise RuntimeError(f"checksum changed: {checksum[:12]} → {again[:12]}")
        d["note"] = "data intact"
    row = Row(vid, ZONE, NODE, device, str(staging if not block else target), kind, human(vol.capacity_bytes), True)
    unpublish_and_unstage()
    with rec.step(f"{kind}: ControllerUnpublishVolume"):
        client.controller.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(volume_id=vid, node_id=NODE), timeout=60)
    with rec.step(f"{kind}: DeleteVolume"):
        client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), timeout=60)
    return row


def leftovers(pool_dir: Path, work: Path) -> list[str]:
    found = [f"loop device {d.path} → {d.backing_file}" for d in (loop.under(pool_dir) if pool_dir.is_dir() else [])]
    found += [f"mount {m.target}" for m in mount.mounts()
              if m.target.startswith(str(work) + "/") and m.target != str(pool_dir)]
    return found


def teardown_pool(pool_dir: Path) -> None:
    mount.unmount(str(pool_dir))
    image = pool_dir.with_name(pool_dir.name + ".img")
    loop.detach_all(str(image))


def run_demo(work_dir: Path | None, *, keep: bool, console: Console,
             on_ready: Callable[[Any], None] | None = None) -> int:
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="elastivol-demo-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    pool_dir = work / "pool"
    rec = Recorder(console)
    rows: list[Row] = []
    server: ServerProcess | None = None
    console.rule("[bold]elastivol demo[/bold]: block volumes through the CSI socket")
    console.print(f"work directory: {work}")
    failed = False
    try:
        with rec.step("pool init (xfs image, reflink)") as d:
            cfg = init_pool(pool_dir, 8 << 30, None)
            d["note"] = f"{cfg.fs_type}, reflink={'yes' if cfg.reflink else 'no'}"
        endpoint = f"unix://{work}/csi.sock"
        server = ServerProcess(
            serve_args(pool=pool_dir, node_id=NODE, zone=ZONE, allowed_roots=[work]),
            endpoint, work / "server.log",
        )
        with rec.step("start `elastivol serve --driver block --mode all`"):
            server.start()
        with CsiClient(endpoint) as client:
            info = client.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=10)
            console.print(f"  plugin {info.name} {info.vendor_version}")
            for kind in ("ext4", "xfs", "block"):
                try:
                    rows.append(lifecycle(client, work, pool_dir, kind, rec))
                except Exception:
                    failed = True
            with rec.step("RWX on a block volume is refused with the EBS message") as d:
                import grpc

                try:
                    client.create_volume("demo-rwx", 1 << 30, cap=volume_capability(mode="MULTI_NODE_MULTI_WRITER"))
                except grpc.RpcError as exc:
                    d["note"] = f"{exc.code().name}: {exc.details()}"
                else:
                    raise RuntimeError("RWX was accepted")
    except Exception as exc:
        failed = True
        console.print(f"[red]demo failed:[/red] {exc}")
        if server is not None:
            console.print(server.log_tail())
    finally:
        if server is not None:
            with rec.step("stop the server (SIGTERM)") as d:
                code = server.stop()
                d["note"] = f"exit code {code}"
        with rec.step("nothing left behind (loop devices, mounts)") as d:
            left = leftovers(pool_dir, work)
            if left:
                failed = True
                d["note"] = "; ".join(left)
            else:
                d["note"] = "no loop device or mount of the pool remains"
        if not keep:
            teardown_pool(pool_dir)
            shutil.rmtree(work, ignore_errors=True)

    table = Table(title="volumes the demo went through")
    for col in ("volume", "zone", "node", "loop device", "mount point", "filesystem", "size", "data"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.volume, r.zone, r.node, r.device, r.mountpoint, r.fs, r.size, "intact" if r.checksum_ok else "LOST")
    console.print(table)
    summary = Table(title="steps")
    summary.add_column("step")
    summary.add_column("result")
    summary.add_column("ms", justify="right")
    for s in rec.steps:
        summary.add_row(s.name, "[green]pass[/green]" if s.ok else f"[red]FAIL[/red] {s.detail}", f"{s.seconds * 1000:.0f}")
    console.print(summary)
    failed = failed or any(not s.ok for s in rec.steps)
    console.print("[bold red]demo failed[/bold red]" if failed else "[bold green]demo passed[/bold green]")
    return 1 if failed else 0
