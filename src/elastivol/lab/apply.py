"""`lab apply` and `lab patch`: the API server's part — validation, defaults, admission, immutability."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from elastivol.lab.binding import PV_PROTECTION, PVC_PROTECTION
from elastivol.lab.kinds import FIELDS, KINDS, resolve_kind, unsupported_fields
from elastivol.lab.objects import ACCESS_MODES, Obj, parse_quantity, pvc_request
from elastivol.lab.store import Store

FS_PLACEHOLDER = "LAB_FILE_SYSTEM_ID"
DEFAULT_SC = "storageclass.kubernetes.io/is-default-class"


class Invalid(Exception):
    """The object is refused, with a message in the API server's words."""


def load_documents(path: str) -> list[Obj]:
    if path == "-":
        texts = [("<stdin>", sys.stdin.read())]
    else:
        p = Path(path)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml", ".json"))
            if not files:
                raise Invalid(f"error: no objects passed to apply: {path} has no .yaml, .yml or .json file")
        elif p.exists():
            files = [p]
        else:
            raise Invalid(f'error: the path "{path}" does not exist')
        texts = [(str(f), f.read_text()) for f in files]
    docs: list[Obj] = []
    for name, text in texts:
        try:
            loaded = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise Invalid(f"error: error parsing {name}: {exc}") from exc
        for doc in loaded:
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise Invalid(f"error: {name}: a document is not an object")
            docs.extend(doc.get("items") or [] if doc.get("kind") == "List" else [doc])
    return docs


def substitute(value: Any, fs_id: str) -> Any:
    if isinstance(value, str):
        return value.replace(FS_PLACEHOLDER, fs_id) if fs_id else value
    if isinstance(value, list):
        return [substitute(v, fs_id) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, fs_id) for k, v in value.items()}
    return value


def _describe(obj: Obj) -> str:
    kind = KINDS[obj["kind"]]
    return f'{kind.name} "{obj.get("metadata", {}).get("name", "")}"'


def validate(obj: Obj) -> None:
    kind_name = obj.get("kind")
    if not kind_name:
        raise Invalid("error: an object has no kind")
    try:
        kind = resolve_kind(str(kind_name))
    except KeyError:
        raise Invalid(f'error: the lab does not play kind "{kind_name}" (apiVersion {obj.get("apiVersion")}); it plays '
                      + ", ".join(k.name for k in KINDS.values() if k.applicable)) from None
    if kind.name != kind_name or not kind.applicable:
        raise Invalid(f'error: kind "{kind_name}" cannot be applied in the lab')
    if obj.get("apiVersion") != kind.api_version:
        raise Invalid(f'error: {kind_name} wants apiVersion "{kind.api_version}", not "{obj.get("apiVersion")}"')
    meta = obj.get("metadata") or {}
    if not meta.get("name"):
        stray = [str(k) for k in obj if k not in FIELDS[kind.name]]
        if stray:
            # Nested keys that landed at the top level: YAML whose indentation was lost (copied from a
            # web page, say). Saying so beats a bare "name is required", as kubectl's validation does.
            raise Invalid(f"error: {kind_name}: metadata.name is required, and {', '.join(stray)} "
                          f"{'is not a top-level field' if len(stray) == 1 else 'are not top-level fields'} "
                          f"of a {kind_name}: the YAML's indentation looks lost (name belongs under metadata:"
                          f"{', the class parameters under parameters:' if kind.name == 'StorageClass' else ''}); "
                          "indent them and apply again")
        raise Invalid(f"error: {kind_name}: metadata.name is required (the lab has no generateName)")
    bad = unsupported_fields(kind.name, obj)
    if bad:
        raise Invalid(f"error: {_describe(obj)}: the lab does not play field(s) {', '.join(bad)}; "
                      "it refuses them rather than ignore them")
    check = _CHECKS.get(kind.name)
    if check:
        problems = check(obj)
        if problems:
            raise Invalid(f"The {_describe(obj)} is invalid: " + "; ".join(problems))


