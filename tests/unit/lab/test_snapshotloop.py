"""The snapshot and group snapshot loops' shared part (lab/snapshotloop.py) on a real store, without a driver:
the class a snapshot is taken with, what is said when there is none, and the content a snapshot binds to.

Only the object side runs here (``_sync_object``): the content side calls the CSI driver, which the
lab tests (tests/lab/test_examples.py 03 and 14) exercise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from elastivol import BLOCK_DRIVER_NAME, FILE_DRIVER_NAME
from elastivol.lab.context import Context
from elastivol.lab.groupsnapshotter import GroupSnapshotter
from elastivol.lab.layout import LabConfig, Layout
from elastivol.lab.snapshotloop import SnapshotLoop
from elastivol.lab.snapshotter import Snapshotter
from elastivol.lab.store import Store

Obj = dict[str, Any]
SNAP = "snapshot.storage.k8s.io/v1"
GROUP = "groupsnapshot.storage.k8s.io/v1"


def bound_claim(store: Store, name: str, driver: str = BLOCK_DRIVER_NAME) -> None:
    store.create({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"pv-{name}"},
                  "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "volumeMode": "Block",
                           "csi": {"driver": driver, "volumeHandle": f"vol-{name}"}}})
    store.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                  "metadata": {"name": name, "labels": {"group": "g"}},
                  "spec": {"volumeName": f"pv-{name}"}, "status": {"phase": "Bound"}})


def snapshot_class(store: Store, kind: str, name: str, driver: str, default: bool = False) -> None:
    annotations = {f"{'group' if 'Group' in kind else ''}snapshot.storage.kubernetes.io/is-default-class": "true"}
    store.create({"apiVersion": GROUP if "Group" in kind else SNAP, "kind": kind,
                  "metadata": {"name": name, "annotations": annotations if default else {}},
                  "driver": driver, "deletionPolicy": "Retain", "parameters": {"tag": name}})


def one_pass(tmp_path: Path, loop: type[SnapshotLoop], obj: Obj, setup: Any) -> tuple[Store, Obj, list[Obj]]:
    """Make the store, run one pass of the loop's object side over ``obj``; the object after it, and its events."""
    store = Store(tmp_path)
    setup(store)
    created = store.create(obj)
    loop(Context(layout=Layout(tmp_path), config=LabConfig(nodes=[], zones=[]), store=store))._sync_object(created)
    after = store.get(obj["kind"], obj["metadata"]["name"], "default")
    assert after is not None
    return store, after, store.events_for(after)


def vs(class_name: str | None = None) -> Obj:
    spec: Obj = {"source": {"persistentVolumeClaimName": "data"}}
    if class_name:
        spec["volumeSnapshotClassName"] = class_name
    return {"apiVersion": SNAP, "kind": "VolumeSnapshot", "metadata": {"name": "snap"}, "spec": spec}


def vgs(class_name: str | None = None) -> Obj:
    spec: Obj = {"source": {"selector": {"matchLabels": {"group": "g"}}}}
    if class_name:
        spec["volumeGroupSnapshotClassName"] = class_name
    return {"apiVersion": GROUP, "kind": "VolumeGroupSnapshot", "metadata": {"name": "both"}, "spec": spec}


SNAPSHOT_PROBLEMS = [
    ("named-class-missing", vs("gone"), [], 'volumesnapshotclass.snapshot.storage.k8s.io "gone" not found'),
    ("no-default-class", vs(), [("c", BLOCK_DRIVER_NAME, False)],
     f"cannot find a default snapshot class for driver {BLOCK_DRIVER_NAME}: name one in spec.volumeSnapshotClassName "
     'or mark one with the annotation snapshot.storage.kubernetes.io/is-default-class: "true"'),
    ("two-default-classes", vs(), [("c1", BLOCK_DRIVER_NAME, True), ("c2", BLOCK_DRIVER_NAME, True)],
     f"cannot find a default snapshot class for driver {BLOCK_DRIVER_NAME}: name one in spec.volumeSnapshotClassName "
     'or mark one with the annotation snapshot.storage.kubernetes.io/is-default-class: "true"'),
    ("class-of-another-driver", vs("efs"), [("efs", FILE_DRIVER_NAME, False)],
     f"VolumeSnapshotClass efs is for driver {FILE_DRIVER_NAME}, but claim data lives on {BLOCK_DRIVER_NAME}"),
]


@pytest.mark.parametrize(("obj", "classes", "message"), [p[1:] for p in SNAPSHOT_PROBLEMS],
                         ids=[p[0] for p in SNAPSHOT_PROBLEMS])
def test_a_snapshot_without_a_usable_class_says_why(tmp_path: Path, obj: Obj, classes: list[tuple[str, str, bool]],
                                                     message: str) -> None:
    def setup(store: Store) -> None:
        bound_claim(store, "data")
        for name, driver, default in classes:
            snapshot_class(store, "VolumeSnapshotClass", name, driver, default)
    store, after, events = one_pass(tmp_path, Snapshotter, obj, setup)
    assert after["status"]["error"]["message"] == message
    assert after["status"]["readyToUse"] is False
    assert "boundVolumeSnapshotContentName" not in after["status"]
    assert [(e["type"], e["reason"], e["message"]) for e in events] == \
        [("Warning", "SnapshotContentCreationFailed", message)]
    assert store.list_of("VolumeSnapshotContent") == []


