from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from elastivol.lab import describe as d
from elastivol.lab import jsonpath as jp
from elastivol.lab import printers as p

NOW = datetime(2026, 12, 1, 21, 31, 0, tzinfo=UTC)
T0 = "2026-12-01T21:30:00Z"  # 60s before NOW

Obj = dict[str, Any]


def ago(seconds: int) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pvc(**over: Any) -> Obj:
    o: Obj = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "ebs-claim", "namespace": "default", "uid": "u-1", "creationTimestamp": T0,
                     "annotations": {"pv.kubernetes.io/bind-completed": "yes",
                                     "volume.kubernetes.io/selected-node": "node-a"},
                     "finalizers": ["kubernetes.io/pvc-protection"]},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "4Gi"}},
                 "storageClassName": "ebs-sc", "volumeMode": "Filesystem", "volumeName": "pvc-123"},
        "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce", "ReadWriteOncePod"],
                   "capacity": {"storage": "4Gi"}},
        "_usedBy": ["app", "aaa"],
    }
    o.update(over)
    return o


def pv() -> Obj:
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pvc-123", "creationTimestamp": ago(3 * 3600 + 5 * 60),
                     "finalizers": ["kubernetes.io/pv-protection"]},
        "spec": {"capacity": {"storage": "4Gi"}, "accessModes": ["ReadWriteMany", "ReadOnlyMany"],
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "ebs-sc",
                 "claimRef": {"namespace": "default", "name": "ebs-claim", "uid": "u-1"},
                 "volumeMode": "Block",
                 "csi": {"driver": "ebs.csi.elastivol.io", "fsType": "ext4", "volumeHandle": "vol-0abc",
                         "volumeAttributes": {"zone": "zone-a", "storage.kubernetes.io/csiProvisionerIdentity": "x"}},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-a"]}]}]}}},
        "status": {"phase": "Bound"},
    }


def pod(phase: str = "Running", statuses: list[Obj] | None = None, **meta: Any) -> Obj:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": "default", "creationTimestamp": T0, "labels": {"app": "web"}, **meta},
        "spec": {"nodeName": "node-a",
                 "containers": [{"name": "app", "image": "busybox", "command": ["sh", "-c"], "args": ["sleep 1d"],
                                 "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                                  {"name": "cfg", "mountPath": "/cfg", "readOnly": True}],
                                 "volumeDevices": [{"name": "raw", "devicePath": "/dev/xvda"}]}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "ebs-claim"}},
                             {"name": "scratch", "emptyDir": {}}]},
        "status": {"phase": phase, "hostIP": "10.0.0.5", "podIP": "10.1.0.7", "podIPs": [{"ip": "10.1.0.7"}],
                   "containerStatuses": statuses if statuses is not None else [
                       {"name": "app", "ready": True, "restartCount": 0,
                        "state": {"running": {"startedAt": T0}}}],
                   "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]},
    }


def event(reason: str, kind: str = "Warning", count: int = 1, first: int = 20, last: int = 5, msg: str = "m") -> Obj:
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"ebs-claim.{reason}", "namespace": "default"},
            "involvedObject": {"kind": "PersistentVolumeClaim", "name": "ebs-claim", "namespace": "default"},
            "reason": reason, "message": msg, "type": kind, "count": count,
            "firstTimestamp": ago(first), "lastTimestamp": ago(last),
            "source": {"component": "ebs.csi.elastivol.io_provisioner"}}


def row(kind: str, obj: Obj, **kw: Any) -> dict[str, str]:
    headers, rows = p.table(kind, [obj], now=NOW, **kw)
    assert len(rows) == 1 and len(rows[0]) == len(headers)
    return dict(zip(headers, rows[0], strict=True))


# ---------------------------------------------------------------- ages


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (1, "1s"), (95, "95s"), (119, "119s"), (120, "2m"),
    (185, "3m5s"), (599, "9m59s"), (600, "10m"), (45 * 60 + 30, "45m"), (179 * 60, "179m"), (3 * 3600, "3h"),
    (3 * 3600 + 5 * 60 + 9, "3h5m"), (8 * 3600 - 1, "7h59m"), (8 * 3600, "8h"), (26 * 3600, "26h"),
    (48 * 3600, "2d"), (3 * 86400 + 5 * 3600, "3d5h"), (8 * 86400 - 1, "7d23h"), (8 * 86400, "8d"),
    (45 * 86400, "45d"), (729 * 86400, "729d"), (730 * 86400, "2y"), ((730 + 30) * 86400, "2y30d"),
    (3 * 365 * 86400, "3y"), (8 * 365 * 86400 + 40 * 86400, "8y"),
])
def test_human_duration(seconds: int, text: str) -> None:
    assert p.human_duration(timedelta(seconds=seconds)) == text