def _unsupported(holder: Obj, field: str, allowed: tuple[str, ...], prefix: str = "",
                 say_supported: bool = False) -> list[str]:
    """The problem of ``field`` when it is set to none of ``allowed`` (unset means ``allowed[0]``, the default)."""
    value = holder.get(field, allowed[0])
    if value in allowed:
        return []
    problem = f'{prefix}.{field}' if prefix else field
    problem += f': Unsupported value: "{value}"'
    if say_supported:
        problem += ": supported values: " + ", ".join(f'"{a}"' for a in allowed)
    return [problem]


def _check_sc(obj: Obj) -> list[str]:
    p = []
    if not obj.get("provisioner"):
        p.append("provisioner: Required value")
    p += _unsupported(obj, "reclaimPolicy", ("Delete", "Retain"), say_supported=True)
    p += _unsupported(obj, "volumeBindingMode", ("Immediate", "WaitForFirstConsumer"), say_supported=True)
    return p


def _check_claim_spec(spec: Obj, prefix: str = "spec") -> list[str]:
    p = []
    modes = spec.get("accessModes") or []
    if not modes:
        p.append(f"{prefix}.accessModes: Required value: at least 1 access mode is required")
    for m in modes:
        if m not in ACCESS_MODES:
            p.append(f'{prefix}.accessModes: Unsupported value: "{m}": supported values: ' +
                     ", ".join(f'"{k}"' for k in ACCESS_MODES))
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        p.append(f"{prefix}.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes")
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    if storage is None:
        p.append(f"{prefix}.resources[storage]: Required value")
    else:
        try:
            if parse_quantity(storage) <= 0:
                p.append(f"{prefix}.resources[storage]: Invalid value: must be greater than zero")
        except ValueError as exc:
            p.append(f"{prefix}.resources[storage]: {exc}")
    p += _unsupported(spec, "volumeMode", ("Filesystem", "Block"), prefix)
    return p


def _check_pvc(obj: Obj) -> list[str]:
    return _check_claim_spec(obj.get("spec") or {})


def _check_pv(obj: Obj) -> list[str]:
    spec = obj.get("spec") or {}
    p = []
    if not (spec.get("capacity") or {}).get("storage"):
        p.append("spec.capacity: Required value")
    if not spec.get("accessModes"):
        p.append("spec.accessModes: Required value")
    csi = spec.get("csi")
    if not csi:
        p.append("spec: Required value: the lab plays CSI volumes only (spec.csi with driver and volumeHandle)")
    elif not csi.get("driver") or not csi.get("volumeHandle"):
        p.append("spec.csi.driver and spec.csi.volumeHandle: Required value")
    p += _unsupported(spec, "persistentVolumeReclaimPolicy", ("Retain", "Delete"), "spec")
    return p


def _check_pod_spec(spec: Obj, prefix: str = "spec", claim_templates: tuple[str, ...] = ()) -> list[str]:
    p = []
    containers = spec.get("containers") or []
    if not containers:
        p.append(f"{prefix}.containers: Required value")
    # A StatefulSet's volumeClaimTemplates become volumes of its pods, so mounts may name them.
    volumes = {v.get("name") for v in spec.get("volumes") or []} | set(claim_templates)
    for v in spec.get("volumes") or []:
        if not v.get("persistentVolumeClaim"):
            p.append(f'{prefix}.volumes[{v.get("name")}]: the lab plays persistentVolumeClaim volumes only')
    for i, c in enumerate(containers):
        if not c.get("name"):
            p.append(f"{prefix}.containers[{i}].name: Required value")
        for vm in (c.get("volumeMounts") or []) + (c.get("volumeDevices") or []):
            if vm.get("name") not in volumes:
                p.append(f'{prefix}.containers[{i}].volumeMounts[{vm.get("name")}]: Not found: "{vm.get("name")}"')
            where = vm.get("mountPath") or vm.get("devicePath") or ""
            if not str(where).startswith("/"):
                p.append(f"{prefix}.containers[{i}]: mountPath/devicePath must be absolute: {where!r}")
    p += _unsupported(spec, "restartPolicy", ("Always", "OnFailure", "Never"), prefix)
    return p


