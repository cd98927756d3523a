"""node.iothrottle without the kernel: which controller a mount table offers, how pods' cgroups are
found, what cgroup v2's io.max receives (v2's io controller cannot be enabled on this machine, whose
blkio is bound to v1), and that a missing controller is said in the log, Probe and doctor."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from elastivol import doctor
from elastivol.assembly import local_block
from elastivol.domain import Health
from elastivol.node import iothrottle

V1_LINE = "35 28 0:30 / /sys/fs/cgroup/blkio rw,nosuid - cgroup cgroup rw,blkio\n"
V2_LINE = "40 28 0:35 / {point} rw,nosuid - cgroup2 cgroup2 rw\n"
OTHER = "22 1 253:0 / / rw,relatime - ext4 /dev/vda rw\n"


def mountinfo(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "mountinfo"
    path.write_text("".join(lines))
    return str(path)


def test_detect_prefers_v1_blkio_then_v2_with_io(tmp_path: Path) -> None:
    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory io pids\n")
    found = iothrottle.detect(mountinfo(tmp_path, OTHER, V2_LINE.format(point=v2), V1_LINE))
    assert found == iothrottle.Hierarchy(1, Path("/sys/fs/cgroup/blkio"))
    assert iothrottle.detect(mountinfo(tmp_path, OTHER, V2_LINE.format(point=v2))) == iothrottle.Hierarchy(2, v2)
    (v2 / "cgroup.controllers").write_text("hugetlb\n")  # this machine's cgroup2: no io controller
    assert iothrottle.detect(mountinfo(tmp_path, OTHER, V2_LINE.format(point=v2))) is None
    assert iothrottle.detect(mountinfo(tmp_path, OTHER)) is None


def test_pods_are_found_by_uid_with_either_cgroup_driver(tmp_path: Path) -> None:
    h = iothrottle.Hierarchy(1, tmp_path)
    uid = "0f1e2d3c-aaaa-bbbb-cccc-123456789abc"
    cgroupfs = tmp_path / "kubepods" / "burstable" / f"pod{uid}"
    cgroupfs.mkdir(parents=True)
    assert iothrottle.find_pod_cgroup(h, uid) == cgroupfs
    assert iothrottle.kubepods_cgroup(h) == tmp_path / "kubepods"
    other = "11111111-2222-3333-4444-555555555555"
    systemd = (tmp_path / "kubepods.slice" / "kubepods-besteffort.slice" /
               f"kubepods-besteffort-pod{other.replace('-', '_')}.slice")
    systemd.mkdir(parents=True)
    assert iothrottle.find_pod_cgroup(h, other) == systemd
    assert iothrottle.find_pod_cgroup(h, "99999999-0000-0000-0000-000000000000") is None
    assert iothrottle.find_pod_cgroup(h, "../etc") is None


def test_v2_writes_io_max_after_enabling_io_in_every_ancestor(tmp_path: Path) -> None:
    h = iothrottle.Hierarchy(2, tmp_path)
    pod = tmp_path / "kubepods.slice" / "pod-x"
    pod.mkdir(parents=True)
    for d in (tmp_path, tmp_path / "kubepods.slice"):
        (d / "cgroup.subtree_control").write_text("cpu memory\n")
    (pod / "io.max").write_text("")
    iothrottle.set_limits(h, pod, (7, 3), iothrottle.IoLimits(iops=3000, bps=125 << 20))
    assert (pod / "io.max").read_text() == "7:3 rbps=131072000 wbps=131072000 riops=3000 wiops=3000\n"
    # One write of "+io" to each ancestor (a plain file here keeps the rest of its old text after it).
    assert (tmp_path / "cgroup.subtree_control").read_text().startswith("+io")
    assert (tmp_path / "kubepods.slice" / "cgroup.subtree_control").read_text().startswith("+io")
    # The kernel shows io.max back like this; unlimited sides read "max".
    (pod / "io.max").write_text("7:3 rbps=131072000 wbps=131072000 riops=3000 wiops=3000\n8:0 rbps=max wbps=max riops=5 wiops=5\n")
    assert iothrottle.read_limits(h, pod, (7, 3)) == iothrottle.IoLimits(3000, 125 << 20)
    assert iothrottle.read_limits(h, pod, (8, 0)) == iothrottle.IoLimits(5, 0)
    assert iothrottle.read_limits(h, pod, (9, 9)) is None
    (pod / "io.max").write_text("")
    iothrottle.set_limits(h, pod, (7, 3), iothrottle.IoLimits())
    assert (pod / "io.max").read_text() == "7:3 rbps=max wbps=max riops=max wiops=max\n"


def test_no_controller_is_said_in_the_log_probe_and_doctor(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(iothrottle, "detect", lambda mountinfo=iothrottle.MOUNTINFO: None)
    with caplog.at_level(logging.WARNING):
        health = local_block._with_throttle_notice(lambda: Health(True, notice="no reflink"))
        placement = iothrottle.limit_device("/dev/null", iothrottle.IoLimits(100), pod_uid="u", what="volume v")
    assert "no cgroup I/O controller found" in caplog.text
    assert health().notice.startswith("no reflink; no cgroup I/O controller found")
    assert "NOT enforced" in placement.problem and placement.cgroups == []
    findings = doctor.scan_throttle()
    assert [f.kind for f in findings] == ["no-io-controller"] and "--no-enforce-performance" in findings[0].remedy
