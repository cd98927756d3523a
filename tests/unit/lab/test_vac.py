"""VolumeAttributesClass in the lab's API-server part: the kind, its immutability, the claim field, the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from elastivol.lab.apply import Invalid, apply_object, patch_object
from elastivol.lab.kinds import resolve_kind
from elastivol.lab.printers import table
from elastivol.lab.store import Store

Obj = dict[str, Any]
FS_ID = "fs-0123456789abcdef0"


def vac(name: str = "io2", **params: str) -> Obj:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttributesClass", "metadata": {"name": name},
            "driverName": "block.csi.elastivol.io", "parameters": params or {"type": "io2", "iops": "5000"}}


def test_vac_is_a_kind_with_its_short_name() -> None:
    assert resolve_kind("vac").name == "VolumeAttributesClass"
    assert resolve_kind("volumeattributesclasses.storage.k8s.io").name == "VolumeAttributesClass"


def test_vac_parameters_and_driver_are_immutable(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert apply_object(store, vac(), FS_ID) == "volumeattributesclass.storage.k8s.io/io2 created"
    assert apply_object(store, vac(), FS_ID) == "volumeattributesclass.storage.k8s.io/io2 unchanged"
    with pytest.raises(Invalid, match="updates to parameters are forbidden"):
        apply_object(store, vac(type="io2", iops="6000"), FS_ID)
    with pytest.raises(Invalid, match="driverName: Required value"):
        apply_object(store, {**vac("nodriver"), "driverName": ""}, FS_ID)


def test_a_claim_may_change_its_class(tmp_path: Path) -> None:
    store = Store(tmp_path)
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "gp3",
                      "resources": {"requests": {"storage": "4Gi"}}, "volumeAttributesClassName": "gp3-base"}}
    apply_object(store, claim, FS_ID)
    assert patch_object(store, "pvc", "data", "default", '{"spec":{"volumeAttributesClassName":"io2"}}') == \
        "persistentvolumeclaim/data patched"
    got = store.get("PersistentVolumeClaim", "data", "default")
    assert got is not None and got["spec"]["volumeAttributesClassName"] == "io2"


def test_the_claim_column_shows_the_class_the_volume_has() -> None:
    claim: Obj = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                  "metadata": {"name": "data", "namespace": "default", "creationTimestamp": "2026-12-01T21:30:00Z"},
                  "spec": {"volumeName": "pv-1", "volumeAttributesClassName": "io2"},
                  "status": {"phase": "Bound", "currentVolumeAttributesClassName": "gp3-base",
                             "modifyVolumeStatus": {"targetVolumeAttributesClassName": "io2", "status": "InProgress"}}}
    headers, rows = table("PersistentVolumeClaim", [claim])
    assert rows[0][headers.index("VOLUMEATTRIBUTESCLASS")] == "gp3-base"
    del claim["status"]["currentVolumeAttributesClassName"]
    headers, rows = table("PersistentVolumeClaim", [claim])
    assert rows[0][headers.index("VOLUMEATTRIBUTESCLASS")] == "<unset>"
    headers, rows = table("VolumeAttributesClass", [{**vac(), "metadata": {"name": "io2"}}])
    assert headers[:2] == ["NAME", "DRIVERNAME"] and rows[0][:2] == ["io2", "block.csi.elastivol.io"]