def test_age_column_uses_now_and_marks_missing_timestamps() -> None:
    assert row("PersistentVolumeClaim", pvc())["AGE"] == "60s"
    no_ts = pvc(metadata={"name": "x"})
    assert row("PersistentVolumeClaim", no_ts)["AGE"] == "<unknown>"


# ---------------------------------------------------------------- tables


def test_pvc_table_columns_and_cells() -> None:
    headers, rows = p.table("PersistentVolumeClaim", [pvc()], now=NOW)
    assert headers == ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS",
                       "VOLUMEATTRIBUTESCLASS", "AGE"]
    assert rows == [["ebs-claim", "Bound", "pvc-123", "4Gi", "RWO,RWOP", "ebs-sc", "<unset>", "60s"]]
    wide = row("persistentvolumeclaim", pvc(), wide=True)
    assert list(wide)[-1] == "VOLUMEMODE" and wide["VOLUMEMODE"] == "Filesystem"


def test_pvc_pending_unbound_and_terminating() -> None:
    pending = pvc(spec={"storageClassName": "ebs-sc", "accessModes": ["ReadWriteOnce"]}, status={"phase": "Pending"})
    r = row("PersistentVolumeClaim", pending)
    assert (r["STATUS"], r["VOLUME"], r["CAPACITY"], r["ACCESS MODES"]) == ("Pending", "", "", "")
    gone = pvc()
    gone["metadata"] = {**gone["metadata"], "deletionTimestamp": ago(3)}
    assert row("PersistentVolumeClaim", gone)["STATUS"] == "Terminating"


def test_show_kind_prefixes_names_like_a_multi_kind_get() -> None:
    assert row("PersistentVolumeClaim", pvc(), show_kind=True)["NAME"] == "persistentvolumeclaim/ebs-claim"
    assert row("PersistentVolume", pv(), show_kind=True)["NAME"] == "persistentvolume/pvc-123"
    assert row("Pod", pod(), show_kind=True)["NAME"] == "pod/app"
    assert row("VolumeSnapshot", {"metadata": {"name": "x"}}, show_kind=True)["NAME"] == \
        "volumesnapshot.snapshot.storage.k8s.io/x"
    assert row("VolumeAttachment", {"metadata": {"name": "csi-1"}}, show_kind=True)["NAME"] == \
        "volumeattachment.storage.k8s.io/csi-1"


def test_pv_table() -> None:
    r = row("PersistentVolume", pv(), wide=True)
    assert r == {"NAME": "pvc-123", "CAPACITY": "4Gi", "ACCESS MODES": "ROX,RWX", "RECLAIM POLICY": "Delete",
                 "STATUS": "Bound", "CLAIM": "default/ebs-claim", "STORAGECLASS": "ebs-sc",
                 "VOLUMEATTRIBUTESCLASS": "<unset>", "REASON": "", "AGE": "3h5m", "VOLUMEMODE": "Block"}


