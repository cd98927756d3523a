"""Local block volumes perform like their EBS type, through the real gRPC path (podInfoOnMount's pod uid).

A quick subset of `elastivol bench perf`: gp3 at its baseline and st1 by its throughput, fio inside the
pod's cgroup, each within 10 % of the type's figures; a StorageClass that turns enforcement off; and
a gp2 volume whose limits follow its size when it grows.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench.env import Env, served_pool
from bench.perf import Case, Published, expected, limits_for
from elastivol.assembly.local_block import IO_RECONCILE_SECONDS
from elastivol.csi import csi_pb2
from elastivol.node import iothrottle
from elastivol.providers.local.pool import Pool
from elastivol.units import GiB, MiB

HIERARCHY = iothrottle.detect()
pytestmark = [
    pytest.mark.skipif(HIERARCHY is None, reason="no cgroup I/O controller here (neither blkio v1 nor io v2)"),
    pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed (the Makefile's apt list has it)"),
]


@contextmanager
def _published(env: Env, case: Case) -> Iterator[tuple[Published, tuple[int, int]]]:
    """``case``'s volume published to a pod, and its device number; unpublished and deleted on leaving."""
    pub = Published(env, case)
    try:
        assert HIERARCHY is not None
        yield pub, iothrottle.device_number(str(pub.target))
    finally:
        pub.close()


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    # Sparse images: a 1 TiB st1 volume costs nothing, so let the pool promise far more than it holds.
    with served_pool("perf-test", 2 << 30, extra=["--overcommit-ratio", "1000"]) as e:
        yield e


@pytest.mark.parametrize("case", [Case("gp3 default", {"type": "gp3"}, 4), Case("st1", {"type": "st1"}, 1024)],
                         ids=lambda c: c.label)
def test_fio_in_the_pod_measures_its_type(env: Env, case: Case) -> None:
    limits, _ = limits_for(case.params, case.size_gib)
    with _published(env, case) as (pub, dev):
        assert iothrottle.read_limits(HIERARCHY, pub.cgroup, dev) == limits
        iops, mibs = pub.measure(1)
    want_iops, _ = expected(limits, 4096)
    _, want_mibs = expected(limits, MiB)
    assert iops == pytest.approx(want_iops, rel=0.10)
    assert mibs == pytest.approx(want_mibs, rel=0.10)


def test_enforce_performance_false_leaves_the_volume_unthrottled(env: Env) -> None:
    with _published(env, Case("gp3 unthrottled", {"type": "gp3", "enforcePerformance": "false"}, 4)) as (_, dev):
        assert iothrottle.cgroups_limiting(HIERARCHY, dev) == []


def test_limits_follow_a_gp2_volume_that_grows(env: Env) -> None:
    with _published(env, Case("gp2 growing", {"type": "gp2"}, 20)) as (pub, dev):
        assert iothrottle.read_limits(HIERARCHY, pub.cgroup, dev) == iothrottle.IoLimits(100, 25 * MiB)
        env.client.controller.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
            volume_id=pub.volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=400 * GiB),
            volume_capability=pub.cap), timeout=60)
        env.client.node.NodeExpandVolume(csi_pb2.NodeExpandVolumeRequest(
            volume_id=pub.volume_id, volume_path=str(pub.target), staging_target_path=str(pub.staging),
            capacity_range=csi_pb2.CapacityRange(required_bytes=400 * GiB), volume_capability=pub.cap), timeout=60)
        # 400 GiB of gp2: 1200 IOPS, and 250 MiB/s from 334 GiB.
        assert iothrottle.read_limits(HIERARCHY, pub.cgroup, dev) == iothrottle.IoLimits(1200, 250 * MiB)




def test_a_change_recorded_in_the_pool_reaches_the_running_pod(env: Env) -> None:
    # What a ControllerModifyVolume on the local provider will record; the node plugin converges to it
    # on its own (every few seconds) without a call to the node and without detaching anything.
    with _published(env, Case("gp3 to io2", {"type": "gp3"}, 4)) as (pub, dev):
        assert iothrottle.read_limits(HIERARCHY, pub.cgroup, dev) == iothrottle.IoLimits(3000, 125 * MiB)
        pool = Pool(env.pool)
        rec = pool.volumes.get(pub.volume_id)
        assert rec is not None
        pool.volumes.put(pub.volume_id, {**rec, "params": {**rec["params"], "type": "io2", "iops": "2000"}})
        want = iothrottle.IoLimits(2000, 500 * MiB)  # io2: 2000 IOPS x 256 KiB
        deadline = time.monotonic() + 3 * IO_RECONCILE_SECONDS
        while iothrottle.read_limits(HIERARCHY, pub.cgroup, dev) != want and time.monotonic() < deadline:
            time.sleep(0.2)
        assert iothrottle.read_limits(HIERARCHY, pub.cgroup, dev) == want
