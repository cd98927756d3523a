"""Scenario tests of the lab, through its CLI, against one lab shared by the module.

Each test uses its own object names (prefix tNN-) and deletes what it made, so the tests do not
see each other's objects. Pods mount their volumes under the lab's directory, never at a shared
host path such as /data, so that other labs on the machine cannot meddle with them. The last
test stops and restarts the lab; the fixture then purges it and checks, with the leftover check of
conftest.py, that nothing is left.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from elastivol import BLOCK_DRIVER_NAME
from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from tests.lab.conftest import _recorded_processes, leftovers

Obj = dict[str, Any]
T = TypeVar("T")

ZONE = "topology.kubernetes.io/zone"
ATTACHER_FINALIZER = "external-attacher/block-csi-elastivol-io"
GI = 1 << 30


# -- the lab and its CLI ---------------------------------------------------------------------------
class Lab:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "ELASTIVOL_LAB_DIR": str(root)}

    def cli(self, *args: str, check: bool = True, stdin: str | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "elastivol", "lab", *args], env=self.env, input=stdin,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"`lab {' '.join(args)}` exited {proc.returncode}\nstdout: {proc.stdout}\n"
                                 f"stderr: {proc.stderr}")
        return proc

    def apply(self, *docs: Obj, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli("apply", "-f", "-", stdin=yaml.safe_dump_all(docs), check=check)

    def get(self, kind: str, name: str) -> Obj | None:
        proc = self.cli("get", kind, name, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" not in proc.stderr:
                raise AssertionError(f"`lab get {kind} {name}` failed: {proc.stderr}")
            return None
        loaded: Obj = json.loads(proc.stdout)
        return loaded

    def require(self, kind: str, name: str) -> Obj:
        obj = self.get(kind, name)
        assert obj is not None, f"{kind} {name} does not exist"
        return obj

    def items(self, kind: str) -> list[Obj]:
        listed: list[Obj] = json.loads(self.cli("get", kind, "-o", "json").stdout)["items"]
        return listed

    def events(self, kind: str, name: str) -> list[Obj]:
        return [e for e in self.items("events")
                if e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == name]

    def describe(self, kind: str, name: str) -> str:
        return self.cli("describe", kind, name).stdout

    def exec(self, pod: str, script: str) -> str:
        return self.cli("exec", pod, "--", "/bin/sh", "-c", script).stdout

    def delete(self, kind: str, name: str, *, wait: bool = True) -> None:
        self.cli("delete", kind, name, *([] if wait else ["--no-wait"]))

    def mount_dir(self, name: str) -> str:
        return str(self.root / "mnt" / name)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.3) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def phase(lab: Lab, kind: str, name: str) -> str | None:
    obj = lab.get(kind, name)
    return None if obj is None else (obj.get("status") or {}).get("phase")


def wait_phase(lab: Lab, kind: str, name: str, want: str, timeout: float = 60.0) -> Obj:
    def probe() -> Obj | None:
        obj = lab.get(kind, name)
        return obj if obj is not None and (obj.get("status") or {}).get("phase") == want else None
    try:
        return wait_for(f"{kind} {name} to be {want}", probe, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{lab.cli('describe', kind, name, check=False).stdout}") from None


def wait_gone(lab: Lab, kind: str, name: str, timeout: float = 60.0) -> None:
    wait_for(f"{kind} {name} to be gone", lambda: lab.get(kind, name) is None, timeout)


def wait_event(lab: Lab, kind: str, name: str, reason: str, timeout: float = 60.0) -> Obj:
    def probe() -> Obj | None:
        found = [e for e in lab.events(kind, name) if e["reason"] == reason]
        return found[-1] if found else None
    return wait_for(f"a {reason} event on {kind} {name}", probe, timeout)


def table_column(output: str, column: str, name: str) -> str:
    """A column of a `lab get` table for the row of ``name``."""
    lines = output.strip().splitlines()
    header = lines[0]
    start = header.index(column)
    rest = header[start + len(column):]
    end = start + len(column) + (len(rest) - len(rest.lstrip())) if rest.strip() else None
    for line in lines[1:]:
        if line.split()[0] == name:
            return line[start:end].strip()
    raise AssertionError(f"no row {name} in\n{output}")


# -- manifests ---------------------------------------------------------------------------------------
def storage_class(name: str, *, binding: str = "Immediate", reclaim: str = "Delete", expansion: bool = False,
                  parameters: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": BLOCK_DRIVER_NAME, "volumeBindingMode": binding, "reclaimPolicy": reclaim,
            "allowVolumeExpansion": expansion,
            "parameters": parameters if parameters is not None else {"type": "gp3", "csi.storage.k8s.io/fstype": "xfs"}}


def claim(name: str, class_name: str, *, size: str = "1Gi", modes: tuple[str, ...] = ("ReadWriteOnce",),
          **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": list(modes), "storageClassName": class_name,
                     "resources": {"requests": {"storage": size}}, **spec}}


def pod(name: str, claim_name: str, mount: str, *, zone: str | None = None, script: str | None = None) -> Obj:
    """A pod that appends the time to MOUNT/log every second (or runs ``script``)."""
    spec: Obj = {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "app", "image": "busybox", "command": ["/bin/sh", "-c"],
                        "args": [script or f"while true; do date >> {mount}/log; sleep 1; done"],
                        "volumeMounts": [{"name": "data", "mountPath": mount}]}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}],
    }
    if zone:
        spec["nodeSelector"] = {ZONE: zone}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def affinity_zones(pv: Obj) -> list[list[str]]:
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    return [e["values"] for t in terms for e in t.get("matchExpressions") or [] if e["key"] == ZONE]


# -- host state ---------------------------------------------------------------------------------------
def host_mounts() -> list[tuple[str, str]]:
    """(source, target) of every mount in this (the host's) mount namespace."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        out.append((fields[0], fields[1].replace("\\040", " ")))
    return out


def loop_backing_files() -> list[str]:
    found = []
    for f in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            found.append(f.read_text().strip())
        except OSError:
            continue
    return found


def image_path(lab: Lab, handle: str) -> Path:
    return lab.root / "pool" / "images" / f"{handle}.img"


def volume_listed(lab: Lab, handle: str) -> bool:
    proc = subprocess.run([sys.executable, "-m", "elastivol", "volume", "list", "--pool", str(lab.root / "pool")],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 0, proc.stderr
    return handle in proc.stdout


def block_controller(lab: Lab) -> CsiClient:
    return CsiClient(f"unix://{lab.root}/sockets/block-controller.sock", timeout=120)


# -- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """One lab for the module, in a fresh directory; `lab down --purge` at the end must leave nothing."""
    directory = Path(tempfile.mkdtemp(prefix="elastivol-scenarios-", dir="/var/tmp"))
    the_lab = Lab(directory)
    try:
        the_lab.cli("up", timeout=120)
        yield the_lab
    finally:
        recorded = _recorded_processes(directory)
        down = the_lab.cli("down", "--purge", check=False, timeout=240)
        left = leftovers(directory, recorded)
        still_there = directory.exists()
        if not any(item.startswith("mount ") for item in left):
            shutil.rmtree(directory, ignore_errors=True)
        assert down.returncode == 0, f"`lab down --purge` exited {down.returncode}:\n{down.stderr}"
        assert not left, "`lab down --purge` left these behind:\n  " + "\n  ".join(left)
        assert not still_there, f"{directory} is still there after `lab down --purge`"


# Deleted in this order: what uses a thing goes before it.
_CLEANUP_ORDER = ["StatefulSet", "Pod", "VolumeSnapshot", "PersistentVolumeClaim", "PersistentVolume",
                  "VolumeSnapshotClass", "StorageClass"]


class Made:
    """What a test made, deleted (and waited for) when the test ends."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.objects: list[tuple[str, str]] = []

    def apply(self, *docs: Obj) -> None:
        for d in docs:
            self.objects.append((d["kind"], d["metadata"]["name"]))
        self.lab.apply(*docs)

    def track(self, kind: str, name: str) -> None:
        self.objects.append((kind, name))

    def cleanup(self) -> None:
        for kind in _CLEANUP_ORDER:
            for k, name in reversed(self.objects):
                if k == kind and self.lab.get(kind, name) is not None:
                    self.lab.cli("delete", kind, name, "--timeout", "60", check=False)
                    wait_gone(self.lab, kind, name, 30)


@pytest.fixture
def made(lab: Lab) -> Iterator[Made]:
    m = Made(lab)
    yield m
    m.cleanup()


def pod_on_new_volume(lab: Lab, made: Made, tag: str) -> tuple[Obj, str]:
    """Make class ``TAG-gp3``, claim ``TAG-claim`` and pod ``TAG-pod`` (mounting it at the lab's ``TAG``
    dir); once the pod runs, that pod and the name of the PV bound to the claim."""
    made.apply(storage_class(f"{tag}-gp3"), claim(f"{tag}-claim", f"{tag}-gp3"),
               pod(f"{tag}-pod", f"{tag}-claim", lab.mount_dir(tag)))
    running = wait_phase(lab, "pod", f"{tag}-pod", "Running")
    return running, lab.require("pvc", f"{tag}-claim")["spec"]["volumeName"]


# -- 1. WaitForFirstConsumer -------------------------------------------------------------------------------
def test_wait_for_first_consumer_binds_in_the_zone_of_the_pods_node(lab: Lab, made: Made) -> None:
    made.apply(storage_class("t01-wffc", binding="WaitForFirstConsumer"), claim("t01-claim", "t01-wffc"))
    event = wait_event(lab, "PersistentVolumeClaim", "t01-claim", "WaitForFirstConsumer")
    assert event["message"] == "waiting for first consumer to be created before binding"
    time.sleep(2)  # several controller passes: nothing may be provisioned without a consumer
    pvc = lab.require("pvc", "t01-claim")
    assert pvc["status"]["phase"] == "Pending" and not pvc["spec"].get("volumeName")
    assert not [pv for pv in lab.items("pv") if (pv["spec"].get("claimRef") or {}).get("name") == "t01-claim"]

    made.apply(pod("t01-pod", "t01-claim", lab.mount_dir("t01"), zone="zone-b"))
    running = wait_phase(lab, "pod", "t01-pod", "Running")
    node = lab.require("node", running["spec"]["nodeName"])
    assert node["metadata"]["labels"][ZONE] == "zone-b"
    pvc = wait_phase(lab, "pvc", "t01-claim", "Bound")
    assert pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == node["metadata"]["name"]
    pv = lab.require("pv", pvc["spec"]["volumeName"])
    assert affinity_zones(pv) == [["zone-b"]]


# -- 2. Node affinity conflict ------------------------------------------------------------------------------
def test_pod_in_another_zone_than_its_bound_volume_stays_pending(lab: Lab, made: Made) -> None:
    mount = lab.mount_dir("t02")
    made.apply(storage_class("t02-wffc", binding="WaitForFirstConsumer"), claim("t02-claim", "t02-wffc"),
               pod("t02-first", "t02-claim", mount, zone="zone-a"))
    wait_phase(lab, "pod", "t02-first", "Running")
    pv_name = lab.require("pvc", "t02-claim")["spec"]["volumeName"]
    assert affinity_zones(lab.require("pv", pv_name)) == [["zone-a"]]
    lab.delete("pod", "t02-first")

    made.apply(pod("t02-second", "t02-claim", mount, zone="zone-c"))
    event = wait_event(lab, "Pod", "t02-second", "FailedScheduling")
    # kube-scheduler's wording: the reasons, each with its node count, sorted.
    assert event["message"] == ("0/3 nodes are available: 1 node(s) had volume node affinity conflict, "
                                "2 node(s) didn't match Pod's node affinity/selector.")
    time.sleep(2)
    second = lab.require("pod", "t02-second")
    assert second["status"]["phase"] == "Pending" and not second["spec"].get("nodeName")
    scheduled = [c for c in second["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert scheduled and scheduled[0]["status"] == "False" and scheduled[0]["reason"] == "Unschedulable"
    assert "volume node affinity conflict" in lab.describe("pod", "t02-second")
    assert lab.require("pvc", "t02-claim")["spec"]["volumeName"] == pv_name  # the claim keeps its volume


# -- 3. Provisioning errors are events -----------------------------------------------------------------------
def test_provisioning_errors_are_reported_as_events(lab: Lab, made: Made) -> None:
    made.apply(storage_class("t03-gp3"), claim("t03-rwx", "t03-gp3", modes=("ReadWriteMany",)),
               storage_class("t03-odd", parameters={"type": "gp3", "t03NoSuchKey": "1"}),
               claim("t03-odd-claim", "t03-odd"))
    rwx = wait_event(lab, "PersistentVolumeClaim", "t03-rwx", "ProvisioningFailed")
    assert rwx["type"] == "Warning"
    assert rwx["message"] == ('failed to provision volume with StorageClass "t03-gp3": rpc error: code = '
                              "InvalidArgument desc = Volume capabilities MULTI_NODE_MULTI_WRITER not supported. "
                              "Only AccessModes[ReadWriteOnce] supported.")
    odd = wait_event(lab, "PersistentVolumeClaim", "t03-odd-claim", "ProvisioningFailed")
    assert odd["type"] == "Warning"
    assert odd["message"].startswith('failed to provision volume with StorageClass "t03-odd": rpc error: code = '
                                     "InvalidArgument desc = ")
    assert "t03NoSuchKey" in odd["message"]
    for name in ("t03-rwx", "t03-odd-claim"):
        assert phase(lab, "pvc", name) == "Pending"
        assert "ProvisioningFailed" in lab.describe("pvc", name)
    assert not [pv for pv in lab.items("pv") if (pv["spec"].get("claimRef") or {}).get("name", "").startswith("t03-")]


# -- 4. Expansion ---------------------------------------------------------------------------------------------
def test_online_expansion_and_refused_resizes(lab: Lab, made: Made) -> None:
    mount = lab.mount_dir("t04")
    made.apply(storage_class("t04-grow", expansion=True), claim("t04-claim", "t04-grow"),
               pod("t04-pod", "t04-claim", mount),
               storage_class("t04-fixed"), claim("t04-fixed-claim", "t04-fixed"))
    wait_phase(lab, "pod", "t04-pod", "Running")

    def fs_bytes() -> int:
        return int(lab.exec("t04-pod", f"df -B1 --output=size {mount} | tail -n 1").strip())

    assert fs_bytes() < 1.1 * GI
    lines_before = wait_for("the pod to write", lambda: int(lab.exec("t04-pod", f"wc -l < {mount}/log")))
    lab.cli("patch", "pvc", "t04-claim", "-p", '{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}')

    def grown() -> Obj | None:
        pvc = lab.require("pvc", "t04-claim")
        return pvc if pvc["status"].get("capacity", {}).get("storage") == "2Gi" else None
    pvc = wait_for("status.capacity of t04-claim to be 2Gi", grown)
    assert not [c for c in pvc["status"].get("conditions") or [] if c["status"] == "True"]
    assert lab.require("pv", pvc["spec"]["volumeName"])["spec"]["capacity"]["storage"] == "2Gi"
    assert fs_bytes() > 1.9 * GI  # the mounted filesystem grew, seen from inside the pod
    event = wait_event(lab, "PersistentVolumeClaim", "t04-claim", "FileSystemResizeSuccessful")
    assert event["type"] == "Normal"
    assert phase(lab, "pod", "t04-pod") == "Running"
    wait_for("the pod to keep writing", lambda: int(lab.exec("t04-pod", f"wc -l < {mount}/log")) > lines_before + 1)

    # Shrinking is refused.
    shrink = lab.cli("patch", "pvc", "t04-claim", "-p", '{"spec":{"resources":{"requests":{"storage":"1Gi"}}}}',
                     check=False)
    assert shrink.returncode != 0
    assert 'The PersistentVolumeClaim "t04-claim" is invalid: spec.resources.requests.storage: Forbidden: ' \
           "field can not be less than" in shrink.stderr
    assert lab.require("pvc", "t04-claim")["spec"]["resources"]["requests"]["storage"] == "2Gi"

    # A class without allowVolumeExpansion: the API server refuses the patch.
    wait_phase(lab, "pvc", "t04-fixed-claim", "Bound")
    refused = lab.cli("patch", "pvc", "t04-fixed-claim", "-p",
                      '{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}', check=False)
    assert refused.returncode != 0
    assert ('persistentvolumeclaims "t04-fixed-claim" is forbidden: only dynamically provisioned pvc can be '
            "resized and the storageclass that provisions the pvc must support resize") in refused.stderr
    fixed = lab.require("pvc", "t04-fixed-claim")
    assert fixed["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert fixed["status"]["capacity"]["storage"] == "1Gi"


# -- 5. Snapshots -----------------------------------------------------------------------------------------------
def test_snapshot_and_restore_keep_the_data_written_before_the_snapshot(lab: Lab, made: Made) -> None:
    src_mount, dst_mount = lab.mount_dir("t05-src"), lab.mount_dir("t05-dst")
    payload = f"t05-{uuid.uuid4().hex}"
    made.apply(storage_class("t05-gp3"),
               {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                "metadata": {"name": "t05-snapclass"}, "driver": BLOCK_DRIVER_NAME, "deletionPolicy": "Delete"},
               claim("t05-src", "t05-gp3"), pod("t05-writer", "t05-src", src_mount))
    wait_phase(lab, "pod", "t05-writer", "Running")
    lab.exec("t05-writer", f"echo {payload} > {src_mount}/before.txt && sync")

    made.apply({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": "t05-snap"},
                "spec": {"volumeSnapshotClassName": "t05-snapclass", "source": {"persistentVolumeClaimName": "t05-src"}}})

    def ready() -> Obj | None:
        vs = lab.require("vs", "t05-snap")
        return vs if (vs.get("status") or {}).get("readyToUse") is True else None
    vs = wait_for("VolumeSnapshot t05-snap to be readyToUse", ready)
    assert vs["status"]["restoreSize"] == "1Gi"
    content = lab.require("vsc", vs["status"]["boundVolumeSnapshotContentName"])
    assert content["status"]["readyToUse"] is True and content["status"]["snapshotHandle"]
    lab.exec("t05-writer", f"echo later > {src_mount}/after.txt && sync")  # not in the snapshot

    made.apply(claim("t05-restored", "t05-gp3",
                     dataSource={"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "t05-snap"}),
               pod("t05-reader", "t05-restored", dst_mount))
    wait_phase(lab, "pod", "t05-reader", "Running", timeout=90)
    assert lab.exec("t05-reader", f"cat {dst_mount}/before.txt").strip() == payload
    assert lab.exec("t05-reader", f"test -e {dst_mount}/after.txt && echo yes || echo no").strip() == "no"
    src_pv = lab.require("pvc", "t05-src")["spec"]["volumeName"]
    dst_pv = lab.require("pvc", "t05-restored")["spec"]["volumeName"]
    assert src_pv != dst_pv


# -- 6. Static binding --------------------------------------------------------------------------------------------
def test_static_pv_binds_to_a_claim_that_names_it(lab: Lab, made: Made) -> None:
    with block_controller(lab) as client:
        volume = client.create_volume("t06-static-volume", GI, zone="zone-a", parameters={"type": "gp3"})
    handle = volume.volume_id
    try:
        made.apply(
            {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "t06-pv"},
             "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                      "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                      # create_volume's default capability formats the volume ext4.
                      "csi": {"driver": BLOCK_DRIVER_NAME, "volumeHandle": handle, "fsType": "ext4"},
                      "nodeAffinity": {"required": {"nodeSelectorTerms": [
                          {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["zone-a"]}]}]}}}},
            claim("t06-claim", "", volumeName="t06-pv"))
        pvc = wait_phase(lab, "pvc", "t06-claim", "Bound")
        pv = wait_phase(lab, "pv", "t06-pv", "Bound")
        assert pvc["spec"]["volumeName"] == "t06-pv"
        assert pvc["status"]["capacity"]["storage"] == "1Gi"
        assert pv["spec"]["claimRef"]["name"] == "t06-claim" and pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]

        # The scheduler honours the PV's zone: a pod with no selector of its own lands in zone-a.
        mount = lab.mount_dir("t06")
        made.apply(pod("t06-pod", "t06-claim", mount))
        running = wait_phase(lab, "pod", "t06-pod", "Running")
        assert lab.require("node", running["spec"]["nodeName"])["metadata"]["labels"][ZONE] == "zone-a"
        wait_for("the pod to write to the static volume", lambda: lab.exec("t06-pod", f"cat {mount}/log"))
    finally:
        made.cleanup()
        with block_controller(lab) as client:
            client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=handle), timeout=60)
    assert not image_path(lab, handle).exists()


# -- 7. Reclaim policy ---------------------------------------------------------------------------------------------
def test_reclaim_delete_removes_the_volume_and_retain_keeps_it(lab: Lab, made: Made) -> None:
    made.apply(storage_class("t07-delete"), claim("t07-del", "t07-delete"),
               storage_class("t07-retain", reclaim="Retain"), claim("t07-ret", "t07-retain"))
    deleted = wait_phase(lab, "pvc", "t07-del", "Bound")
    retained = wait_phase(lab, "pvc", "t07-ret", "Bound")
    del_pv, ret_pv = deleted["spec"]["volumeName"], retained["spec"]["volumeName"]
    del_handle = lab.require("pv", del_pv)["spec"]["csi"]["volumeHandle"]
    ret_handle = lab.require("pv", ret_pv)["spec"]["csi"]["volumeHandle"]
    assert lab.require("pv", ret_pv)["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    for handle in (del_handle, ret_handle):
        assert image_path(lab, handle).exists() and volume_listed(lab, handle)

    lab.delete("pvc", "t07-del")
    wait_gone(lab, "pv", del_pv)
    assert not image_path(lab, del_handle).exists()
    assert not volume_listed(lab, del_handle)

    lab.delete("pvc", "t07-ret")
    wait_phase(lab, "pv", ret_pv, "Released")
    time.sleep(2)  # nothing deletes it later either
    assert phase(lab, "pv", ret_pv) == "Released"
    assert image_path(lab, ret_handle).exists() and volume_listed(lab, ret_handle)
    lab.delete("pv", ret_pv)
    assert image_path(lab, ret_handle).exists(), "deleting a Retain PV must keep its volume"
    with block_controller(lab) as client:
        client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=ret_handle), timeout=60)
    assert not image_path(lab, ret_handle).exists()


# -- 8. Claim protection ---------------------------------------------------------------------------------------------
def test_claim_in_use_stays_terminating_until_its_pod_is_gone(lab: Lab, made: Made) -> None:
    _, pv_name = pod_on_new_volume(lab, made, "t08")
    lab.delete("pvc", "t08-claim", wait=False)
    time.sleep(2)
    pvc = lab.require("pvc", "t08-claim")
    assert pvc["metadata"].get("deletionTimestamp")
    assert "kubernetes.io/pvc-protection" in pvc["metadata"]["finalizers"]
    assert table_column(lab.cli("get", "pvc", "t08-claim").stdout, "STATUS", "t08-claim") == "Terminating"
    assert phase(lab, "pod", "t08-pod") == "Running"
    assert lab.require("pv", pv_name)["status"]["phase"] == "Bound"

    lab.delete("pod", "t08-pod")
    wait_gone(lab, "pvc", "t08-claim")
    wait_gone(lab, "pv", pv_name)


# -- 9. Deleting the PV of a running pod -----------------------------------------------------------------------------
def test_attached_pv_stays_terminating_and_says_why(lab: Lab, made: Made) -> None:
    running, pv_name = pod_on_new_volume(lab, made, "t09")
    node = running["spec"]["nodeName"]
    handle = lab.require("pv", pv_name)["spec"]["csi"]["volumeHandle"]
    assert ATTACHER_FINALIZER in lab.require("pv", pv_name)["metadata"]["finalizers"]

    lab.delete("pv", pv_name, wait=False)

    def explained() -> str | None:
        text = lab.describe("pv", pv_name)
        return text if ATTACHER_FINALIZER in text and f"still attached to node {node}" in text else None
    text = wait_for(f"describe pv {pv_name} to explain why it is stuck", explained, timeout=30)
    assert "Terminating" in text
    pv = lab.require("pv", pv_name)
    assert pv["metadata"].get("deletionTimestamp")
    assert ATTACHER_FINALIZER in pv["metadata"]["finalizers"]
    assert table_column(lab.cli("get", "pv", pv_name).stdout, "STATUS", pv_name) == "Terminating"
    time.sleep(2)
    assert lab.get("pv", pv_name) is not None
    assert phase(lab, "pod", "t09-pod") == "Running"

    lab.delete("pod", "t09-pod")
    lab.delete("pvc", "t09-claim")
    wait_gone(lab, "pv", pv_name)
    assert not image_path(lab, handle).exists()


# -- 10. Pod lifecycle: attach, mount, unmount, detach ---------------------------------------------------------------
def test_volume_attachment_follows_the_pod(lab: Lab, made: Made) -> None:
    running, pv_name = pod_on_new_volume(lab, made, "t10")
    node = running["spec"]["nodeName"]
    handle = lab.require("pv", pv_name)["spec"]["csi"]["volumeHandle"]
    image = str(image_path(lab, handle))
    kubelet = str(lab.root / "kubelet") + "/"

    vas = [va for va in lab.items("volumeattachment") if va["spec"]["source"]["persistentVolumeName"] == pv_name]
    assert len(vas) == 1
    assert vas[0]["spec"]["nodeName"] == node and vas[0]["spec"]["attacher"] == BLOCK_DRIVER_NAME
    assert vas[0]["status"]["attached"] is True
    mounts = [t for _s, t in host_mounts() if t.startswith(kubelet)]
    assert any(pv_name in t for t in mounts), mounts  # published
    assert image in loop_backing_files()
    assert handle in lab.require("node", node)["status"]["volumesInUse"]

    lab.delete("pod", "t10-pod")
    wait_for("the VolumeAttachment to be gone", lambda: not [
        va for va in lab.items("volumeattachment") if va["spec"]["source"]["persistentVolumeName"] == pv_name])
    staging = hashlib.sha256(handle.encode()).hexdigest()  # the kubelet's staging directory for the volume
    left = [t for _s, t in host_mounts() if t.startswith(kubelet) and (pv_name in t or staging in t)]
    assert not left, left
    assert image not in loop_backing_files()
    assert handle not in (lab.require("node", node)["status"].get("volumesInUse") or [])
    assert sorted(lab.require("pv", pv_name)["metadata"]["finalizers"]) == [
        "external-provisioner.volume.kubernetes.io/finalizer", "kubernetes.io/pv-protection"]


# -- 11. StatefulSet ----------------------------------------------------------------------------------------------------
def test_statefulset_replicas_keep_their_claims(lab: Lab, made: Made) -> None:
    mount = lab.mount_dir("db")
    made.apply(storage_class("t11-wffc", binding="WaitForFirstConsumer"))
    for i in (0, 1):  # the StatefulSet makes them; deleting it leaves the claims, as in Kubernetes
        made.track("Pod", f"db-{i}")
        made.track("PersistentVolumeClaim", f"data-db-{i}")
    made.apply({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "replicas": 2, "selector": {"matchLabels": {"app": "t11-db"}},
                 "template": {"metadata": {"labels": {"app": "t11-db"}},
                              "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                                  "name": "db", "image": "busybox", "command": ["/bin/sh", "-c"],
                                  "args": [f"while true; do date >> {mount}/wal.log; sleep 1; done"],
                                  "volumeMounts": [{"name": "data", "mountPath": mount}]}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                     "accessModes": ["ReadWriteOnce"], "storageClassName": "t11-wffc",
                     "resources": {"requests": {"storage": "1Gi"}}}}]}})
    first = wait_phase(lab, "pod", "db-0", "Running", timeout=90)
    wait_phase(lab, "pod", "db-1", "Running", timeout=90)
    volumes = {}
    for i in (0, 1):
        pvc = wait_phase(lab, "pvc", f"data-db-{i}", "Bound")
        volumes[i] = pvc["spec"]["volumeName"]
        claims = [v["persistentVolumeClaim"]["claimName"] for v in lab.require("pod", f"db-{i}")["spec"]["volumes"]]
        assert claims == [f"data-db-{i}"]
    assert volumes[0] != volumes[1]
    lab.exec("db-0", f"echo written-by-db-0 > {mount}/marker && sync")
    lab.exec("db-1", f"echo written-by-db-1 > {mount}/marker && sync")

    lab.delete("pod", "db-0")

    def replaced() -> Obj | None:
        p = lab.get("pod", "db-0")
        ok = p is not None and p["metadata"]["uid"] != first["metadata"]["uid"] and p["status"].get("phase") == "Running"
        return p if ok else None
    wait_for("a new db-0 to run", replaced, timeout=90)
    assert lab.exec("db-0", f"cat {mount}/marker").strip() == "written-by-db-0"
    assert lab.require("pvc", "data-db-0")["spec"]["volumeName"] == volumes[0]
    # db-1 was not touched: it still runs on its own volume.
    assert phase(lab, "pod", "db-1") == "Running"
    assert lab.exec("db-1", f"cat {mount}/marker").strip() == "written-by-db-1"
    wal = lab.exec("db-1", f"wc -l < {mount}/wal.log").strip()
    wait_for("db-1 to keep writing its log", lambda: int(lab.exec("db-1", f"wc -l < {mount}/wal.log")) > int(wal))


# -- 12. Fields and kinds the lab does not play ---------------------------------------------------------------------------
def test_unsupported_field_or_kind_is_refused_and_nothing_is_created(lab: Lab) -> None:
    probe_pod = pod("t12-probe", "t12-none", lab.mount_dir("t12"))
    probe_pod["spec"]["containers"][0]["livenessProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 5}
    refused = lab.apply(probe_pod, check=False)
    assert refused.returncode != 0
    assert "spec.containers[0].livenessProbe" in refused.stderr
    assert lab.get("pod", "t12-probe") is None

    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t12-config"}, "data": {"a": "b"}}
    refused = lab.apply(config_map, check=False)
    assert refused.returncode != 0
    assert '"ConfigMap"' in refused.stderr
    names = [o["metadata"]["name"] for kind in ("pod", "pvc", "pv", "sc", "sts", "deploy")
             for o in lab.items(kind)]
    assert not [n for n in names if n.startswith("t12-")]
    assert not list((lab.root / "store").rglob("t12-*"))


# -- 13. lab down and up again (last: it restarts the lab) ------------------------------------------------------------------
def test_down_and_up_again_keeps_pods_and_data(lab: Lab, made: Made) -> None:
    mount = lab.mount_dir("t13")
    made.apply(storage_class("t13-gp3"), claim("t13-claim", "t13-gp3"), pod("t13-pod", "t13-claim", mount))
    before = wait_phase(lab, "pod", "t13-pod", "Running")
    digest = lab.exec("t13-pod", f"head -c 1048576 /dev/urandom > {mount}/blob && sync && "
                                 f"sha256sum {mount}/blob").split()[0]
    assert len(digest) == 64

    recorded = _recorded_processes(lab.root)
    lab.cli("down")
    left = leftovers(lab.root, recorded)
    assert not left, left
    assert lab.root.joinpath("lab.json").exists()  # the objects and volumes are kept

    lab.cli("up", timeout=120)
    after = wait_phase(lab, "pod", "t13-pod", "Running", timeout=90)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert lab.exec("t13-pod", f"sha256sum {mount}/blob").split()[0] == digest
    assert lab.require("pvc", "t13-claim")["status"]["phase"] == "Bound"