@pytest.mark.parametrize(("phase", "statuses", "ready", "status"), [
    ("Running", None, "1/1", "Running"),
    ("Pending", [{"name": "app", "ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}}],
     "0/1", "ContainerCreating"),
    ("Running", [{"name": "app", "ready": False, "restartCount": 4,
                  "state": {"waiting": {"reason": "CrashLoopBackOff"}}}], "0/1", "CrashLoopBackOff"),
    ("Succeeded", [{"name": "app", "ready": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
     "0/1", "Completed"),
    ("Failed", [{"name": "app", "ready": False, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}],
     "0/1", "Error"),
    ("Failed", [{"name": "app", "ready": False, "state": {"terminated": {"exitCode": 137}}}], "0/1", "ExitCode:137"),
    ("Pending", [], "0/1", "Pending"),
])
def test_pod_ready_and_status(phase: str, statuses: list[Obj] | None, ready: str, status: str) -> None:
    r = row("Pod", pod(phase, statuses))
    assert (r["READY"], r["STATUS"]) == (ready, status)


def test_pod_terminating_restarts_and_wide_columns() -> None:
    assert row("Pod", pod(deletionTimestamp=ago(2)))["STATUS"] == "Terminating"
    crashed = [{"name": "app", "ready": True, "restartCount": 3, "state": {"running": {"startedAt": ago(30)}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(35)}}}]
    r = row("Pod", pod("Running", crashed), wide=True)
    assert r["RESTARTS"] == "3 (35s ago)"
    assert list(r) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE",
                       "READINESS GATES"]
    assert (r["IP"], r["NODE"], r["NOMINATED NODE"], r["READINESS GATES"]) == ("10.1.0.7", "node-a", "<none>", "<none>")


def test_storage_class_default_marker_and_defaults() -> None:
    sc: Obj = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
          "metadata": {"name": "gp3", "creationTimestamp": ago(30 * 86400),
                       "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
          "provisioner": "ebs.csi.elastivol.io"}
    headers, rows = p.table("StorageClass", [sc], now=NOW)
    assert headers == ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"]
    assert rows == [["gp3 (default)", "ebs.csi.elastivol.io", "Delete", "Immediate", "false", "30d"]]
    assert row("StorageClass", sc, show_kind=True)["NAME"] == "storageclass.storage.k8s.io/gp3 (default)"
    sc["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "false"}
    sc.update(reclaimPolicy="Retain", volumeBindingMode="WaitForFirstConsumer", allowVolumeExpansion=True)
    assert p.table("StorageClass", [sc], now=NOW)[1][0][:5] == [
        "gp3", "ebs.csi.elastivol.io", "Retain", "WaitForFirstConsumer", "true"]


def test_attachment_and_snapshot_tables() -> None:
    va = {"kind": "VolumeAttachment", "metadata": {"name": "csi-abc", "creationTimestamp": T0},
          "spec": {"attacher": "ebs.csi.elastivol.io", "nodeName": "node-a",
                   "source": {"persistentVolumeName": "pvc-123"}}, "status": {"attached": True}}
    assert p.table("VolumeAttachment", [va], now=NOW) == (
        ["NAME", "ATTACHER", "PV", "NODE", "ATTACHED", "AGE"],
        [["csi-abc", "ebs.csi.elastivol.io", "pvc-123", "node-a", "true", "60s"]])
    vs = {"kind": "VolumeSnapshot", "metadata": {"name": "snap", "namespace": "default", "creationTimestamp": T0},
          "spec": {"source": {"persistentVolumeClaimName": "ebs-claim"}, "volumeSnapshotClassName": "csi-snap"},
          "status": {"readyToUse": True, "restoreSize": "4Gi", "boundVolumeSnapshotContentName": "snapcontent-1",
                     "creationTime": ago(55)}}
    assert p.table("VolumeSnapshot", [vs], now=NOW) == (
        ["NAME", "READYTOUSE", "SOURCEPVC", "SOURCESNAPSHOTCONTENT", "RESTORESIZE", "SNAPSHOTCLASS",
         "SNAPSHOTCONTENT", "CREATIONTIME", "AGE"],
        [["snap", "true", "ebs-claim", "", "4Gi", "csi-snap", "snapcontent-1", "55s", "60s"]])
    fresh = {"kind": "VolumeSnapshot", "metadata": {"name": "snap", "creationTimestamp": T0}, "spec": {}}
    assert p.table("VolumeSnapshot", [fresh], now=NOW)[1] == [["snap", "", "", "", "", "", "", "", "60s"]]
    vsc = {"kind": "VolumeSnapshotContent", "metadata": {"name": "snapcontent-1", "creationTimestamp": T0},
           "spec": {"deletionPolicy": "Delete", "driver": "ebs.csi.elastivol.io", "volumeSnapshotClassName": "csi-snap",
                    "volumeSnapshotRef": {"name": "snap", "namespace": "default"}},
           "status": {"readyToUse": False, "restoreSize": 4294967296}}
    assert p.table("VolumeSnapshotContent", [vsc], now=NOW) == (
        ["NAME", "READYTOUSE", "RESTORESIZE", "DELETIONPOLICY", "DRIVER", "VOLUMESNAPSHOTCLASS", "VOLUMESNAPSHOT",
         "VOLUMESNAPSHOTNAMESPACE", "AGE"],
        [["snapcontent-1", "false", "4294967296", "Delete", "ebs.csi.elastivol.io", "csi-snap", "snap", "default",
          "60s"]])
    vsclass = {"kind": "VolumeSnapshotClass", "metadata": {"name": "csi-snap", "creationTimestamp": T0},
               "driver": "ebs.csi.elastivol.io", "deletionPolicy": "Retain"}
    assert p.table("VolumeSnapshotClass", [vsclass], now=NOW) == (
        ["NAME", "DRIVER", "DELETIONPOLICY", "AGE"], [["csi-snap", "ebs.csi.elastivol.io", "Retain", "60s"]])


def test_workload_node_and_event_tables() -> None:
    template = {"spec": {"containers": [{"name": "app", "image": "busybox"}, {"name": "side", "image": "pause"}]}}
    sts = {"kind": "StatefulSet", "metadata": {"name": "web", "creationTimestamp": T0},
           "spec": {"replicas": 3, "template": template}, "status": {"readyReplicas": 2}}
    assert p.table("StatefulSet", [sts], now=NOW) == (["NAME", "READY", "AGE"], [["web", "2/3", "60s"]])
    assert row("StatefulSet", sts, wide=True)["IMAGES"] == "busybox,pause"
    dep = {"kind": "Deployment", "metadata": {"name": "api", "creationTimestamp": T0},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}}, "template": template},
           "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}}
    assert p.table("Deployment", [dep], now=NOW) == (
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], [["api", "1/2", "2", "1", "60s"]])
    assert row("Deployment", dep, wide=True)["SELECTOR"] == "app=api"
    node = {"kind": "Node", "metadata": {"name": "node-a", "creationTimestamp": ago(5 * 86400),
                                         "labels": {"topology.kubernetes.io/zone": "zone-a",
                                                    "node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
                       "nodeInfo": {"kubeletVersion": "v1.31.0-lab"}}}
    r = row("Node", node, wide=True)
    assert (r["STATUS"], r["ROLES"], r["AGE"], r["VERSION"]) == ("Ready,SchedulingDisabled", "control-plane", "5d",
                                                                 "v1.31.0-lab")
    assert (r["INTERNAL-IP"], r["EXTERNAL-IP"], r["OS-IMAGE"], r["ZONE"]) == ("10.0.0.5", "<none>", "<unknown>",
                                                                              "zone-a")
    headers, rows = p.table("Event", [event("ProvisioningFailed", count=3, msg=" no space \n")], now=NOW)
    assert headers == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert rows == [["5s", "Warning", "ProvisioningFailed", "persistentvolumeclaim/ebs-claim", "no space"]]
    r = row("Event", event("ProvisioningFailed", count=3), wide=True)
    assert (r["FIRST SEEN"], r["COUNT"], r["SOURCE"], r["NAME"]) == ("20s", "3", "ebs.csi.elastivol.io_provisioner",
                                                                     "ebs-claim.ProvisioningFailed")


def test_unknown_kind_raises_key_error() -> None:
    with pytest.raises(KeyError):
        p.table("ConfigMap", [], now=NOW)


@pytest.mark.parametrize("kind", ["PersistentVolumeClaim", "PersistentVolume", "Pod", "StorageClass",
                                  "VolumeAttachment", "VolumeSnapshot", "VolumeSnapshotContent",
                                  "VolumeSnapshotClass", "StatefulSet", "Deployment", "Node", "Event"])
def test_every_kind_prints_a_bare_object(kind: str) -> None:
    bare: Obj = {"kind": kind, "metadata": {"name": "x"}}
    for wide in (False, True):
        headers, rows = p.table(kind, [bare], now=NOW, wide=wide, show_kind=True)
        assert len(rows[0]) == len(headers)
    text = d.describe(bare, [], now=NOW)
    assert text.splitlines()[-1].startswith("Events:") and text.splitlines()[-1].endswith("<none>")


# ---------------------------------------------------------------- render_table


def test_render_table_aligns_like_kubectl() -> None:
    text = p.render_table(["name", "status", "age"], [["ebs-claim", "Bound", "5s"], ["a", "Pending", ""]])
    assert text.splitlines() == [
        "NAME        STATUS    AGE",
        "ebs-claim   Bound     5s",
        "a           Pending",
    ]
    assert p.render_table(["IP", "X"], [["1", "2"]]) == "IP    X\n1     2"  # kubectl's minimum width of 6


# ---------------------------------------------------------------- describe


def test_describe_pvc_sections_and_events() -> None:
    events = [event("ProvisioningFailed", count=3, first=20, last=5, msg="no space left  "),
              event("Provisioning", kind="Normal", first=50, last=50, msg="External provisioner is provisioning")]
    text = d.describe(pvc(), events, now=NOW)
    assert text.splitlines() == [
        "Name:          ebs-claim",
        "Namespace:     default",
        "StorageClass:  ebs-sc",
        "Status:        Bound",
        "Volume:        pvc-123",
        "Labels:        <none>",
        "Annotations:   pv.kubernetes.io/bind-completed: yes",
        "               volume.kubernetes.io/selected-node: node-a",
        "Finalizers:    [kubernetes.io/pvc-protection]",
        "Capacity:      4Gi",
        "Access Modes:  RWO,RWOP",
        "VolumeMode:    Filesystem",
        "Used By:       aaa",
        "               app",
        "Events:",
        "  Type     Reason              Age               From                              Message",
        "  ----     ------              ----              ----                              -------",
        "  Normal   Provisioning        50s               ebs.csi.elastivol.io_provisioner  "
        "External provisioner is provisioning",
        "  Warning  ProvisioningFailed  5s (x3 over 20s)  ebs.csi.elastivol.io_provisioner  no space left",
    ]
    assert "_usedBy" not in text


def test_describe_pvc_without_events_terminating_and_conditions() -> None:
    obj = pvc(_usedBy=[], status={"phase": "Bound", "conditions": [
        {"type": "Resizing", "status": "True", "lastTransitionTime": "2026-12-01T21:30:00Z"}]})
    obj["metadata"] = {**obj["metadata"], "deletionTimestamp": ago(7), "labels": {"b": "2", "a": "1"}}
    lines = d.describe(obj, [], now=NOW).splitlines()
    assert "Status:        Terminating (lasts 7s)" in lines
    assert "Labels:        a=1" in lines and "               b=2" in lines
    assert "Used By:       <none>" in lines
    assert "Conditions:" in lines
    assert any(ln.startswith("  Resizing ") and "Tue, 01 Dec 2026 21:30:00 +0000" in ln and
               "Mon, 01 Jan 0001 00:00:00 +0000" in ln for ln in lines)
    assert lines[-1] == "Events:      <none>"  # aligned with the Conditions rows above, as tabwriter does
    assert all(ln == ln.rstrip() for ln in lines)


def test_describe_pv_node_affinity_and_csi_source() -> None:
    text = d.describe(pv(), [], now=NOW)
    lines = text.splitlines()
    assert "Namespace:" not in text
    for expected in ("Claim:             default/ebs-claim", "Reclaim Policy:    Delete", "Access Modes:      ROX,RWX",
                     "VolumeMode:        Block", "Capacity:          4Gi", "Node Affinity:",
                     "  Required Terms:", "    Term 0:        topology.kubernetes.io/zone in [zone-a]", "Source:",
                     "Finalizers:        [kubernetes.io/pv-protection]"):
        assert expected in lines, expected
    source = lines[lines.index("Source:") + 1:]
    assert source[:7] == [
        "    Type:              CSI (a Container Storage Interface (CSI) volume source)",
        "    Driver:            ebs.csi.elastivol.io",
        "    FSType:            ext4",
        "    VolumeHandle:      vol-0abc",
        "    ReadOnly:          false",
        "    VolumeAttributes:  storage.kubernetes.io/csiProvisionerIdentity=x",
        "                       zone=zone-a",
    ]


def test_describe_pod() -> None:
    obj = pod("Pending", [{"name": "app", "ready": False, "restartCount": 0,
                           "state": {"waiting": {"reason": "ContainerCreating"}}}])
    lines = d.describe(obj, [], now=NOW).splitlines()
    for expected in ("Node:         node-a/10.0.0.5", "Labels:       app=web", "Status:       Pending",
                     "Containers:", "  app:", "    Image:         busybox", "    Command:", "      sh", "      -c",
                     "    Args:", "      sleep 1d", "    State:          Waiting", "      Reason:       ContainerCreating",
                     "    Ready:          False", "    Restart Count:  0", "    Mounts:",
                     "      /cfg from cfg (ro)", "      /data from data (rw)", "    Devices:",
                     "      /dev/xvda from raw", "Conditions:", "  Type           Status", "  PodScheduled   True",
                     "Volumes:", "  data:", "  scratch:"):
        assert expected in lines, expected
    assert any(ln.startswith("    Type:") and "PersistentVolumeClaim (a reference" in ln for ln in lines)
    assert any(ln.startswith("    ClaimName:") and ln.endswith("ebs-claim") for ln in lines)
    assert any("EmptyDir (a temporary directory" in ln for ln in lines)
    running = d.describe(pod(), [], now=NOW).splitlines()
    assert "    State:          Running" in running
    assert "      Started:      Tue, 01 Dec 2026 21:30:00 +0000" in running


def test_describe_storage_class_parameters() -> None:
    sc = {"kind": "StorageClass", "metadata": {"name": "gp3", "annotations": {
        "storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "ebs.csi.elastivol.io", "parameters": {"type": "gp3", "fsType": "ext4"},
        "allowedTopologies": [{"matchLabelExpressions": [{"key": "topology.kubernetes.io/zone",
                                                           "values": ["zone-a", "zone-b"]}]}]}
    lines = d.describe(sc, [], now=NOW).splitlines()
    assert lines[:7] == [
        "Name:                  gp3",
        "IsDefaultClass:        Yes",
        "Annotations:           storageclass.kubernetes.io/is-default-class=true",
        "Provisioner:           ebs.csi.elastivol.io",
        "Parameters:            fsType=ext4",
        "                       type=gp3",
        "AllowVolumeExpansion:  <unset>",
    ]
    assert "AllowedTopologies:" in lines
    assert "  Term 0:              topology.kubernetes.io/zone in [zone-a, zone-b]" in lines


def test_describe_volume_snapshot_generic_layout() -> None:
    vs = {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
          "metadata": {"name": "snap", "namespace": "default", "uid": "abc", "creationTimestamp": T0,
                       "_rev": 3},
          "spec": {"source": {"persistentVolumeClaimName": "ebs-claim"}, "volumeSnapshotClassName": "csi-snap"},
          "status": {"readyToUse": True, "restoreSize": "4Gi", "boundVolumeSnapshotContentName": "snapcontent-1"}}
    text = d.describe(vs, [event("SnapshotReady", kind="Normal")], now=NOW)
    lines = text.splitlines()
    assert lines[:6] == ["Name:         snap", "Namespace:    default", "Labels:       <none>",
                         "Annotations:  <none>", "API Version:  snapshot.storage.k8s.io/v1", "Kind:         VolumeSnapshot"]
    assert "Spec:" in lines and "  Source:" in lines and "Status:" in lines
    assert "    Persistent Volume Claim Name:  ebs-claim" in lines
    assert "  Volume Snapshot Class Name:      csi-snap" in lines
    assert "  Ready To Use:                        true" in lines
    assert "  UID:                 abc" in lines
    assert "Rev" not in text and "_rev" not in text
    assert lines[-4:-1] == ["Events:", "  Type    Reason         Age   From                              Message",
                            "  ----    ------         ----  ----                              -------"]
    assert lines[-1] == "  Normal  SnapshotReady  20s   ebs.csi.elastivol.io_provisioner  m"


def test_describe_events_sorted_by_last_timestamp() -> None:
    events = [event("Late", last=1, first=1), event("Early", last=90, first=90), event("Mid", last=30, first=30)]
    lines = d.describe(pvc(), events, now=NOW).splitlines()
    assert [ln.split()[1] for ln in lines[-3:]] == ["Early", "Mid", "Late"]


# ---------------------------------------------------------------- -o yaml / json


def test_yaml_and_json_strip_private_keys() -> None:
    obj = pvc()
    obj["spec"]["_hidden"] = {"x": 1}
    obj["status"]["conditions"] = [{"type": "Resizing", "_note": "n"}]
    text = p.to_yaml([obj], single=True)
    assert text.startswith("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: ebs-claim\n")
    assert text.endswith("\n") and not text.endswith("\n\n")
    single = yaml.safe_load(text)
    assert single["metadata"]["name"] == "ebs-claim" and "_usedBy" not in single
    assert "_hidden" not in single["spec"] and single["status"]["conditions"] == [{"type": "Resizing"}]
    assert list(single) == ["apiVersion", "kind", "metadata", "spec", "status"]
    listing = json.loads(p.to_json([obj, pv()], single=False))
    assert listing["apiVersion"] == "v1" and listing["kind"] == "List"
    assert listing["metadata"] == {"resourceVersion": ""}
    assert [i["metadata"]["name"] for i in listing["items"]] == ["ebs-claim", "pvc-123"]
    assert '"_' not in json.dumps(listing)
    assert "_usedBy" in obj  # input untouched
    assert p.to_json([obj], single=True).startswith('{\n    "apiVersion": "v1"')
    assert yaml.safe_load(p.to_yaml([], single=False))["items"] == []
    with pytest.raises(ValueError):
        p.to_json([obj, obj], single=True)


# ---------------------------------------------------------------- jsonpath


def _listing() -> Obj:
    snap = {"metadata": {"name": "a"}, "status": {"snapshotHandle": "h-1", "readyToUse": True, "restoreSize": 10}}
    snap2 = {"metadata": {"name": "b"}, "status": {"snapshotHandle": "h-2", "readyToUse": False, "restoreSize": 20}}
    return {"kind": "List", "items": [snap, snap2]}


@pytest.mark.parametrize(("expr", "out"), [
    ("{.metadata.name}", "ebs-claim"),
    ("{.spec.resources.requests.storage}", "4Gi"),
    ("{.spec.accessModes}", '["ReadWriteOnce"]'),
    ("{.spec.accessModes[0]}", "ReadWriteOnce"),
    ("{.spec.resources}", '{"requests":{"storage":"4Gi"}}'),
    ("{.metadata.annotations.volume\\.kubernetes\\.io/selected-node}", "node-a"),
    ("{.metadata.annotations['volume.kubernetes.io/selected-node']}", "node-a"),
    ("{.status.conditions[?(@.type==\"Ready\")].status}", "True"),
    ("{.status.conditions[?(@.type=='Resizing')].reason}", "Expanding"),
    ("{.status.conditions[?(@.type!=\"Ready\")].type}", "Resizing"),
    ("{.status.conditions[*].type}", "Ready Resizing"),
    ("{.status.conditions[-1].type}", "Resizing"),
    ("phase={.status.phase}, class={.spec.storageClassName}", "phase=Bound, class=ebs-sc"),
    ("{.status.missing}", ""),
    ("{.nope.deeper[3].x}", ""),
    ("{$.metadata.name}", "ebs-claim"),
    ('{.metadata.name}{"\\n"}', "ebs-claim\n"),
    ("no braces", "no braces"),
])
def test_jsonpath_on_an_object(expr: str, out: str) -> None:
    obj = pvc()
    obj["status"]["conditions"] = [{"type": "Ready", "status": "True"},
                                   {"type": "Resizing", "status": "False", "reason": "Expanding"}]
    assert jp.jsonpath(obj, expr) == out


@pytest.mark.parametrize(("expr", "out"), [
    ("{.items[0].metadata.name}", "a"),
    ("{.items[*].status.snapshotHandle}", "h-1 h-2"),
    ("{.items[*].status.readyToUse}", "true false"),
    ("{.items[*].status.restoreSize}", "10 20"),
    ("{.items[?(@.status.readyToUse==true)].metadata.name}", "a"),
    ("{.items[?(@.status.restoreSize>15)].metadata.name}", "b"),
    ("{.items[?(@.status.snapshotHandle)].metadata.name}", "a b"),
    ("{.items[0:1].metadata.name}", "a"),
    ('{range .items[*]}{.metadata.name}={.status.snapshotHandle}{"\\n"}{end}', "a=h-1\nb=h-2\n"),
])
def test_jsonpath_on_a_list(expr: str, out: str) -> None:
    assert jp.jsonpath(_listing(), expr) == out


def test_jsonpath_hides_private_keys() -> None:
    assert jp.jsonpath(pvc(), "{._usedBy}") == ""


@pytest.mark.parametrize("expr", ["{..name}", "{.metadata.name", "{.a}}", "{}", "{.items[?(@.x ~ 1)]}",
                                  "{range .items[*]}{.a}", "{end}", "{len .items}", "{.items[abc]}"])
def test_jsonpath_rejects_unsupported_syntax(expr: str) -> None:
    with pytest.raises(ValueError, match="JSONPath"):
        jp.jsonpath(_listing(), expr)
