"""3. Data path: fio in a mounted volume against the same job on the pool's own filesystem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench.core import Result, Target, median
from bench.env import NODE, ZONE, served_pool
from bench.env import run as sh
from elastivol.client import MOUNT, volume_capability
from elastivol.csi import csi_pb2

PROFILE = {  # file size, seconds per random job, repetitions
    "smoke": ("64M", 1, 1),
    "quick": ("256M", 3, 1),
    "full": ("1G", 10, 3),
}
JOBS = (  # name, fio rw, block size, iodepth, metric, target
    ("seq write 1 MiB", "write", "1M", 16, "bw", 0.9),
    ("seq read 1 MiB", "read", "1M", 16, "bw", 0.9),
    ("rand read 4 KiB", "randread", "4k", 32, "iops", 0.8),
    ("rand write 4 KiB", "randwrite", "4k", 32, "iops", 0.8),
)


def fio(directory: Path, rw: str, bs: str, depth: int, size: str, seconds: int) -> dict[str, float]:
    argv = ["fio", "--name=bench", f"--directory={directory}", "--filename=fio.dat", f"--rw={rw}", f"--bs={bs}",
            f"--size={size}", "--direct=1", "--ioengine=libaio", f"--iodepth={depth}", "--numjobs=1",
            "--output-format=json", "--end_fsync=1"]
    if rw.startswith("rand"):
        argv += ["--time_based", f"--runtime={seconds}", "--ramp_time=1", "--randrepeat=0"]
    out: dict[str, Any] = json.loads(sh(argv, timeout=600).stdout)
    job = out["jobs"][0]
    side = job["write"] if "write" in rw else job["read"]
    return {"bw_mib_s": side["bw_bytes"] / (1 << 20), "iops": side["iops"]}


def run(profile: str) -> Result:
    size, seconds, reps = PROFILE[profile]
    if shutil.which("fio") is None:
        raise RuntimeError("fio is not installed (apt-get install fio)")
    r = Result("datapath", "3. Data path: fio in a volume vs directly on the pool's filesystem", profile)
    r.columns = ["job", "volume", "pool fs", "unit", "volume / pool"]
    with served_pool("datapath", 8 << 30) as env:
        cap = volume_capability(MOUNT, fs_type="xfs")
        vol = env.client.create_volume("fio", 4 << 30, parameters={"type": "gp3"}, cap=cap, zone=ZONE)
        vid = vol.volume_id
        pub = env.client.controller.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id=vid, node_id=NODE, volume_capability=cap), timeout=60)
        staging = env.kubelet / "staging" / "fio"
        env.client.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
            volume_id=vid, staging_target_path=str(staging), volume_capability=cap,
            publish_context=dict(pub.publish_context), volume_context=dict(vol.volume_context)), timeout=120)
        direct = env.pool / "bench-fio"
        direct.mkdir()
        figures: dict[str, Any] = {}
        try:
            for name, rw, bs, depth, metric, goal in JOBS:
                key = "bw_mib_s" if metric == "bw" else "iops"
                v_runs: list[float] = []
                p_runs: list[float] = []
                for _ in range(reps):  # interleaved: volume, pool, volume, pool...
                    v_runs.append(fio(staging, rw, bs, depth, size, seconds)[key])
                    p_runs.append(fio(direct, rw, bs, depth, size, seconds)[key])
                ratio = median(v_runs) / median(p_runs)
                unit = "MiB/s" if metric == "bw" else "IOPS"
                r.rows.append([name, median(v_runs), median(p_runs), unit, ratio])
                r.targets.append(Target(f"{name}: volume / pool", ratio, ">=", goal, "x"))
                figures[name] = {"volume": v_runs, "pool": p_runs, "unit": unit}
        finally:
            env.client.node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
                volume_id=vid, staging_target_path=str(staging)), timeout=60)
            env.client.controller.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
                volume_id=vid, node_id=NODE), timeout=60)
            env.client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), timeout=60)
        r.figures = {"runs": figures, "file_size": size, "random_seconds": seconds, "repetitions": reps,
                     "pool_fs": env.config.fs_type}
    r.notes.append(f"fio libaio O_DIRECT, {size} file, seq iodepth 16, random iodepth 32 for {seconds} s "
                   f"(+1 s ramp); median of {reps}, volume and pool runs interleaved")
    r.notes.append(f"volume: xfs on a loop device (direct I/O) over a sparse image in the pool; "
                   f"pool fs: {env.config.fs_type} of the pool itself (bench-fio directory)")
    if profile != "full":
        r.notes.append(f"{profile} profile: {size} instead of 1 GiB, random jobs {seconds} s")
    return r
