"""1. Lifecycle overhead: one block volume's whole lifecycle through the socket against the shell floor."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from bench import charts
from bench.core import Result, Target, median, p90
from bench.env import NODE, ZONE, served_pool
from elastivol.client import MOUNT, CsiClient, volume_capability
from elastivol.csi import csi_pb2

FLOOR = Path(__file__).resolve().parent / "floor_lifecycle.sh"
SIZE = 1 << 30
REPS = {"smoke": 2, "quick": 6, "full": 20}
MKFS_FLAGS = {
    "ext4": "mkfs.ext4 -F -q -E lazy_itable_init=1,lazy_journal_init=1,nodiscard",
    "xfs": "mkfs.xfs -f -q -K (mounted -o nouuid)",
}
DRIVER_STEPS = ("CreateVolume", "ControllerPublish", "NodeStage", "NodePublish",
                "NodeUnpublish", "NodeUnstage", "ControllerUnpublish", "DeleteVolume")


def driver_once(client: CsiClient, kubelet: Path, fs: str, i: int) -> tuple[float, dict[str, float]]:
    cap = volume_capability(MOUNT, fs_type=fs)
    staging = kubelet / "staging" / f"{fs}-{i}"
    target = kubelet / "pods" / f"{fs}-{i}" / "mount"
    steps: dict[str, float] = {}
    t0 = last = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        steps[name] = now - last
        last = now

    vol = client.create_volume(f"lc-{fs}-{i}", SIZE, parameters={"type": "gp3"}, cap=cap, zone=ZONE)
    vid = vol.volume_id
    mark("CreateVolume")
    pub = client.controller.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id=vid, node_id=NODE, volume_capability=cap), timeout=60)
    mark("ControllerPublish")
    client.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
        volume_id=vid, staging_target_path=str(staging), volume_capability=cap,
        publish_context=dict(pub.publish_context), volume_context=dict(vol.volume_context)), timeout=120)
    mark("NodeStage")
    client.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
        volume_id=vid, staging_target_path=str(staging), target_path=str(target), volume_capability=cap,
        publish_context=dict(pub.publish_context), volume_context=dict(vol.volume_context)), timeout=60)
    mark("NodePublish")
    client.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(volume_id=vid, target_path=str(target)),
                                    timeout=60)
    mark("NodeUnpublish")
    client.node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=str(staging)),
                                  timeout=60)
    mark("NodeUnstage")
    client.controller.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
        volume_id=vid, node_id=NODE), timeout=60)
    mark("ControllerUnpublish")
    client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), timeout=60)
    mark("DeleteVolume")
    return time.perf_counter() - t0, steps


def floor_once(floor_dir: Path, fs: str, i: int) -> tuple[float, dict[str, float]]:
    image = floor_dir / f"floor-{fs}-{i}.img"
    staging = floor_dir / "staging" / f"{fs}-{i}"
    target = floor_dir / "pods" / f"{fs}-{i}" / "mount"
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(FLOOR), str(image), str(staging), str(target), fs, str(SIZE)],
                          check=True, capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - t0
    steps: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        name, micros = line.split()
        if name != "total":
            steps[name] = int(micros) / 1e6
    return took, steps


def run(profile: str) -> Result:
    reps = REPS[profile]
    r = Result("lifecycle", "1. Lifecycle overhead: driver through the socket vs the shell floor", profile)
    r.columns = ["fs", "driver median ms", "driver p90 ms", "floor median ms", "floor p90 ms", "ratio (median)"]
    with served_pool("lifecycle", 8 << 30) as env:
        floor_dir = env.pool / "bench-floor"  # inside the same pool: same filesystem as the volume images
        floor_dir.mkdir()
        raw: dict[str, dict[str, list[float]]] = {}
        step_d: dict[str, dict[str, list[float]]] = {}
        step_f: dict[str, dict[str, list[float]]] = {}
        for fs in ("ext4", "xfs"):
            # One warm-up each (page cache, module loading), then A B A B interleaved.
            driver_once(env.client, env.kubelet, fs, -1)
            floor_once(floor_dir, fs, -1)
            d_t: list[float] = []
            f_t: list[float] = []
            sd: dict[str, list[float]] = {}
            sf: dict[str, list[float]] = {}
            for i in range(reps):
                t, s = driver_once(env.client, env.kubelet, fs, i)
                d_t.append(t)
                for k, v in s.items():
                    sd.setdefault(k, []).append(v)
                t, s = floor_once(floor_dir, fs, i)
                f_t.append(t)
                for k, v in s.items():
                    sf.setdefault(k, []).append(v)
            raw[fs] = {"driver": d_t, "floor": f_t}
            step_d[fs], step_f[fs] = sd, sf
            ratio = median(d_t) / median(f_t)
            r.rows.append([fs, median(d_t) * 1e3, p90(d_t) * 1e3, median(f_t) * 1e3, p90(f_t) * 1e3, ratio])
            r.targets.append(Target(f"{fs}: driver/floor (median)", ratio, "<=", 1.15, "x"))
        r.figures = {
            "repetitions": reps,
            "volume_size_bytes": SIZE,
            "mkfs_flags": MKFS_FLAGS,
            "seconds": raw,
            "driver_step_median_ms": {fs: {k: median(v) * 1e3 for k, v in s.items()} for fs, s in step_d.items()},
            "floor_step_median_ms": {fs: {k: median(v) * 1e3 for k, v in s.items()} for fs, s in step_f.items()},
        }
    for fs in ("ext4", "xfs"):
        d = r.figures["driver_step_median_ms"][fs]
        f = r.figures["floor_step_median_ms"][fs]
        r.notes.append(f"{fs} driver steps (median ms): " + ", ".join(f"{k} {v:.1f}" for k, v in d.items()))
        r.notes.append(f"{fs} floor steps (median ms): " + ", ".join(f"{k} {v:.1f}" for k, v in f.items()))
    r.notes.append(f"{reps} runs per fs, driver and floor interleaved A B A B after one warm-up each; "
                   f"1 GiB sparse image; floor images in <pool>/bench-floor (same filesystem as the pool's images)")
    r.notes.append("same mkfs flags on both sides: " + "; ".join(f"{k}: {v}" for k, v in MKFS_FLAGS.items())
                   + "; both loop devices use direct I/O")
    r.notes.append("floor = bash floor_lifecycle.sh (truncate, losetup, mkfs, mount, mount --bind, umount x2, "
                   "losetup -d, rm), timed around the bash process")
    r.charts.extend(c for c in [charts.lifecycle(r)] if c)
    return r
