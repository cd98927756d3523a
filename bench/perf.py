"""7. Performance by type: fio in a pod's cgroup on a local volume, against its EBS type's figures.

Each volume goes through the real path: CreateVolume, ControllerPublish, NodeStage, then
NodePublishVolume with the pod's uid in volume_context (podInfoOnMount), which makes the node plugin
throttle the volume's loop device in that pod's cgroup. fio runs in the cgroup, as the pod would:
random 4 KiB direct reads measure IOPS, sequential 1 MiB direct reads measure throughput. Volumes are
raw block (sparse images, no mkfs), so the figures are the throttle's, not a filesystem's.

The last row changes a running volume's limits live (the record's performance, then the node's
"apply again" call that a VolumeAttributesClass change will use) and measures again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core import Result, Target
from bench.env import NODE, ZONE, Env, served_pool
from elastivol.client import BLOCK, volume_capability
from elastivol.csi import csi_pb2
from elastivol.node import iothrottle
from elastivol.params.block import parse_block_parameters, type_performance
from elastivol.providers.local.block_node import LocalBlockNode
from elastivol.providers.local.pool import Pool
from elastivol.units import GiB, MiB

CGROUP_PARENT = "elastivol-bench"
TOLERANCE = 0.10  # measured within +-10 % of the limit


@dataclass(frozen=True)
class Case:
    label: str
    params: dict[str, str]
    size_gib: int


CASES = (
    Case("gp2 small", {"type": "gp2"}, 20),
    Case("gp2 large", {"type": "gp2"}, 2000),
    Case("gp3 default", {"type": "gp3"}, 10),
    Case("gp3 provisioned", {"type": "gp3", "iops": "6000", "throughput": "250"}, 100),
    Case("io2", {"type": "io2", "iops": "8000"}, 100),
    Case("st1", {"type": "st1"}, 1024),
)
LIVE = (Case("gp3 default", {"type": "gp3"}, 10), {"type": "io2", "iops": "8000"})
PROFILE = {  # seconds per fio job, cases
    "smoke": (1, ("gp3 default",)),
    "quick": (2, tuple(c.label for c in CASES)),
    "full": (5, tuple(c.label for c in CASES)),
}


def in_cgroup(cgroup: Path, argv: Sequence[str]) -> list[str]:
    """``argv`` run from inside ``cgroup``: the process joins before exec, so no I/O escapes the limit."""
    code = ("import os, sys; from elastivol.node import iothrottle; "
            "iothrottle.join(iothrottle.Path(sys.argv[1])); os.execvp(sys.argv[2], sys.argv[2:])")
    return [sys.executable, "-c", code, str(cgroup), *argv]


def fio(cgroup: Path, filename: str, rw: str, bs: str, seconds: float, *, depth: int = 4,
        extra: Sequence[str] = ()) -> dict[str, Any]:
    """One direct fio job from inside ``cgroup``; returns {"iops", "mibs", "job"} of its read or write side."""
    argv = ["fio", "--name=perf", f"--filename={filename}", f"--rw={rw}", f"--bs={bs}", "--direct=1",
            "--ioengine=libaio", f"--iodepth={depth}", "--numjobs=1", "--time_based", f"--runtime={seconds}",
            "--ramp_time=1", "--randrepeat=0", "--output-format=json", *extra]
    proc = subprocess.run(in_cgroup(cgroup, argv), capture_output=True, text=True, timeout=seconds + 120, check=True)
    job = json.loads(proc.stdout)["jobs"][0]
    side = job["write"] if "write" in rw else job["read"]
    return {"iops": float(side["iops"]), "mibs": side["bw_bytes"] / MiB, "job": job}


def expected(limits: iothrottle.IoLimits, block_size: int) -> tuple[float, float]:
    """(IOPS, MiB/s) the limits allow for I/O of ``block_size`` bytes: whichever limit binds first."""
    iops = float(limits.iops) if limits.iops else float("inf")
    if limits.bps:
        iops = min(iops, limits.bps / block_size)
    return iops, iops * block_size / MiB


def limits_for(params: dict[str, str], size_gib: int) -> tuple[iothrottle.IoLimits, str]:
    perf = type_performance(parse_block_parameters(params), size_gib)
    return iothrottle.IoLimits(perf.iops, int(perf.throughput_mibs * MiB)), perf.basis


class Published:
    """A raw block volume published to a pod whose cgroup this object makes and removes."""

    def __init__(self, env: Env, case: Case) -> None:
        self.env = env
        self.case = case
        hierarchy = iothrottle.detect()
        if hierarchy is None:
            raise RuntimeError(iothrottle.NO_CONTROLLER)
        self.pod_uid = str(uuid.uuid4())
        self.cgroup = iothrottle.make_cgroup(hierarchy, f"{CGROUP_PARENT}/pod{self.pod_uid}")
        self.cap = volume_capability(BLOCK)
        name = case.label.replace(" ", "-") + "-" + self.pod_uid[:8]
        vol = env.client.create_volume(name, case.size_gib * GiB, parameters=case.params, cap=self.cap, zone=ZONE)
        self.volume_id = vol.volume_id
        self.context = dict(vol.volume_context)
        self.staging = env.kubelet / "staging" / self.volume_id
        self.target = env.kubelet / "pods" / self.pod_uid / "dev"
        self.target.parent.mkdir(parents=True, exist_ok=True)
        ctl, node = env.client.controller, env.client.node
        pub = ctl.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id=self.volume_id, node_id=NODE, volume_capability=self.cap), timeout=60)
        self.publish_context = dict(pub.publish_context)
        node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
            volume_id=self.volume_id, staging_target_path=str(self.staging), volume_capability=self.cap,
            publish_context=self.publish_context, volume_context=self.context), timeout=120)
        node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
            volume_id=self.volume_id, staging_target_path=str(self.staging), target_path=str(self.target),
            volume_capability=self.cap, publish_context=self.publish_context,
            volume_context={**self.context, "csi.storage.k8s.io/pod.uid": self.pod_uid}), timeout=60)

    def close(self) -> None:
        node, ctl = self.env.client.node, self.env.client.controller
        node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
            volume_id=self.volume_id, target_path=str(self.target)), timeout=60)
        node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
            volume_id=self.volume_id, staging_target_path=str(self.staging)), timeout=60)
        ctl.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
            volume_id=self.volume_id, node_id=NODE), timeout=60)
        ctl.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=self.volume_id), timeout=60)
        iothrottle.remove_cgroup(self.cgroup, parent_if_empty=True)

    def measure(self, seconds: float) -> tuple[float, float]:
        """(random 4 KiB read IOPS, sequential 1 MiB read MiB/s) from inside the pod's cgroup."""
        # Shallow queues: at a few dozen IOPS a deep queue spends the ramp-up second waiting, not measuring.
        rand = fio(self.cgroup, str(self.target), "randread", "4k", seconds, depth=4)
        seq = fio(self.cgroup, str(self.target), "read", "1M", seconds, depth=2)
        return rand["iops"], seq["mibs"]