def _check_pod(obj: Obj) -> list[str]:
    return _check_pod_spec(obj.get("spec") or {})


def _check_workload(obj: Obj) -> list[str]:
    spec = obj.get("spec") or {}
    templates = tuple(str((t.get("metadata") or {}).get("name")) for t in spec.get("volumeClaimTemplates") or [])
    p = _check_pod_spec((spec.get("template") or {}).get("spec") or {}, "spec.template.spec", templates)
    for i, tpl in enumerate(spec.get("volumeClaimTemplates") or []):
        p += _check_claim_spec(tpl.get("spec") or {}, f"spec.volumeClaimTemplates[{i}].spec")
    return p


def _check_vs(obj: Obj) -> list[str]:
    source = (obj.get("spec") or {}).get("source") or {}
    if bool(source.get("persistentVolumeClaimName")) == bool(source.get("volumeSnapshotContentName")):
        return ["spec.source: exactly one of persistentVolumeClaimName and volumeSnapshotContentName is required"]
    return []


def _check_vac(obj: Obj) -> list[str]:
    return [] if obj.get("driverName") else ["driverName: Required value"]


_CHECKS = {"StorageClass": _check_sc, "PersistentVolumeClaim": _check_pvc, "PersistentVolume": _check_pv,
           "Pod": _check_pod, "StatefulSet": _check_workload, "Deployment": _check_workload,
           "VolumeSnapshot": _check_vs, "VolumeAttributesClass": _check_vac}


# -- create / update -------------------------------------------------------------------------------
# What the API server fills in where a manifest leaves it unset: fields of the object itself, and
# fields of its spec.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "StorageClass": {"reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"},
    "VolumeSnapshotClass": {"deletionPolicy": "Delete"},
}
_SPEC_DEFAULTS: dict[str, dict[str, Any]] = {
    "PersistentVolumeClaim": {"volumeMode": "Filesystem"},
    "PersistentVolume": {"persistentVolumeReclaimPolicy": "Retain", "volumeMode": "Filesystem"},
    "Pod": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 30},
    "StatefulSet": {"replicas": 1},
    "Deployment": {"replicas": 1},
}
# Kinds whose objects start Pending, with the finalizer their protection controller adds (if any).
_BORN_PENDING: dict[str, str | None] = {"PersistentVolumeClaim": PVC_PROTECTION, "PersistentVolume": PV_PROTECTION,
                                        "Pod": None}


def defaults(obj: Obj, store: Store) -> None:
    kind = obj["kind"]
    meta = obj.setdefault("metadata", {})
    if kind == "PersistentVolumeClaim":
        spec = obj.setdefault("spec", {})
        if "storageClassName" not in spec:
            default = [sc["metadata"]["name"] for sc in store.list_of("StorageClass")
                       if (sc["metadata"].get("annotations") or {}).get(DEFAULT_SC) == "true"]
            if default:
                spec["storageClassName"] = default[0]
    for name, value in _DEFAULTS.get(kind, {}).items():
        obj.setdefault(name, value)
    for name, value in _SPEC_DEFAULTS.get(kind, {}).items():
        obj.setdefault("spec", {}).setdefault(name, value)
    if kind in _BORN_PENDING:
        protection = _BORN_PENDING[kind]
        if protection:
            meta["finalizers"] = list(dict.fromkeys([*(meta.get("finalizers") or []), protection]))
        obj["status"] = {"phase": "Pending"}


