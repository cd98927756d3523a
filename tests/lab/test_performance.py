"""Lab pods run in their own cgroup, so fio inside a pod measures the class its claim asked for.

The kubelet makes pod<uid> under the lab's cgroup before publishing, passes the pod's uid
(podInfoOnMount) and starts the containers in that cgroup; the node plugin throttles the volume's
loop device there. Two claims, gp3 at its baseline and io2 with provisioned IOPS, each measured by
a pod running fio on its own volume.
"""

from __future__ import annotations

import json
import shutil
import uuid

import pytest

from elastivol.node import iothrottle
from tests.lab.test_scenarios import Lab, Made, claim, lab, made, pod, storage_class, wait_for, wait_phase

__all__ = ["lab", "made"]  # the module's lab and per-test cleanup, shared with the scenario tests

HIERARCHY = iothrottle.detect()
pytestmark = [
    pytest.mark.skipif(HIERARCHY is None, reason="no cgroup I/O controller here (neither blkio v1 nor io v2)"),
    pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed (the Makefile's apt list has it)"),
]

FIO = ("fio --name=p --directory={mount} --size=16M --rw=randread --bs=4k --direct=1 --ioengine=libaio "
       "--iodepth=16 --time_based --runtime=1 --ramp_time=1 --output-format=json --output={mount}/fio.tmp "
       "&& mv {mount}/fio.tmp {mount}/fio.json; sleep 3600")


@pytest.mark.parametrize(("label", "parameters", "size", "iops"), [
    ("gp3", {"type": "gp3", "csi.storage.k8s.io/fstype": "xfs"}, "1Gi", 3000),
    ("io2", {"type": "io2", "iops": "5000", "csi.storage.k8s.io/fstype": "xfs"}, "5Gi", 5000),
])
def test_fio_in_a_pod_measures_its_class(lab: Lab, made: Made, label: str, parameters: dict[str, str], size: str,
                                         iops: int) -> None:
    name = f"tp-{label}"
    mount = lab.mount_dir(name)
    made.apply(storage_class(f"{name}-class", parameters=parameters), claim(f"{name}-claim", f"{name}-class", size=size),
               pod(f"{name}-pod", f"{name}-claim", mount, script=FIO.format(mount=mount)))
    running = wait_phase(lab, "pod", f"{name}-pod", "Running")
    uid = running["metadata"]["uid"]
    assert HIERARCHY is not None
    assert iothrottle.find_pod_cgroup(HIERARCHY, uid) is not None, "the pod has no cgroup of its own"
    out = wait_for("fio in the pod to finish", lambda: lab.exec(f"{name}-pod", f"cat {mount}/fio.json 2>/dev/null || true"),
                   timeout=60)
    measured = json.loads(out)["jobs"][0]["read"]["iops"]
    assert measured == pytest.approx(iops, rel=0.10), f"{label}: {measured:.0f} IOPS measured in the pod"


def test_the_cgroup_goes_with_the_pod(lab: Lab, made: Made) -> None:
    name = f"tp-gone-{uuid.uuid4().hex[:6]}"
    mount = lab.mount_dir(name)
    made.apply(storage_class(f"{name}-class"), claim(f"{name}-claim", f"{name}-class"),
               pod(f"{name}-pod", f"{name}-claim", mount))
    uid = wait_phase(lab, "pod", f"{name}-pod", "Running")["metadata"]["uid"]
    assert HIERARCHY is not None
    cgroup = iothrottle.find_pod_cgroup(HIERARCHY, uid)
    assert cgroup is not None and (cgroup / "cgroup.procs").read_text().split(), "no process in the pod's cgroup"
    lab.delete("pod", f"{name}-pod")
    assert not cgroup.exists()