GROUP_PROBLEMS = [
    ("named-class-missing", vgs("gone"), [], 'volumegroupsnapshotclass.groupsnapshot.storage.k8s.io "gone" not found'),
    ("no-default-class", vgs(), [("c", BLOCK_DRIVER_NAME, False)],
     f"cannot find a default group snapshot class for driver {BLOCK_DRIVER_NAME}: name one in "
     'spec.volumeGroupSnapshotClassName or annotate one with groupsnapshot.storage.kubernetes.io/is-default-class: '
     '"true"'),
    ("class-of-another-driver", vgs("efs"), [("efs", FILE_DRIVER_NAME, False)],
     f"VolumeGroupSnapshotClass efs is for driver {FILE_DRIVER_NAME}, but the selected claims live on "
     f"{BLOCK_DRIVER_NAME}"),
]


@pytest.mark.parametrize(("obj", "classes", "message"), [p[1:] for p in GROUP_PROBLEMS],
                         ids=[p[0] for p in GROUP_PROBLEMS])
def test_a_group_snapshot_without_a_usable_class_says_why(tmp_path: Path, obj: Obj,
                                                          classes: list[tuple[str, str, bool]], message: str) -> None:
    def setup(store: Store) -> None:
        bound_claim(store, "data")
        bound_claim(store, "wal")
        for name, driver, default in classes:
            snapshot_class(store, "VolumeGroupSnapshotClass", name, driver, default)
    store, after, events = one_pass(tmp_path, GroupSnapshotter, obj, setup)
    assert after["status"]["error"]["message"] == message
    assert [(e["type"], e["reason"], e["message"]) for e in events] == \
        [("Warning", "GroupSnapshotContentCreationFailed", message)]
    assert store.list_of("VolumeGroupSnapshotContent") == []


def test_a_snapshot_binds_to_a_content_made_from_its_default_class(tmp_path: Path) -> None:
    def setup(store: Store) -> None:
        bound_claim(store, "data")
        snapshot_class(store, "VolumeSnapshotClass", "other", FILE_DRIVER_NAME, default=True)
        snapshot_class(store, "VolumeSnapshotClass", "mine", BLOCK_DRIVER_NAME, default=True)
    store, after, events = one_pass(tmp_path, Snapshotter, vs(), setup)
    uid = after["metadata"]["uid"]
    assert after["metadata"]["finalizers"] == ["snapshot.storage.kubernetes.io/volumesnapshot-bound-protection",
                                               "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection"]
    assert after["status"] == {"boundVolumeSnapshotContentName": f"snapcontent-{uid}", "readyToUse": False}
    [content] = store.list_of("VolumeSnapshotContent")
    assert content["metadata"]["name"] == f"snapcontent-{uid}"
    assert content["metadata"]["finalizers"] == ["snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"]
    assert list(content["spec"].items()) == [
        ("deletionPolicy", "Retain"), ("driver", BLOCK_DRIVER_NAME), ("source", {"volumeHandle": "vol-data"}),
        ("sourceVolumeMode", "Block"), ("volumeSnapshotClassName", "mine"),
        ("volumeSnapshotRef", {"apiVersion": SNAP, "kind": "VolumeSnapshot", "name": "snap", "namespace": "default",
                               "uid": uid})]
    assert [e["reason"] for e in events] == ["CreatingSnapshot"]


def test_a_group_snapshot_binds_to_a_content_with_every_selected_volume(tmp_path: Path) -> None:
    def setup(store: Store) -> None:
        bound_claim(store, "wal")
        bound_claim(store, "data")
        snapshot_class(store, "VolumeGroupSnapshotClass", "together", BLOCK_DRIVER_NAME)
    store, after, events = one_pass(tmp_path, GroupSnapshotter, vgs("together"), setup)
    uid = after["metadata"]["uid"]
    assert after["metadata"]["finalizers"] == [
        "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-bound-protection"]
    assert after["status"] == {"boundVolumeGroupSnapshotContentName": f"groupsnapcontent-{uid}", "readyToUse": False}
    [content] = store.list_of("VolumeGroupSnapshotContent")
    assert list(content["spec"].items()) == [
        ("deletionPolicy", "Retain"), ("driver", BLOCK_DRIVER_NAME),
        ("source", {"volumeHandles": ["vol-data", "vol-wal"]}), ("volumeGroupSnapshotClassName", "together"),
        ("volumeGroupSnapshotRef", {"apiVersion": GROUP, "kind": "VolumeGroupSnapshot", "name": "both",
                                    "namespace": "default", "uid": uid})]
    assert [(e["reason"], e["message"]) for e in events] == [
        ("CreatingGroupSnapshot", "Waiting for a group snapshot default/both of 2 claims (data, wal) to be created by "
                                  "the CSI driver.")]