# Fields an update may change, per kind (everything else must stay as it was).
_MUTABLE: dict[str, set[str]] = {
    "StorageClass": {"allowVolumeExpansion", "mountOptions"},
    "PersistentVolumeClaim": {"spec.resources", "spec.volumeAttributesClassName"},
    "VolumeAttributesClass": set(),
    "PersistentVolume": {"spec.capacity", "spec.persistentVolumeReclaimPolicy", "spec.mountOptions",
                         "spec.claimRef", "spec.storageClassName"},
    "Pod": set(),
    "StatefulSet": {"spec.replicas", "spec.template"},
    "Deployment": {"spec.replicas", "spec.template"},
    "VolumeSnapshotClass": {"deletionPolicy"},
    "VolumeSnapshot": set(),
    "VolumeSnapshotContent": {"spec.deletionPolicy"},
}
_IMMUTABLE_MESSAGE = {
    "StorageClass": "Forbidden: updates to parameters, provisioner, reclaimPolicy and volumeBindingMode are forbidden.",
    "VolumeAttributesClass": "parameters: Forbidden: updates to parameters are forbidden (and driverName is "
                             "immutable); make a new VolumeAttributesClass and point the claim at it",
    "PersistentVolumeClaim": "spec: Forbidden: spec is immutable after creation except resources.requests and "
                             "volumeAttributesClassName for bound claims",
    "Pod": "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
           "`spec.activeDeadlineSeconds`, `spec.tolerations` or `spec.terminationGracePeriodSeconds`",
}


def _user_fields(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}


def _flatten(obj: Obj, mutable: set[str]) -> Obj:
    out: Obj = {}
    for k, v in obj.items():
        if k in mutable:
            continue
        if k == "spec" and isinstance(v, dict):
            out["spec"] = {sk: sv for sk, sv in v.items() if f"spec.{sk}" not in mutable}
        else:
            out[k] = v
    return out


def admit_update(old: Obj, new: Obj, store: Store) -> None:
    kind = old["kind"]
    mutable = _MUTABLE.get(kind, set())
    defaults_new = copy.deepcopy(new)
    defaults(defaults_new, store)
    before, after = _flatten(_user_fields(old), mutable), _flatten(_user_fields(defaults_new), mutable)
    # What a manifest leaves out, the API server or a controller may have filled in: it stays, and
    # what neither ever set stays unset (a None in its place would read as a change).
    kept = {"PersistentVolumeClaim": ("storageClassName", "volumeName"), "PersistentVolume": ("nodeAffinity",),
            "Pod": ("nodeName",)}
    for key in kept.get(kind, ()):
        if key not in new["spec"] or (key == "volumeName" and not new["spec"][key]):
            after["spec"].pop(key, None)
            if key in before["spec"]:
                after["spec"][key] = before["spec"][key]
    if before != after:
        why = _IMMUTABLE_MESSAGE.get(kind, "Forbidden: the lab does not let this field change after creation")
        raise Invalid(f"The {_describe(old)} is invalid: {why}")
    if kind == "PersistentVolumeClaim":
        _admit_resize(old, new, store)


def _admit_resize(old: Obj, new: Obj, store: Store) -> None:
    want, had = pvc_request(new), pvc_request(old)
    if want == had:
        return
    name = old["metadata"]["name"]
    if want < had:
        raise Invalid(f'The PersistentVolumeClaim "{name}" is invalid: spec.resources.requests.storage: Forbidden: '
                      "field can not be less than previous value")
    if old.get("status", {}).get("phase") != "Bound":
        raise Invalid(f'The PersistentVolumeClaim "{name}" is invalid: {_IMMUTABLE_MESSAGE["PersistentVolumeClaim"]}')
    sc = store.get("StorageClass", old["spec"].get("storageClassName") or "")
    if sc is None or not sc.get("allowVolumeExpansion"):
        raise Invalid(f'persistentvolumeclaims "{name}" is forbidden: only dynamically provisioned pvc can be resized '
                      "and the storageclass that provisions the pvc must support resize")


