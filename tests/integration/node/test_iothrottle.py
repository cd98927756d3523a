"""node.iothrottle on the real kernel: a loop device's I/O limits in a pod's cgroup, measured with fio.

The test that a limit changes live is the one a later ControllerModifyVolume relies on: the volume
stays attached, mounted and busy while its limits are rewritten, and the measured rate follows.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.perf import fio, in_cgroup
from elastivol.node import iothrottle, loop, volume
from elastivol.units import MiB

from .conftest import Host

HIERARCHY = iothrottle.detect()
pytestmark = [
    pytest.mark.skipif(HIERARCHY is None, reason="no cgroup I/O controller here (neither blkio v1 nor io v2)"),
    pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed (the Makefile's apt list has it)"),
]


@pytest.fixture
def pod() -> Iterator[tuple[str, Path]]:
    assert HIERARCHY is not None
    uid = str(uuid.uuid4())
    cgroup = iothrottle.make_cgroup(HIERARCHY, f"elastivol-test/pod{uid}")
    yield uid, cgroup
    iothrottle.remove_cgroup(cgroup, parent_if_empty=True)


def staged(host: Host, size: int = 1 << 30) -> tuple[str, Path]:
    image = host.image("vol.img", size)
    device = loop.ensure_attached(image, direct_io=True).path
    target = host.dir("staging")
    volume.stage_filesystem(device, str(target), "ext4")
    return device, target


def test_limits_land_in_the_pods_cgroup_and_hold_its_io(host: Host, pod: tuple[str, Path]) -> None:
    uid, cgroup = pod
    device, target = staged(host)
    limits = iothrottle.IoLimits(iops=800, bps=20 * MiB)
    placement = iothrottle.limit_device(device, limits, pod_uid=uid, what="test volume")
    assert HIERARCHY is not None
    assert placement.scope == "pod" and placement.cgroups == [cgroup] and not placement.problem
    dev = iothrottle.device_number(device)
    assert iothrottle.read_limits(HIERARCHY, cgroup, dev) == limits
    assert iothrottle.cgroups_limiting(HIERARCHY, dev) == [cgroup]

    rand = fio(cgroup, str(target / "f"), "randwrite", "4k", 2, extra=["--size=16M"])
    assert rand["iops"] == pytest.approx(800, rel=0.10)  # throughput: see tests/integration/test_block_performance.py


def test_a_live_change_moves_the_rate_of_a_running_writer(host: Host, pod: tuple[str, Path], tmp_path: Path) -> None:
    uid, cgroup = pod
    device, target = staged(host)
    iothrottle.limit_device(device, iothrottle.IoLimits(iops=1000, bps=100 * MiB), pod_uid=uid)
    log_prefix = tmp_path / "rate"
    argv = ["fio", "--name=live", f"--filename={target / 'f'}", "--size=32M", "--rw=randwrite", "--bs=4k",
            "--direct=1", "--ioengine=libaio", "--iodepth=16", "--time_based", "--runtime=6",
            f"--write_iops_log={log_prefix}", "--log_avg_msec=500", "--output-format=json"]
    proc = subprocess.Popen(in_cgroup(cgroup, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3.0)  # the writer is busy on the mounted volume at 1000 IOPS
        changed = iothrottle.update_device(device, iothrottle.IoLimits(iops=3000, bps=100 * MiB), what="live")
        assert changed == [cgroup]
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    samples = []
    for line in Path(f"{log_prefix}_iops.1.log").read_text().splitlines():
        msec, value = (int(x) for x in line.split(",")[:2])
        samples.append((msec, value))
    # fio's clock starts after the interpreter and fio have started (0.3-1 s after Popen), so the
    # change, 3 s after Popen, lands between 2 and 3 s on fio's clock: compare the windows around it.
    before = [v for t, v in samples if 500 <= t <= 1600]
    after = [v for t, v in samples if 4000 <= t <= 5600]
    assert before and after, samples
    assert sum(before) / len(before) == pytest.approx(1000, rel=0.10), samples
    assert sum(after) / len(after) == pytest.approx(3000, rel=0.10), samples


@pytest.mark.skipif(HIERARCHY is not None and HIERARCHY.version != 1, reason="cgroup v1 only: v2 limits are hierarchical")
def test_v1_limits_reach_the_cgroups_below_the_pod(host: Host, pod: tuple[str, Path]) -> None:
    # v1 throttling is flat: a container's cgroup under the pod must get the limits itself.
    uid, cgroup = pod
    container = cgroup / "container-1"
    container.mkdir()
    device, _ = staged(host)
    placement = iothrottle.limit_device(device, iothrottle.IoLimits(iops=500), pod_uid=uid)
    assert HIERARCHY is not None
    assert set(placement.cgroups) == {cgroup, container}
    assert iothrottle.read_limits(HIERARCHY, container, iothrottle.device_number(device)) == iothrottle.IoLimits(500)


def test_no_cgroup_for_the_pod_is_said_not_silent(host: Host, caplog: pytest.LogCaptureFixture) -> None:
    assert HIERARCHY is not None
    if iothrottle.kubepods_cgroup(HIERARCHY) is not None:
        pytest.skip("this host has a kubepods cgroup: the fallback would apply there")
    device, _ = staged(host)
    ghost = str(uuid.uuid4())
    with caplog.at_level(logging.WARNING, logger="elastivol.node.iothrottle"):
        placement = iothrottle.limit_device(device, iothrottle.IoLimits(iops=500), pod_uid=ghost, what="volume v")
    assert placement.cgroups == [] and f"no cgroup of pod {ghost}" in placement.problem
    assert "runs unthrottled" in caplog.text and ghost in caplog.text
    assert iothrottle.update_device(device, iothrottle.IoLimits(iops=900)) == []  # limited nowhere


@pytest.mark.skipif(HIERARCHY is not None and HIERARCHY.version != 1, reason="cgroup v1 only: v2 limits are hierarchical")
def test_v1_a_container_cgroup_made_after_publish_gets_the_limits(host: Host, pod: tuple[str, Path]) -> None:
    # Kubelet publishes before the runtime makes the containers' cgroups: the node plugin spreads the
    # pod's limits down to them (its background loop calls this every few seconds).
    uid, cgroup = pod
    device, target = staged(host)
    limits = iothrottle.IoLimits(iops=700, bps=30 * MiB)
    iothrottle.limit_device(device, limits, pod_uid=uid)
    later = cgroup / "container-2"
    later.mkdir()
    assert HIERARCHY is not None
    dev = iothrottle.device_number(device)
    assert iothrottle.read_limits(HIERARCHY, later, dev) is None
    assert iothrottle.spread_down(device) == [later]
    assert iothrottle.read_limits(HIERARCHY, later, dev) == limits
    assert iothrottle.spread_down(device) == []  # nothing new: nothing written
    assert fio(later, str(target / "f"), "randwrite", "4k", 2, extra=["--size=16M"])["iops"] == pytest.approx(700, rel=0.1)
