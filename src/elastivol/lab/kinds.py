"""The kinds the lab knows, their names on the command line, and the fields it honours.

Every field of an applied object is checked against :data:`FIELDS`: one the lab does not play is
refused with its path, never silently ignored (a manifest that "works" in the lab but means
something else on a cluster would teach the wrong thing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    name: str
    api_version: str
    plural: str
    namespaced: bool
    aliases: tuple[str, ...]
    applicable: bool = True  # users may apply it (Events and Nodes are the lab's own)

    @property
    def resource(self) -> str:
        """The name kubectl prints in messages: persistentvolumeclaims, storageclasses.storage.k8s.io..."""
        group = self.api_version.rpartition("/")[0]
        return f"{self.plural}.{group}" if group else self.plural


_KIND_LIST = [
    Kind("StorageClass", "storage.k8s.io/v1", "storageclasses", False, ("sc", "storageclass")),
    Kind("VolumeAttributesClass", "storage.k8s.io/v1", "volumeattributesclasses", False,
         ("vac", "volumeattributesclass")),
    Kind("PersistentVolumeClaim", "v1", "persistentvolumeclaims", True, ("pvc", "persistentvolumeclaim")),
    Kind("PersistentVolume", "v1", "persistentvolumes", False, ("pv", "persistentvolume")),
    Kind("Pod", "v1", "pods", True, ("po", "pod")),
    Kind("StatefulSet", "apps/v1", "statefulsets", True, ("sts", "statefulset")),
    Kind("Deployment", "apps/v1", "deployments", True, ("deploy", "deployment")),
    Kind("VolumeAttachment", "storage.k8s.io/v1", "volumeattachments", False, ("va", "volumeattachment"), False),
    Kind("VolumeSnapshotClass", "snapshot.storage.k8s.io/v1", "volumesnapshotclasses", False,
         ("vsclass", "vsclasses", "volumesnapshotclass")),
    Kind("VolumeSnapshot", "snapshot.storage.k8s.io/v1", "volumesnapshots", True, ("vs", "volumesnapshot")),
    Kind("VolumeSnapshotContent", "snapshot.storage.k8s.io/v1", "volumesnapshotcontents", False,
         ("vsc", "vscs", "volumesnapshotcontent")),
    # Volume group snapshots (lab/groupsnapshotter.py).
    Kind("VolumeGroupSnapshotClass", "groupsnapshot.storage.k8s.io/v1", "volumegroupsnapshotclasses", False,
         ("vgsclass", "vgsclasses", "volumegroupsnapshotclass")),
    Kind("VolumeGroupSnapshot", "groupsnapshot.storage.k8s.io/v1", "volumegroupsnapshots", True,
         ("vgs", "volumegroupsnapshot")),
    Kind("VolumeGroupSnapshotContent", "groupsnapshot.storage.k8s.io/v1", "volumegroupsnapshotcontents", False,
         ("vgsc", "vgscs", "volumegroupsnapshotcontent")),
    Kind("Node", "v1", "nodes", False, ("no", "node"), False),
    Kind("Event", "v1", "events", True, ("ev", "event"), False),
]
KINDS: dict[str, Kind] = {k.name: k for k in _KIND_LIST}


def resolve_kind(word: str) -> Kind:
    """A kind from what a person types: pvc, pv, pods, storageclass.storage.k8s.io, VolumeSnapshot..."""
    w = word.strip().lower()
    for kind in _KIND_LIST:
        names = {kind.name.lower(), kind.plural, kind.resource, *kind.aliases}
        if w in names or w.split(".")[0] in names:
            return kind
    known = ", ".join(sorted(a for k in _KIND_LIST for a in k.aliases[:1]))
    raise KeyError(f'the lab has no resource type "{word}" (it knows: {known})')


# -- fields ----------------------------------------------------------------------------------------
# A spec tree: ANY admits any value (free-form maps such as labels or parameters); a dict lists the
# keys admitted below; a one-element list admits a list whose items follow that element.
ANY: Any = object()

_META = {"name": ANY, "namespace": ANY, "labels": ANY, "annotations": ANY, "generateName": ANY,
         # Written by the lab; admitted so that `get -o yaml | apply -f -` round-trips.
         "uid": ANY, "resourceVersion": ANY, "creationTimestamp": ANY, "finalizers": ANY,
         "deletionTimestamp": ANY, "ownerReferences": ANY, "managedFields": ANY, "generation": ANY}
_TOPOLOGY_TERM = {"matchLabelExpressions": [{"key": ANY, "values": ANY}]}
_NODE_SELECTOR_TERM = {"matchExpressions": [{"key": ANY, "operator": ANY, "values": ANY}],
                       "matchFields": [{"key": ANY, "operator": ANY, "values": ANY}]}
_TYPED_REF = {"apiGroup": ANY, "kind": ANY, "name": ANY, "namespace": ANY}
_PVC_SPEC = {
    "accessModes": ANY,
    "resources": {"requests": {"storage": ANY}, "limits": {"storage": ANY}},
    "storageClassName": ANY,
    "volumeName": ANY,
    "volumeMode": ANY,
    "dataSource": _TYPED_REF,
    "dataSourceRef": _TYPED_REF,
    "selector": {"matchLabels": ANY},
    "volumeAttributesClassName": ANY,
}
_CONTAINER = {
    "name": ANY, "image": ANY, "imagePullPolicy": ANY, "command": ANY, "args": ANY, "workingDir": ANY,
    "env": [{"name": ANY, "value": ANY}],
    "volumeMounts": [{"name": ANY, "mountPath": ANY, "readOnly": ANY, "subPath": ANY}],
    "volumeDevices": [{"name": ANY, "devicePath": ANY}],
    # Accepted and shown, not enforced: the lab runs containers as host processes.
    "resources": ANY, "ports": ANY,
}
_POD_SPEC = {
    "containers": [_CONTAINER],
    "volumes": [{"name": ANY, "persistentVolumeClaim": {"claimName": ANY, "readOnly": ANY}}],
    "nodeName": ANY,
    "nodeSelector": ANY,
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [_NODE_SELECTOR_TERM]}}},
    "restartPolicy": ANY,
    "terminationGracePeriodSeconds": ANY,
    "hostname": ANY,
}
_POD_TEMPLATE = {"metadata": _META, "spec": _POD_SPEC}
_LABEL_SELECTOR = {"matchLabels": ANY}

FIELDS: dict[str, dict[str, Any]] = {
    "StorageClass": {
        "apiVersion": ANY, "kind": ANY, "metadata": _META, "provisioner": ANY, "parameters": ANY,
        "reclaimPolicy": ANY, "volumeBindingMode": ANY, "allowVolumeExpansion": ANY, "mountOptions": ANY,
        "allowedTopologies": [_TOPOLOGY_TERM],
    },
    "PersistentVolumeClaim": {"apiVersion": ANY, "kind": ANY, "metadata": _META, "spec": _PVC_SPEC, "status": ANY},
    "VolumeAttributesClass": {"apiVersion": ANY, "kind": ANY, "metadata": _META, "driverName": ANY, "parameters": ANY},
    "PersistentVolume": {
        "apiVersion": ANY, "kind": ANY, "metadata": _META, "status": ANY,
        "spec": {
            "capacity": {"storage": ANY}, "accessModes": ANY, "persistentVolumeReclaimPolicy": ANY,
            "storageClassName": ANY, "mountOptions": ANY, "volumeMode": ANY, "volumeAttributesClassName": ANY,
            "csi": {"driver": ANY, "volumeHandle": ANY, "fsType": ANY, "volumeAttributes": ANY, "readOnly": ANY},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [_NODE_SELECTOR_TERM]}},
            "claimRef": {"apiVersion": ANY, "kind": ANY, "name": ANY, "namespace": ANY, "uid": ANY,
                         "resourceVersion": ANY},
        },
    },
    "Pod": {"apiVersion": ANY, "kind": ANY, "metadata": _META, "spec": _POD_SPEC, "status": ANY},
    "StatefulSet": {
        "apiVersion": ANY, "kind": ANY, "metadata": _META, "status": ANY,
        "spec": {"replicas": ANY, "serviceName": ANY, "selector": _LABEL_SELECTOR, "template": _POD_TEMPLATE,
                 "volumeClaimTemplates": [{"apiVersion": ANY, "kind": ANY, "metadata": _META, "spec": _PVC_SPEC}],
                 "podManagementPolicy": ANY},
    },
    "Deployment": {
        "apiVersion": ANY, "kind": ANY, "metadata": _META, "status": ANY,
        "spec": {"replicas": ANY, "selector": _LABEL_SELECTOR, "template": _POD_TEMPLATE},
    },
    "VolumeSnapshotClass": {"apiVersion": ANY, "kind": ANY, "metadata": _META, "driver": ANY,
                            "deletionPolicy": ANY, "parameters": ANY},
    "VolumeSnapshot": {
        "apiVersion": ANY, "kind": ANY, "metadata": _META, "status": ANY,
        "spec": {"volumeSnapshotClassName": ANY,
                 "source": {"persistentVolumeClaimName": ANY, "volumeSnapshotContentName": ANY}},
    },
    "VolumeSnapshotContent": {
        "apiVersion": ANY, "kind": ANY, "metadata": _META, "status": ANY,
        "spec": {"deletionPolicy": ANY, "driver": ANY, "volumeSnapshotClassName": ANY, "sourceVolumeMode": ANY,
                 "source": {"snapshotHandle": ANY, "volumeHandle": ANY},
                 "volumeSnapshotRef": {"apiVersion": ANY, "kind": ANY, "name": ANY, "namespace": ANY, "uid": ANY,
                                       "resourceVersion": ANY}},
    },
    "VolumeGroupSnapshotClass": {"apiVersion": ANY, "kind": ANY, "metadata": _META, "driver": ANY,
                                 "deletionPolicy": ANY, "parameters": ANY},
    "VolumeGroupSnapshot": {
        "apiVersion": ANY, "kind": ANY, "metadata": _META, "status": ANY,
        "spec": {"volumeGroupSnapshotClassName": ANY, "source": {"selector": _LABEL_SELECTOR}},
    },
    "VolumeGroupSnapshotContent": {
        "apiVersion": ANY, "kind": ANY, "metadata": _META, "status": ANY,
        "spec": {"deletionPolicy": ANY, "driver": ANY, "volumeGroupSnapshotClassName": ANY,
                 "source": {"volumeHandles": ANY},
                 "volumeGroupSnapshotRef": {"apiVersion": ANY, "kind": ANY, "name": ANY, "namespace": ANY,
                                            "uid": ANY, "resourceVersion": ANY}},
    },
}


def unsupported_fields(kind: str, obj: Any) -> list[str]:
    """Paths of the fields in ``obj`` that the lab does not play, e.g. ``spec.containers[0].livenessProbe``."""
    found: list[str] = []
    _walk(FIELDS[kind], obj, "", found)
    return found


def _walk(spec: Any, value: Any, path: str, found: list[str]) -> None:
    if spec is ANY or value is None:
        return
    if isinstance(spec, list):
        if not isinstance(value, list):
            found.append(f"{path} (expected a list)")
            return
        for i, item in enumerate(value):
            _walk(spec[0], item, f"{path}[{i}]", found)
        return
    if not isinstance(value, dict):
        found.append(f"{path} (expected an object)")
        return
    for key, sub in value.items():
        here = f"{path}.{key}" if path else str(key)
        if key not in spec:
            found.append(here)
        else:
            _walk(spec[key], sub, here, found)
