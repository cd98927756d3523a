"""8. Volume group snapshots: how long the members' filesystems stay frozen, for groups of 2 and 8.

Every member is an xfs volume, staged and mounted, with a writer (4 KiB + fsync in a loop) on it,
so the freeze has dirty data to flush and writers to hold. The window (first FIFREEZE to last
FITHAW) is what the provider records in the group's metadata; the RPC time is the whole
CreateVolumeGroupSnapshot as the CO sees it.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from bench.core import Result, Target, median, p90
from bench.env import NODE, ZONE, served_pool
from elastivol.client import MOUNT, CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.providers.local.group_snapshots import group_store
from elastivol.providers.local.pool import Pool

GROUP_SIZES = {"smoke": [2], "quick": [2, 8], "full": [2, 8]}
REPS = {"smoke": 3, "quick": 10, "full": 30}


class _Writers:
    """One thread per volume: 4 KiB written and fsynced, over and over."""

    def __init__(self, dirs: list[Path]) -> None:
        self.stop = threading.Event()
        self.rounds = [0] * len(dirs)
        self.threads = [threading.Thread(target=self._run, args=(i, d), daemon=True) for i, d in enumerate(dirs)]

    def _run(self, i: int, directory: Path) -> None:
        block = os.urandom(4096)
        fd = os.open(directory / "load.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while not self.stop.is_set():
                os.pwrite(fd, block, (self.rounds[i] % 256) * 4096)
                os.fsync(fd)
                self.rounds[i] += 1
        finally:
            os.close(fd)

    def __enter__(self) -> _Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def _point(client: CsiClient, kubelet: Path, pool: Path, n: int, reps: int) -> dict[str, object]:
    cap = volume_capability(MOUNT, fs_type="xfs")
    vols: list[tuple[str, Path]] = []
    try:
        for i in range(n):
            vol = client.create_volume(f"grp{n}-{i}", 1 << 30, parameters={"type": "gp3"}, cap=cap, zone=ZONE)
            pub = client.controller.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
                volume_id=vol.volume_id, node_id=NODE, volume_capability=cap), timeout=60)
            staging = kubelet / "staging" / f"grp{n}-{i}"
            vols.append((vol.volume_id, staging))
            client.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
                volume_id=vol.volume_id, staging_target_path=str(staging), volume_capability=cap,
                publish_context=dict(pub.publish_context), volume_context=dict(vol.volume_context)), timeout=120)
        windows: list[float] = []
        rpcs: list[float] = []
        phases: list[dict[str, float]] = []
        groups = group_store(Pool(pool))
        with _Writers([s for _v, s in vols]) as writers:
            time.sleep(0.2)
            for r in range(reps):
                t0 = time.perf_counter()
                group = client.group.CreateVolumeGroupSnapshot(csi_pb2.CreateVolumeGroupSnapshotRequest(
                    name=f"grp{n}-{r}", source_volume_ids=[v for v, _s in vols]), timeout=120).group_snapshot
                rpcs.append(time.perf_counter() - t0)
                rec = groups.get(group.group_snapshot_id)
                assert rec is not None and rec.get("frozen") == n, rec
                windows.append(float(rec["freeze_window_s"]))
                phases.append({k: float(v) for k, v in rec["freeze_phases_s"].items()})
                client.group.DeleteVolumeGroupSnapshot(csi_pb2.DeleteVolumeGroupSnapshotRequest(
                    group_snapshot_id=group.group_snapshot_id,
                    snapshot_ids=[s.snapshot_id for s in group.snapshots]), timeout=120)
        rounds = sum(writers.rounds)
    finally:
        for vid, staging in vols:
            client.node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
                volume_id=vid, staging_target_path=str(staging)), timeout=60)
            client.controller.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
                volume_id=vid, node_id=NODE), timeout=60)
            client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), timeout=60)
    return {"volumes": n, "window_runs": windows, "rpc_runs": rpcs, "writer_rounds": rounds,
            **{f"{k}_median_s": median([ph[k] for ph in phases]) for k in ("freeze", "copy", "thaw")}}


def run(profile: str) -> Result:
    sizes = GROUP_SIZES[profile]
    reps = REPS[profile]
    r = Result("group", "8. Volume group snapshots: the freeze window", profile)
    r.columns = ["volumes", "freeze median ms", "freeze p90 ms", "freeze max ms", "of which freezing",
                 "copying", "thawing", "RPC median ms", "writer fsyncs"]
    points = []
    with served_pool("group", (max(sizes) + 4) << 30) as env:
        if not env.config.reflink:
            r.notes.append("the pool has no reflink: every member is a full copy, made while frozen")
        for n in sizes:
            points.append(_point(env.client, env.kubelet, env.pool, n, reps))
    for p in points:
        w = [x * 1e3 for x in p["window_runs"]]  # type: ignore[attr-defined]
        rpc = [x * 1e3 for x in p["rpc_runs"]]  # type: ignore[attr-defined]
        r.rows.append([p["volumes"], median(w), p90(w), max(w), *(float(p[f"{k}_median_s"]) * 1e3  # type: ignore[arg-type]
                       for k in ("freeze", "copy", "thaw")), median(rpc), p["writer_rounds"]])
    for p in points:
        r.targets.append(Target(f"freeze window p90, {p['volumes']} volumes",
                                p90(p["window_runs"]) * 1e3, "<=", 100.0, "ms"))  # type: ignore[arg-type]
    if len(points) > 1:
        # The freezes run concurrently: the window grows with the copies, not with a freeze per member.
        lo, hi = points[0], points[-1]
        ratio = median(hi["window_runs"]) / median(lo["window_runs"])  # type: ignore[arg-type]
        r.targets.append(Target(f"freeze window {hi['volumes']} / {lo['volumes']} volumes", ratio, "<=", 2.5, "x"))
    r.figures = {"points": points, "repetitions": reps}
    r.notes.append(f"xfs 1 GiB volumes, staged, each with a writer (4 KiB pwrite + fsync loop); {reps} groups per "
                   "size; window = first FIFREEZE to last FITHAW, as recorded in the group's metadata")
    return r
