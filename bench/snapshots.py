"""2. Snapshot, restore and clone cost against data size, against a full copy and tar czf."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench import charts
from bench.core import Result, Target, median
from bench.env import NODE, ZONE, served_pool
from bench.env import run as sh
from elastivol.client import MOUNT, CsiClient, volume_capability
from elastivol.csi import csi_pb2

SIZES_MIB = {"smoke": [8, 32], "quick": [16, 64, 256], "full": [64, 1024, 4096]}
REPS = {"smoke": 2, "quick": 3, "full": 5}
CHUNK = 16 << 20


def _write_random(path: Path, mib: int) -> None:
    # Random data (a fresh 16 MiB buffer repeated: gzip's 32 KiB window finds nothing to compress).
    buf = os.urandom(CHUNK)
    with open(path, "wb") as fh:
        left = mib << 20
        while left > 0:
            n = min(left, CHUNK)
            fh.write(buf[:n])
            left -= n
        fh.flush()
        os.fsync(fh.fileno())


def _timed(fn: object, *args: object) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)  # type: ignore[operator]
    return time.perf_counter() - t0, out


def _point(client: CsiClient, kubelet: Path, pool: Path, mib: int, reps: int, slow_reps: int) -> dict[str, float]:
    cap = volume_capability(MOUNT, fs_type="xfs")
    size = ((mib >> 10) + 1) << 30
    vol = client.create_volume(f"snap-src-{mib}", size, parameters={"type": "gp3"}, cap=cap, zone=ZONE)
    vid = vol.volume_id
    pub = client.controller.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id=vid, node_id=NODE, volume_capability=cap), timeout=60)
    staging = kubelet / "staging" / f"snap-{mib}"
    client.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
        volume_id=vid, staging_target_path=str(staging), volume_capability=cap,
        publish_context=dict(pub.publish_context), volume_context=dict(vol.volume_context)), timeout=120)
    try:
        _write_random(staging / "data.bin", mib)
        image = pool / "images" / f"{vid}.img"
        snap_t: list[float] = []
        restore_t: list[float] = []
        clone_t: list[float] = []
        for i in range(reps):
            t, snap = _timed(lambda n=f"snap-{mib}-{i}": client.controller.CreateSnapshot(
                csi_pb2.CreateSnapshotRequest(name=n, source_volume_id=vid), timeout=600).snapshot)
            snap_t.append(t)
            sid = snap.snapshot_id  # type: ignore[attr-defined]
            src = csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=sid))
            t, restored = _timed(lambda s=src, n=f"restore-{mib}-{i}": client.create_volume(
                n, size, parameters={"type": "gp3"}, cap=cap, zone=ZONE, source=s))
            restore_t.append(t)
            csrc = csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=vid))
            t, clone = _timed(lambda s=csrc, n=f"clone-{mib}-{i}": client.create_volume(
                n, size, parameters={"type": "gp3"}, cap=cap, zone=ZONE, source=s))
            clone_t.append(t)
            for v in (restored, clone):
                client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=v.volume_id), timeout=60)  # type: ignore[attr-defined]
            client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=sid), timeout=60)
        cp_t: list[float] = []
        tar_t: list[float] = []
        copy = pool / "bench-copy.img"
        tgz = pool / "bench-copy.tgz"
        for _ in range(slow_reps):
            sh(["sync"])
            t, _r = _timed(sh, ["cp", "--sparse=always", "--reflink=never", str(image), str(copy)], 3600.0)
            cp_t.append(t)
            copy.unlink()
            sh(["sync"])
            t, _r = _timed(sh, ["tar", "czf", str(tgz), "-C", str(staging), "."], 3600.0)
            tar_t.append(t)
            tgz.unlink()
    finally:
        client.node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
            volume_id=vid, staging_target_path=str(staging)), timeout=60)
        client.controller.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
            volume_id=vid, node_id=NODE), timeout=60)
        client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), timeout=60)
    return {"data_mib": mib, "snapshot_s": median(snap_t), "restore_s": median(restore_t),
            "clone_s": median(clone_t), "cp_s": median(cp_t), "tar_s": median(tar_t),
            "snapshot_runs": snap_t, "cp_runs": cp_t, "tar_runs": tar_t}  # type: ignore[dict-item]


def _label(mib: int) -> str:
    return f"{mib} MiB" if mib < 1024 else f"{mib // 1024} GiB"


def run(profile: str) -> Result:
    sizes = SIZES_MIB[profile]
    reps = REPS[profile]
    r = Result("snapshots", "2. Snapshot, restore and clone vs cp and tar czf", profile)
    r.columns = ["data", "snapshot ms", "restore ms", "clone ms", "cp ms", "tar czf ms",
                 "cp / snapshot", "tar / snapshot"]
    pool_size = max(8 << 30, (sum(sizes) * 3 << 20) + (4 << 30))
    points = []
    with served_pool("snapshots", pool_size) as env:
        if not env.config.reflink:
            r.notes.append("the pool has no reflink: snapshots are full copies here")
        for mib in sizes:
            slow = reps if mib <= 64 else 1
            points.append(_point(env.client, env.kubelet, env.pool, mib, reps, slow))
    for p in points:
        r.rows.append([_label(int(p["data_mib"])), p["snapshot_s"] * 1e3, p["restore_s"] * 1e3, p["clone_s"] * 1e3,
                       p["cp_s"] * 1e3, p["tar_s"] * 1e3, p["cp_s"] / p["snapshot_s"], p["tar_s"] / p["snapshot_s"]])
    lo, hi = points[0], points[-1]
    flat = hi["snapshot_s"] / lo["snapshot_s"]
    r.targets.append(Target(f"snapshot time {_label(sizes[-1])} / {_label(sizes[0])}", flat, "<=", 3.0, "x"))
    r.targets.append(Target(f"tar czf / snapshot at {_label(sizes[-1])}", hi["tar_s"] / hi["snapshot_s"], ">=", 50.0, "x"))
    r.figures = {"points": points, "repetitions": reps}
    if profile != "full":
        r.notes.append(f"{profile} profile: sizes {', '.join(map(_label, sizes))} instead of 64 MiB, 1 GiB, 4 GiB "
                       "(tar czf of 4 GiB takes minutes); the targets are evaluated on these sizes")
    r.notes.append(f"xfs volumes staged and mounted while snapshotted; random data; snapshot/restore/clone median of "
                   f"{reps}; cp and tar median of {reps} up to 64 MiB, 1 run above; sync before each cp and tar")
    r.notes.append("restore and clone = CreateVolume from a snapshot / from the volume (reflink); "
                   "cp = cp --sparse=always --reflink=never of the image; tar = tar czf of the mounted tree")
    r.charts.extend(c for c in [charts.snapshots(r)] if c)
    return r



