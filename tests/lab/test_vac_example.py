"""examples/13-vac-gp3-to-io2 in a fresh lab: a writing pod's gp3 volume moves to io2 through a
VolumeAttributesClass, and fio inside the pod measures gp3's limit before and io2's after.

The pod keeps writing a timestamp every second throughout; the test checks that the writer never
stopped (no gap) and that the volume was never detached (same container, same loop device). A
class the volume cannot take ends Infeasible with the driver's message, and the claim keeps the
class it has.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from elastivol.node import iothrottle
from tests.lab.conftest import ROOT, lab

EXAMPLE = ROOT / "examples" / "13-vac-gp3-to-io2"
HIERARCHY = iothrottle.detect()
pytestmark = [
    pytest.mark.skipif(HIERARCHY is None, reason="no cgroup I/O controller here (neither blkio v1 nor io v2)"),
    pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed (the Makefile's apt list has it)"),
]
TOLERANCE = 0.15


def _json(directory: Path, *args: str) -> Any:
    return json.loads(lab(directory, "get", *args, "-o", "json", check=True).stdout)


def _until(what: str, probe: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _fio(directory: Path) -> float:
    """Random 4 KiB read IOPS measured by fio run with `lab exec` (in the pod's cgroup, as kubectl exec)."""
    script = (EXAMPLE / "fio.sh").read_text()
    lab(directory, "exec", "db", "--", "/bin/sh", "-c", script, check=True, timeout=120)
    out = lab(directory, "exec", "db", "--", "cat", "/data/fio.json", check=True).stdout
    return float(json.loads(out)["jobs"][0]["read"]["iops"])


def _limit_text(uid: str) -> str:
    assert HIERARCHY is not None
    cgroup = iothrottle.find_pod_cgroup(HIERARCHY, uid)
    assert cgroup is not None, "the pod has no cgroup of its own"
    name = "blkio.throttle.read_iops_device" if HIERARCHY.version == 1 else "io.max"
    return (cgroup / name).read_text()


def _events(directory: Path, reason: str) -> list[str]:
    items = _json(directory, "events")["items"]
    return [e["message"] for e in items if e["involvedObject"]["name"] == "db-data" and e["reason"] == reason]


def test_gp3_to_io2_while_the_pod_writes(lab_dir: Path) -> None:
    for f in ("1-storage.yaml", "2-pod.yaml", "3-vac.yaml"):
        lab(lab_dir, "apply", "-f", str(EXAMPLE / f), check=True)
    _until("pod db Running", lambda: _json(lab_dir, "pod", "db").get("status", {}).get("phase") == "Running")
    pod = _json(lab_dir, "pod", "db")
    uid, started = pod["metadata"]["uid"], pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    pv_name = _json(lab_dir, "pvc", "db-data")["spec"]["volumeName"]
    loops_before = [line for line in Path("/proc/mounts").read_text().splitlines() if str(lab_dir) in line]
    assert "<unset>" in lab(lab_dir, "get", "pvc", "db-data", check=True).stdout
    assert "io2-5000" in lab(lab_dir, "get", "vac", check=True).stdout

    before = _fio(lab_dir)
    lab(lab_dir, "patch", "pvc", "db-data", "-p", '{"spec":{"volumeAttributesClassName":"io2-5000"}}', check=True)
    _until("the claim's current class to be io2-5000", lambda: _json(lab_dir, "pvc", "db-data").get("status", {})
           .get("currentVolumeAttributesClassName") == "io2-5000")
    claim = _json(lab_dir, "pvc", "db-data")
    assert "modifyVolumeStatus" not in claim["status"]
    assert _json(lab_dir, "pv", pv_name)["spec"]["volumeAttributesClassName"] == "io2-5000"
    table = lab(lab_dir, "get", "pvc", "db-data", check=True).stdout
    assert "io2-5000" in table.splitlines()[1]
    assert _events(lab_dir, "VolumeModify") and _events(lab_dir, "VolumeModifySuccessful")
    want = " 5000" if HIERARCHY is not None and HIERARCHY.version == 1 else "riops=5000"
    _until("the pod's limit to move to 5000 IOPS", lambda: want in _limit_text(uid), timeout=30)
    after = _fio(lab_dir)
    print(f"\nfio in pod db (random 4 KiB reads): gp3 {before:.0f} IOPS (limit 3000), "
          f"io2 {after:.0f} IOPS (limit 5000)")
    assert before == pytest.approx(3000, rel=TOLERANCE)
    assert after == pytest.approx(5000, rel=TOLERANCE)

    # A class the volume cannot take: final (Infeasible), the driver's reason shown, nothing changed.
    lab(lab_dir, "patch", "pvc", "db-data", "-p", '{"spec":{"volumeAttributesClassName":"io2-too-fast"}}', check=True)
    infeasible = _until("the modification to be Infeasible", lambda: (
        lambda c: c if c.get("status", {}).get("modifyVolumeStatus", {}).get("status") == "Infeasible" else None)(
        _json(lab_dir, "pvc", "db-data")))
    condition = next(c for c in infeasible["status"]["conditions"] if c["type"] == "ModifyingVolume")
    assert "1000 IOPS per GiB" in condition["message"] and "InvalidArgument" in condition["message"]
    assert infeasible["status"]["currentVolumeAttributesClassName"] == "io2-5000"
    assert any("1000 IOPS per GiB" in m for m in _events(lab_dir, "VolumeModifyFailed"))
    assert "io2-5000" in lab(lab_dir, "get", "pvc", "db-data", check=True).stdout.splitlines()[1]
    # Back to the class it has: the attempt ends.
    lab(lab_dir, "patch", "pvc", "db-data", "-p", '{"spec":{"volumeAttributesClassName":"io2-5000"}}', check=True)
    _until("the attempt to end", lambda: "modifyVolumeStatus" not in _json(lab_dir, "pvc", "db-data")["status"])

    # The writer never stopped and the volume never moved.
    pod = _json(lab_dir, "pod", "db")
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] == started
    assert pod["status"]["containerStatuses"][0].get("restartCount", 0) == 0
    loops_after = [line for line in Path("/proc/mounts").read_text().splitlines() if str(lab_dir) in line]
    assert loops_after == loops_before, "a mount of the lab changed: the volume was detached or remounted"
    stamps = [int(x) for x in lab(lab_dir, "exec", "db", "--", "cat", "/data/out.txt", check=True).stdout.split()]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(stamps) >= 10 and max(gaps) <= 3, f"the writer paused: largest gap {max(gaps)} s"
