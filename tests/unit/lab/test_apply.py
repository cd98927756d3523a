"""The lab's API-server part without a running lab: the object store (resourceVersion conflicts,
finalizers, events) and `lab apply` / `lab patch` (validation, defaults, admission, RFC 7386)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from elastivol.lab import store as store_mod
from elastivol.lab.apply import Invalid, apply_object, load_documents, merge_patch, patch_object, validate
from elastivol.lab.store import AlreadyExistsError, Conflict, NotFoundError, Store

Obj = dict[str, Any]
FS_ID = "fs-0123456789abcdef0"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


def sc(name: str = "gp3", **over: Any) -> Obj:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": "block.csi.elastivol.io", "parameters": {"type": "gp3"}, **over}


def pvc(name: str = "data", size: str = "4Gi", class_name: str = "gp3", **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class_name,
                     "resources": {"requests": {"storage": size}}, **spec}}


def pod(name: str = "app", **container: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "1"], **container}]}}


def bind(store: Store, name: str = "data") -> None:
    """Play the PV controller: the claim is Bound at its requested size."""
    obj = store.require("PersistentVolumeClaim", name, "default")
    obj["spec"]["volumeName"] = f"pvc-{obj['metadata']['uid']}"
    obj["status"] = {"phase": "Bound", "capacity": {"storage": obj["spec"]["resources"]["requests"]["storage"]}}
    store.update(obj)


# -- Store: create, update, conflicts --------------------------------------------------------------
def test_create_assigns_identity_and_refuses_a_second_object_of_the_same_name(store: Store) -> None:
    made = store.create(pvc())
    meta = made["metadata"]
    assert meta["namespace"] == "default" and meta["uid"] and meta["creationTimestamp"] and meta["resourceVersion"]
    assert store.get("PersistentVolumeClaim", "data", "default") == made
    assert store.get("PersistentVolumeClaim", "data", "other") is None
    with pytest.raises(AlreadyExistsError, match='persistentvolumeclaims "data" already exists'):
        store.create(pvc())
    cluster = store.create({**sc(), "metadata": {"name": "gp3", "namespace": "ignored"}})
    assert "namespace" not in cluster["metadata"]  # cluster-scoped kinds have none


def test_update_bumps_the_resource_version(store: Store) -> None:
    first = store.create(pvc())
    again = store.require("PersistentVolumeClaim", "data", "default")
    again["metadata"]["labels"] = {"a": "b"}
    written = store.update(again)
    assert int(written["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert store.require("PersistentVolumeClaim", "data", "default")["metadata"]["labels"] == {"a": "b"}


def test_update_from_a_stale_copy_is_a_conflict(store: Store) -> None:
    store.create(pvc())
    mine = store.require("PersistentVolumeClaim", "data", "default")
    theirs = store.require("PersistentVolumeClaim", "data", "default")
    theirs["metadata"]["labels"] = {"who": "them"}
    store.update(theirs)
    mine["metadata"]["labels"] = {"who": "me"}
    with pytest.raises(Conflict):
        store.update(mine)
    assert store.require("PersistentVolumeClaim", "data", "default")["metadata"]["labels"] == {"who": "them"}


def test_update_of_a_recreated_object_is_a_conflict(store: Store) -> None:
    store.create(pvc())
    old = store.require("PersistentVolumeClaim", "data", "default")
    store.remove("PersistentVolumeClaim", "data", "default")
    store.create(pvc())
    fresh = store.require("PersistentVolumeClaim", "data", "default")
    old["metadata"]["resourceVersion"] = fresh["metadata"]["resourceVersion"]  # same version, other object
    with pytest.raises(Conflict):
        store.update(old)


def test_update_of_a_missing_object_is_not_found(store: Store) -> None:
    obj = store.create(pvc())
    store.remove("PersistentVolumeClaim", "data", "default")
    with pytest.raises(NotFoundError, match='persistentvolumeclaims "data" not found'):
        store.update(obj)


def test_list_of_one_namespace_or_all(store: Store) -> None:
    store.create(pvc("a"))
    store.create({**pvc("b"), "metadata": {"name": "b", "namespace": "team"}})
    assert [o["metadata"]["name"] for o in store.list_of("PersistentVolumeClaim", "default")] == ["a"]
    assert sorted(o["metadata"]["name"] for o in store.list_of("PersistentVolumeClaim")) == ["a", "b"]
    assert store.list_of("PersistentVolume") == []


# -- Store: deletion and finalizers -----------------------------------------------------------------
def test_delete_without_finalizers_removes_at_once(store: Store) -> None:
    store.create(sc())
    assert store.delete("StorageClass", "gp3") is not None
    assert store.get("StorageClass", "gp3") is None
    assert store.delete("StorageClass", "gp3") is None


def test_delete_with_finalizers_marks_and_the_last_finalizer_removes(store: Store) -> None:
    claim = pvc()
    claim["metadata"]["finalizers"] = ["kubernetes.io/pvc-protection", "example.com/other"]
    store.create(claim)
    store.delete("PersistentVolumeClaim", "data", "default")
    marked = store.require("PersistentVolumeClaim", "data", "default")
    stamp, version = marked["metadata"]["deletionTimestamp"], marked["metadata"]["resourceVersion"]
    assert stamp

    # A second delete changes nothing: the first deletionTimestamp stays.
    store.delete("PersistentVolumeClaim", "data", "default")
    again = store.require("PersistentVolumeClaim", "data", "default")
    assert again["metadata"]["deletionTimestamp"] == stamp and again["metadata"]["resourceVersion"] == version

    again["metadata"]["finalizers"].remove("example.com/other")
    store.update(again)
    still = store.require("PersistentVolumeClaim", "data", "default")
    assert still["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]

    still["metadata"]["finalizers"] = []
    store.update(still)
    assert store.get("PersistentVolumeClaim", "data", "default") is None


def test_a_scheduled_pod_is_deleted_gracefully_an_unscheduled_one_at_once(store: Store) -> None:
    scheduled = pod("on-node")
    scheduled["spec"]["nodeName"] = "node-1"
    store.create(scheduled)
    store.create(pod("nowhere"))
    store.delete("Pod", "on-node", "default")
    store.delete("Pod", "nowhere", "default")
    assert store.require("Pod", "on-node", "default")["metadata"]["deletionTimestamp"]
    assert store.get("Pod", "nowhere", "default") is None


# -- Store: events ------------------------------------------------------------------------------------
def test_a_repeated_event_is_counted_not_duplicated(store: Store) -> None:
    claim = store.create(pvc())
    store.event(claim, "Warning", "ProvisioningFailed", "no room", "external-provisioner")
    store.event(claim, "Warning", "ProvisioningFailed", "no room", "external-provisioner")
    store.event(claim, "Warning", "ProvisioningFailed", "no room", "external-provisioner")
    store.event(claim, "Warning", "ProvisioningFailed", "other reason", "external-provisioner")
    events = store.events_for(claim)
    assert len(events) == 2
    counted = {e["message"]: e["count"] for e in events}
    assert counted == {"no room": 3, "other reason": 1}
    first = next(e for e in events if e["message"] == "no room")
    assert first["involvedObject"] == {"kind": "PersistentVolumeClaim", "name": "data", "namespace": "default",
                                       "uid": claim["metadata"]["uid"], "apiVersion": "v1"}
    assert first["type"] == "Warning" and first["source"] == {"component": "external-provisioner"}
    assert first["firstTimestamp"] <= first["lastTimestamp"]


def test_events_belong_to_one_object_and_are_trimmed(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "MAX_EVENTS_PER_OBJECT", 3)
    claim = store.create(pvc())
    other = store.create(pvc("other"))
    for i in range(5):
        store.event(claim, "Normal", "Step", f"step {i}", "test")
    store.event(other, "Normal", "Step", "mine", "test")
    assert [e["message"] for e in store.events_for(claim)] == ["step 2", "step 3", "step 4"]
    assert [e["message"] for e in store.events_for(other)] == ["mine"]
    store.drop_events_of(claim)
    assert store.events_for(claim) == []
    assert len(store.events_for(other)) == 1


# -- apply: created / unchanged / configured -----------------------------------------------------------
def test_apply_creates_then_is_unchanged_then_configures(store: Store) -> None:
    assert apply_object(store, sc(), FS_ID) == "storageclass.storage.k8s.io/gp3 created"
    assert apply_object(store, sc(), FS_ID) == "storageclass.storage.k8s.io/gp3 unchanged"
    assert apply_object(store, sc(allowVolumeExpansion=True), FS_ID) == "storageclass.storage.k8s.io/gp3 configured"
    assert store.require("StorageClass", "gp3")["allowVolumeExpansion"] is True
    assert apply_object(store, sc(allowVolumeExpansion=True), FS_ID) == "storageclass.storage.k8s.io/gp3 unchanged"

    assert apply_object(store, pvc(), FS_ID) == "persistentvolumeclaim/data created"
    version = store.require("PersistentVolumeClaim", "data", "default")["metadata"]["resourceVersion"]
    assert apply_object(store, pvc(), FS_ID) == "persistentvolumeclaim/data unchanged"
    assert store.require("PersistentVolumeClaim", "data", "default")["metadata"]["resourceVersion"] == version
    labelled = pvc()
    labelled["metadata"]["labels"] = {"app": "db"}
    assert apply_object(store, labelled, FS_ID) == "persistentvolumeclaim/data configured"
    assert store.require("PersistentVolumeClaim", "data", "default")["metadata"]["labels"] == {"app": "db"}


def test_reapplying_keeps_what_the_controllers_filled_in(store: Store) -> None:
    apply_object(store, sc(), FS_ID)
    apply_object(store, pvc(), FS_ID)
    bind(store)
    assert apply_object(store, pvc(), FS_ID) == "persistentvolumeclaim/data unchanged"
    assert store.require("PersistentVolumeClaim", "data", "default")["spec"]["volumeName"].startswith("pvc-")

    apply_object(store, pod(), FS_ID)
    scheduled = store.require("Pod", "app", "default")
    scheduled["spec"]["nodeName"] = "node-1"
    store.update(scheduled)
    assert apply_object(store, pod(), FS_ID) == "pod/app unchanged"
    assert store.require("Pod", "app", "default")["spec"]["nodeName"] == "node-1"


def test_labels_of_a_volume_without_node_affinity_can_change(store: Store) -> None:
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "static"},
          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                   "csi": {"driver": "block.csi.elastivol.io", "volumeHandle": "vol-1"}}}
    assert apply_object(store, pv, FS_ID) == "persistentvolume/static created"
    assert apply_object(store, pv, FS_ID) == "persistentvolume/static unchanged"
    assert patch_object(store, "pv", "static", "default", '{"metadata": {"labels": {"tier": "gold"}}}') == \
        "persistentvolume/static patched"
    assert store.require("PersistentVolume", "static")["metadata"]["labels"] == {"tier": "gold"}


def test_apply_sets_the_api_servers_defaults(store: Store) -> None:
    apply_object(store, sc(), FS_ID)
    made = store.require("StorageClass", "gp3")
    assert made["reclaimPolicy"] == "Delete" and made["volumeBindingMode"] == "Immediate"
    apply_object(store, pvc(), FS_ID)
    claim = store.require("PersistentVolumeClaim", "data", "default")
    assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    assert claim["spec"]["volumeMode"] == "Filesystem" and claim["status"] == {"phase": "Pending"}


def test_apply_picks_the_default_storage_class(store: Store) -> None:
    default = sc("standard")
    default["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    apply_object(store, sc("other"), FS_ID)
    apply_object(store, default, FS_ID)
    claim = pvc()
    del claim["spec"]["storageClassName"]
    apply_object(store, claim, FS_ID)
    assert store.require("PersistentVolumeClaim", "data", "default")["spec"]["storageClassName"] == "standard"


def test_apply_substitutes_the_file_system_id(store: Store) -> None:
    efs = sc("efs", provisioner="file.csi.elastivol.io",
             parameters={"provisioningMode": "efs-ap", "fileSystemId": "LAB_FILE_SYSTEM_ID"})
    apply_object(store, efs, FS_ID)
    assert store.require("StorageClass", "efs")["parameters"]["fileSystemId"] == FS_ID


def test_apply_refuses_an_object_being_deleted(store: Store) -> None:
    apply_object(store, pvc(), FS_ID)
    store.delete("PersistentVolumeClaim", "data", "default")
    with pytest.raises(Invalid, match="is being deleted"):
        apply_object(store, pvc(), FS_ID)


# -- apply: immutability and resize admission -------------------------------------------------------------
@pytest.mark.parametrize("change", [
    {"accessModes": ["ReadWriteMany"]},
    {"storageClassName": "other"},
    {"volumeMode": "Block"},
])
def test_a_pvc_spec_is_immutable_except_its_requests(store: Store, change: Obj) -> None:
    apply_object(store, sc(), FS_ID)
    apply_object(store, pvc(), FS_ID)
    before = store.require("PersistentVolumeClaim", "data", "default")
    changed = pvc()
    changed["spec"].update(change)
    with pytest.raises(Invalid) as refused:
        apply_object(store, changed, FS_ID)
    assert str(refused.value) == ('The PersistentVolumeClaim "data" is invalid: spec: Forbidden: spec is immutable '
                                  "after creation except resources.requests and volumeAttributesClassName for bound "
                                  "claims")
    assert store.require("PersistentVolumeClaim", "data", "default") == before


def test_a_storage_class_keeps_its_parameters(store: Store) -> None:
    apply_object(store, sc(), FS_ID)
    with pytest.raises(Invalid, match="updates to parameters, provisioner, reclaimPolicy and volumeBindingMode"):
        apply_object(store, sc(parameters={"type": "io2"}), FS_ID)


def test_a_bound_claim_grows_if_its_class_allows_it(store: Store) -> None:
    apply_object(store, sc(allowVolumeExpansion=True), FS_ID)
    apply_object(store, pvc(), FS_ID)
    bind(store)
    assert apply_object(store, pvc(size="8Gi"), FS_ID) == "persistentvolumeclaim/data configured"
    assert store.require("PersistentVolumeClaim", "data", "default")["spec"]["resources"]["requests"]["storage"] == "8Gi"
    with pytest.raises(Invalid, match=r"spec\.resources\.requests\.storage: Forbidden: field can not be less than"):
        apply_object(store, pvc(size="4Gi"), FS_ID)


def test_a_claim_of_a_class_without_expansion_cannot_grow(store: Store) -> None:
    apply_object(store, sc(), FS_ID)
    apply_object(store, pvc(), FS_ID)
    bind(store)
    patch = json.dumps({"spec": {"resources": {"requests": {"storage": "8Gi"}}}})
    with pytest.raises(Invalid) as refused:
        patch_object(store, "pvc", "data", "default", patch)
    assert str(refused.value) == ('persistentvolumeclaims "data" is forbidden: only dynamically provisioned pvc can '
                                  "be resized and the storageclass that provisions the pvc must support resize")
    assert store.require("PersistentVolumeClaim", "data", "default")["spec"]["resources"]["requests"]["storage"] == "4Gi"


def test_an_unbound_claim_cannot_grow(store: Store) -> None:
    apply_object(store, sc(allowVolumeExpansion=True), FS_ID)
    apply_object(store, pvc(), FS_ID)
    with pytest.raises(Invalid, match="spec is immutable after creation"):
        apply_object(store, pvc(size="8Gi"), FS_ID)


# -- validation ------------------------------------------------------------------------------------------------
def test_an_unsupported_field_is_named_by_its_path(store: Store) -> None:
    probed = pod(livenessProbe={"exec": {"command": ["true"]}})
    with pytest.raises(Invalid, match=r"spec\.containers\[0\]\.livenessProbe"):
        apply_object(store, probed, FS_ID)
    assert store.get("Pod", "app", "default") is None


def test_an_unsupported_kind_is_named() -> None:
    with pytest.raises(Invalid, match='does not play kind "ConfigMap"'):
        validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}})


@pytest.mark.parametrize(("obj", "message"), [
    ({"apiVersion": "v1", "metadata": {"name": "x"}}, "has no kind"),
    ({**pvc(), "apiVersion": "v2"}, 'wants apiVersion "v1"'),
    ({**pvc(), "metadata": {}}, "metadata.name is required"),
    (pvc(size="lots"), "resources[storage]"),
    (pvc(accessModes=[]), "at least 1 access mode is required"),
    (pvc(accessModes=["ReadWriteOncePod", "ReadWriteOnce"]), "may not use ReadWriteOncePod with other access modes"),
    ({**sc(), "reclaimPolicy": "Recycle"}, 'reclaimPolicy: Unsupported value: "Recycle"'),
])
def test_invalid_objects_are_refused(obj: Obj, message: str) -> None:
    with pytest.raises(Invalid) as refused:
        validate(obj)
    assert message in str(refused.value)


def test_load_documents_reads_every_document_and_lists(tmp_path: Path) -> None:
    f = tmp_path / "all.yaml"
    f.write_text("kind: StorageClass\napiVersion: storage.k8s.io/v1\nmetadata: {name: a}\n---\n---\n"
                 "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: p}}\n")
    (tmp_path / "ignored.txt").write_text("not yaml: [")
    assert [d["metadata"]["name"] for d in load_documents(str(f))] == ["a", "p"]
    assert [d["metadata"]["name"] for d in load_documents(str(tmp_path))] == ["a", "p"]
    with pytest.raises(Invalid, match="does not exist"):
        load_documents(str(tmp_path / "missing.yaml"))


# -- patch -------------------------------------------------------------------------------------------------------
def test_patch_ignores_status_and_refuses_other_metadata(store: Store) -> None:
    apply_object(store, sc(), FS_ID)
    apply_object(store, pvc(), FS_ID)
    said = patch_object(store, "pvc", "data", "default", '{"status": {"phase": "Bound"}}')
    assert "status part of the patch was ignored" in said
    assert store.require("PersistentVolumeClaim", "data", "default")["status"]["phase"] == "Pending"
    with pytest.raises(Invalid, match=r"metadata\.labels and metadata\.annotations only"):
        patch_object(store, "pvc", "data", "default", '{"metadata": {"name": "renamed"}}')
    assert patch_object(store, "pvc", "data", "default", '{"metadata": {"labels": {"a": "b"}}}') == \
        "persistentvolumeclaim/data patched"
    with pytest.raises(Invalid, match="NotFound"):
        patch_object(store, "pvc", "nope", "default", "{}")
    with pytest.raises(Invalid, match="must be a JSON object"):
        patch_object(store, "pvc", "data", "default", "[1]")


# The examples of RFC 7386, appendix A: (target, patch, result).
RFC7386 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC7386)
def test_merge_patch_follows_rfc_7386(target: Any, patch: Any, result: Any) -> None:
    original = copy.deepcopy(target)
    assert merge_patch(target, patch) == result
    assert target == original  # the target is not modified


def test_a_class_whose_indentation_was_lost_is_refused_saying_so(tmp_path: Path) -> None:
    """Seed 003's efs-sc.yaml as the notes print it: every key at the top level."""
    path = tmp_path / "efs-sc.yaml"
    path.write_text("kind: StorageClass\napiVersion: storage.k8s.io/v1\nmetadata:\nname: efs-sc\n"
                    "provisioner: file.csi.elastivol.io\nparameters:\nprovisioningMode: efs-ap\n"
                    'directoryPerms: "700"\n')
    (obj,) = load_documents(str(path))
    with pytest.raises(Invalid) as info:
        validate(obj)
    message = str(info.value)
    assert "metadata.name is required, and name, provisioningMode, directoryPerms are not top-level fields" in message
    assert "indentation looks lost" in message


def test_a_class_without_a_name_but_nothing_stray_keeps_the_plain_message() -> None:
    with pytest.raises(Invalid, match=r"metadata.name is required \(the lab has no generateName\)"):
        validate({"kind": "StorageClass", "apiVersion": "storage.k8s.io/v1", "metadata": {},
                  "provisioner": "file.csi.elastivol.io"})