def apply_object(store: Store, obj: Obj, fs_id: str) -> str:
    obj = substitute(copy.deepcopy(obj), fs_id)
    validate(obj)
    kind = KINDS[obj["kind"]]
    meta = obj["metadata"]
    namespace = meta.get("namespace", "default") if kind.namespaced else None
    label = f"{kind.plural[:-1] if kind.plural.endswith('s') else kind.plural}"
    label = {"storageclasse": "storageclass.storage.k8s.io", "volumesnapshotclasse": "volumesnapshotclass.snapshot.storage.k8s.io",
             "volumeattributesclasse": "volumeattributesclass.storage.k8s.io",
             "volumesnapshot": "volumesnapshot.snapshot.storage.k8s.io",
             "volumesnapshotcontent": "volumesnapshotcontent.snapshot.storage.k8s.io",
             "statefulset": "statefulset.apps", "deployment": "deployment.apps",
             "volumegroupsnapshotclasse": "volumegroupsnapshotclass.groupsnapshot.storage.k8s.io",
             "volumegroupsnapshot": "volumegroupsnapshot.groupsnapshot.storage.k8s.io",
             "volumegroupsnapshotcontent": "volumegroupsnapshotcontent.groupsnapshot.storage.k8s.io"}.get(label, label)
    current = store.get(kind.name, meta["name"], namespace)
    if current is None:
        for k in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
            meta.pop(k, None)
        defaults(obj, store)
        store.create(obj)
        return f"{label}/{meta['name']} created"
    if current["metadata"].get("deletionTimestamp"):
        raise Invalid(f'Error from server (Conflict): {_describe(current)} is being deleted; wait until it is gone')
    admit_update(current, obj, store)
    updated = copy.deepcopy(current)
    for k, v in _user_fields(obj).items():
        if k == "spec" and isinstance(v, dict):
            updated.setdefault("spec", {}).update(v)
        else:
            updated[k] = v
    # No labels and empty labels are the same: re-applying an unchanged manifest changes nothing.
    if meta.get("labels") or current["metadata"].get("labels"):
        updated["metadata"]["labels"] = meta.get("labels") or {}
    if meta.get("annotations"):
        updated["metadata"]["annotations"] = {**(current["metadata"].get("annotations") or {}), **meta["annotations"]}
    if updated == current:
        return f"{label}/{meta['name']} unchanged"
    store.update(updated)
    return f"{label}/{meta['name']} configured"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def patch_object(store: Store, kind_word: str, name: str, namespace: str, patch_text: str) -> str:
    kind = resolve_kind(kind_word)
    try:
        patch = json.loads(patch_text)
    except ValueError as exc:
        raise Invalid(f"error: unable to parse the patch {patch_text!r}: {exc}") from exc
    if not isinstance(patch, dict):
        raise Invalid("error: a merge patch must be a JSON object")
    current = store.get(kind.name, name, namespace if kind.namespaced else None)
    if current is None:
        raise Invalid(f'Error from server (NotFound): {kind.resource} "{name}" not found')
    note = ""
    if "status" in patch:
        # Like the API server: status is a subresource, written by the controllers, not by a patch.
        patch = {k: v for k, v in patch.items() if k != "status"}
        note = " (status is written by the controllers; the status part of the patch was ignored)"
    if "metadata" in patch and set(patch["metadata"]) - {"labels", "annotations"}:
        raise Invalid("error: a patch may change metadata.labels and metadata.annotations only")
    patched = merge_patch(current, patch)
    bad = unsupported_fields(kind.name, patched)
    if bad:
        raise Invalid(f"error: the lab does not play field(s) {', '.join(bad)}")
    label = f"{kind.resource.rstrip('s') if '.' not in kind.resource else kind.resource}/{name}"
    if patched == current:
        return f"{label} patched (no change){note}"
    check = _CHECKS.get(kind.name)
    if check and check(patched):
        raise Invalid(f"The {_describe(current)} is invalid: " + "; ".join(check(patched)))
    admit_update(current, patched, store)
    store.update(patched)
    return f"{label} patched{note}"