def change_live(env: Env, volume_id: str, params: dict[str, str]) -> list[str]:
    """What a ModifyVolume will do on the local provider: record new parameters, re-apply on the node."""
    pool = Pool(env.pool)
    rec = pool.volumes.get(volume_id)
    assert rec is not None
    rec["params"] = {**rec["params"], **params}
    pool.volumes.put(volume_id, rec)
    return LocalBlockNode(pool, NODE).update_io_limits(volume_id)


def _row(r: Result, label: str, size_gib: int, limits: iothrottle.IoLimits, basis: str,
         iops: float, mibs: float) -> dict[str, Any]:
    want_iops, _ = expected(limits, 4096)
    _, want_mibs = expected(limits, MiB)
    r_iops, r_mibs = iops / want_iops, mibs / want_mibs
    r.rows.append([label, size_gib, want_iops, iops, r_iops, want_mibs, mibs, r_mibs, basis])
    r.targets.append(Target(f"{label}: IOPS deviation from the limit", abs(r_iops - 1), "<=", TOLERANCE))
    r.targets.append(Target(f"{label}: MiB/s deviation from the limit", abs(r_mibs - 1), "<=", TOLERANCE))
    return {"iops": iops, "mibs": mibs, "iops_limit": want_iops, "mibs_limit": want_mibs, "basis": basis}


def run(profile: str) -> Result:
    seconds, labels = PROFILE[profile]
    r = Result("perf", "7. Local volumes perform like their EBS type: fio in the pod's cgroup vs the type's limits",
               profile)
    r.columns = ["volume", "GiB", "IOPS limit", "IOPS (4K rand)", "ratio", "MiB/s limit", "MiB/s (1M seq)", "ratio",
                 "model"]
    figures: dict[str, Any] = {}
    with served_pool("perf", 4 << 30, extra=["--overcommit-ratio", "1000"]) as env:
        for case in (c for c in CASES if c.label in labels):
            limits, basis = limits_for(case.params, case.size_gib)
            pub = Published(env, case)
            try:
                iops, mibs = pub.measure(seconds)
            finally:
                pub.close()
            figures[case.label] = _row(r, case.label, case.size_gib, limits, basis, iops, mibs)
        base, new_params = LIVE
        pub = Published(env, base)
        try:
            changed = change_live(env, pub.volume_id, new_params)
            limits, basis = limits_for({**base.params, **new_params}, base.size_gib)
            iops, mibs = pub.measure(seconds)
            label = f"{base.label} -> io2 8000, live"
            figures[label] = {**_row(r, label, base.size_gib, limits, basis, iops, mibs), "cgroups": changed}
        finally:
            pub.close()
    r.figures = {"runs": figures, "seconds_per_job": seconds, "controller": str(iothrottle.detect())}
    r.notes = [
        "Limits are EBS baseline figures (no burst credits): gp2 3 IOPS/GiB in 100-16000 and IOPS x 256 KiB up to "
        "128 MiB/s (250 from 334 GiB); st1/sc1 40/12 MiB/s per TiB (caps 500/250 MiB/s) and their documented "
        "maximum of 500/250 IOPS (EBS would charge each small random I/O as 1 MiB; the kernel cannot); "
        "io1/io2 IOPS as provisioned, IOPS x 256 KiB up to 1000/4000 MiB/s.",
        "Read and write are each limited to the figure (the kernel throttles per direction; EBS counts them together).",
        f"Command: elastivol bench perf{'' if profile == 'full' else ' --' + profile}",
    ]
    return r
