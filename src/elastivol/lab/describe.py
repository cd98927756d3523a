"""`kubectl describe` text for the lab's objects: dedicated layouts for PVC, PV, Pod and StorageClass,
kubectl's generic field-by-field layout for the rest, and an Events section. Pure functions, like
:mod:`elastivol.lab.printers`, whose helpers they use."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from elastivol.lab.printers import (
    _LAST_APPLIED,
    _MAX_ANNOTATION,
    NONE,
    UNKNOWN,
    UNSET,
    Obj,
    Writer,
    _age,
    _claim_class,
    _claim_ref,
    _d,
    _event_times,
    _get,
    _is_default_class,
    _l,
    _modes,
    _now,
    _parse_time,
    _rfc1123,
    _s,
    _scalar,
    _tabwrite,
)

# ---------------------------------------------------------------- describe


def _multi(w: Writer, lvl: int, title: str, values: list[str]) -> None:
    """"Title:  first" then one aligned continuation line per further value; <none> when empty."""
    if not values:
        w(lvl, f"{title}:\t{NONE}")
    for i, v in enumerate(values):
        w(lvl, f"{title + ':' if i == 0 else ''}\t{v}")


def _kv(m: Any, sep: str = "=") -> list[str]:
    items = m.items() if isinstance(m, dict) else []
    return [f"{k}{sep}{_scalar(v)}" for k, v in sorted(items) if not str(k).startswith("_") and k != _LAST_APPLIED]


def _name(w: Writer, o: Obj, namespaced: bool = True) -> None:
    w(0, f"Name:\t{_s(o, 'metadata', 'name')}")
    if namespaced:
        w(0, f"Namespace:\t{_s(o, 'metadata', 'namespace')}")


def _labels(w: Writer, o: Obj) -> None:
    """Labels ("k=v") and Annotations ("k: v", as kubectl shows them), one per line."""
    _multi(w, 0, "Labels", _kv(_get(o, "metadata", "labels")))
    values: list[str] = []
    for entry in _kv(_get(o, "metadata", "annotations"), "\0"):
        k, text = entry.split("\0", 1)
        if len(text) + len(k) + 2 <= _MAX_ANNOTATION and "\n" not in text:
            values.append(f"{k}: {text}")
            continue
        values.append(f"{k}:")  # long or multi-line values go below the key, each line shortened
        cut = _MAX_ANNOTATION - 2
        values.extend(f"  {ln[:cut]}" + ("..." if len(ln) > cut else "") for ln in text.rstrip("\n").split("\n"))
    _multi(w, 0, "Annotations", values)


def _status_line(w: Writer, o: Obj, now: datetime) -> None:
    deleted = _get(o, "metadata", "deletionTimestamp")
    w(0, f"Status:\tTerminating (lasts {_age(deleted, now)})" if deleted else f"Status:\t{_s(o, 'status', 'phase')}")


def _pvc_describe(w: Writer, o: Obj, now: datetime) -> None:
    spec, st = _d(o, "spec"), _d(o, "status")
    _name(w, o)
    w(0, f"StorageClass:\t{_claim_class(o)}")
    if spec.get("volumeAttributesClassName"):
        w(0, f"VolumeAttributesClass:\t{spec['volumeAttributesClassName']}")
    _status_line(w, o, now)
    w(0, f"Volume:\t{_s(spec, 'volumeName')}")
    _labels(w, o)
    w(0, f"Finalizers:\t[{' '.join(map(str, _l(o, 'metadata', 'finalizers')))}]")
    bound = bool(spec.get("volumeName"))
    w(0, f"Capacity:\t{_s(st, 'capacity', 'storage') if bound else ''}")
    w(0, f"Access Modes:\t{_modes(st.get('accessModes')) if bound else ''}")
    if spec.get("volumeMode"):
        w(0, f"VolumeMode:\t{spec['volumeMode']}")
    if isinstance(spec.get("dataSource"), dict):
        w(0, "DataSource:")
        for label, key in (("APIGroup", "apiGroup"), ("Kind", "kind"), ("Name", "name")):
            if key != "apiGroup" or _s(spec, "dataSource", key):
                w(1, f"{label}:\t{_s(spec, 'dataSource', key)}")
    _multi(w, 0, "Used By", sorted(map(str, _l(o, "_usedBy"))))
    if _l(st, "conditions"):
        w(0, "Conditions:")
        w(1, "Type\tStatus\tLastProbeTime\tLastTransitionTime\tReason\tMessage")
        w(1, "----\t------\t-----------------\t------------------\t------\t-------")
        for c in _l(st, "conditions"):
            w(1, " \t".join([_s(c, "type"), _s(c, "status"), _rfc1123(c.get("lastProbeTime")),
                            _rfc1123(c.get("lastTransitionTime")), _s(c, "reason"), _s(c, "message")]))


_SOURCES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    # volume source field -> (Type text, [(label, field, default)])
    "csi": ("CSI (a Container Storage Interface (CSI) volume source)",
            [("Driver", "driver", ""), ("FSType", "fsType", ""), ("VolumeHandle", "volumeHandle", ""),
             ("ReadOnly", "readOnly", "false")]),
    "hostPath": ("HostPath (bare host directory volume)", [("Path", "path", ""), ("HostPathType", "type", "")]),
    "local": ("LocalVolume (a persistent volume backed by local storage on a node)", [("Path", "path", "")]),
    "persistentVolumeClaim": ("PersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)",
                              [("ClaimName", "claimName", ""), ("ReadOnly", "readOnly", "false")]),
    "emptyDir": ("EmptyDir (a temporary directory that shares a pod's lifetime)",
                 [("Medium", "medium", ""), ("SizeLimit", "sizeLimit", UNSET)]),
    "configMap": ("ConfigMap (a volume populated by a ConfigMap)",
                  [("Name", "name", ""), ("Optional", "optional", "false")]),
    "secret": ("Secret (a volume populated by a Secret)",
               [("SecretName", "secretName", ""), ("Optional", "optional", "false")]),
    "ephemeral": ("EphemeralVolume (an inline specification for a volume that gets created and deleted with the pod)",
                  [("StorageClass", "volumeClaimTemplate.spec.storageClassName", ""),
                   ("Capacity", "volumeClaimTemplate.spec.resources.requests.storage", ""),
                   ("VolumeMode", "volumeClaimTemplate.spec.volumeMode", "Filesystem")]),
}


def _source(w: Writer, lvl: int, holder: Obj, keys: tuple[str, ...]) -> None:
    key = next((k for k in keys if isinstance(holder.get(k), dict)), None)
    if key is None:
        w(lvl, f"Type:\t{UNKNOWN}")
        return
    text, fields = _SOURCES[key]
    w(lvl, f"Type:\t{text}")
    for label, field, default in fields:
        w(lvl, f"{label}:\t{_s(holder[key], *field.split('.'), default=default)}")
    if key == "csi":
        _multi(w, lvl, "VolumeAttributes", _kv(holder[key].get("volumeAttributes")))


def _pv_describe(w: Writer, o: Obj, now: datetime) -> None:
    spec = _d(o, "spec")
    _name(w, o, namespaced=False)
    _labels(w, o)
    w(0, f"Finalizers:\t[{' '.join(map(str, _l(o, 'metadata', 'finalizers')))}]")
    w(0, f"StorageClass:\t{_claim_class(o)}")
    _status_line(w, o, now)
    w(0, f"Claim:\t{_claim_ref(o)}")
    w(0, f"Reclaim Policy:\t{_s(spec, 'persistentVolumeReclaimPolicy')}")
    w(0, f"Access Modes:\t{_modes(spec.get('accessModes'))}")
    if spec.get("volumeMode"):
        w(0, f"VolumeMode:\t{spec['volumeMode']}")
    w(0, f"Capacity:\t{_s(spec, 'capacity', 'storage', default='0')}")
    required = _get(spec, "nodeAffinity", "required")
    w(0, "Node Affinity:\t" + ("" if isinstance(required, dict) else NONE))
    if isinstance(required, dict):
        terms = _l(required, "nodeSelectorTerms")
        w(1, "Required Terms:\t" + ("" if terms else NONE))
        for i, term in enumerate(terms):
            exprs = [f"{_s(e, 'key')} {_s(e, 'operator').lower()}"
                     + (f" [{', '.join(map(str, _l(e, 'values')))}]" if _l(e, "values") else "")
                     for e in _l(term, "matchExpressions")]
            _multi(w, 2, f"Term {i}", exprs)
    w(0, f"Message:\t{_s(o, 'status', 'message')}")
    w(0, "Source:")
    _source(w, 2, spec, ("csi", "hostPath", "local"))


def _state(w: Writer, lvl: int, title: str, state: Obj) -> None:
    run, wait, term = (state.get(k) for k in ("running", "waiting", "terminated"))
    if isinstance(run, dict):
        w(lvl, f"{title}:\tRunning")
        w(lvl + 1, f"Started:\t{_rfc1123(run.get('startedAt'))}")
    elif isinstance(term, dict) and not isinstance(wait, dict):
        w(lvl, f"{title}:\tTerminated")
        for label, key in (("Reason", "reason"), ("Message", "message")):
            if term.get(key):
                w(lvl + 1, f"{label}:\t{term[key]}")
        w(lvl + 1, f"Exit Code:\t{_s(term, 'exitCode', default='0')}")
        if term.get("signal"):
            w(lvl + 1, f"Signal:\t{term['signal']}")
        w(lvl + 1, f"Started:\t{_rfc1123(term.get('startedAt'))}")
        w(lvl + 1, f"Finished:\t{_rfc1123(term.get('finishedAt'))}")
    else:
        w(lvl, f"{title}:\tWaiting")
        if isinstance(wait, dict) and wait.get("reason"):
            w(lvl + 1, f"Reason:\t{wait['reason']}")


def _containers(w: Writer, title: str, containers: list[Any], statuses: list[Any]) -> None:
    w(0, f"{title}:")
    by_name = {_s(s, "name"): s for s in statuses if isinstance(s, dict)}
    for c in containers:
        s = by_name.get(_s(c, "name"))
        w(1, f"{_s(c, 'name')}:")
        if s is not None:
            w(2, f"Container ID:\t{_s(s, 'containerID')}")
        w(2, f"Image:\t{_s(c, 'image')}")
        if s is not None:
            w(2, f"Image ID:\t{_s(s, 'imageID')}")
        ports = ", ".join(f"{_s(p, 'containerPort')}/{_s(p, 'protocol', default='TCP')}" for p in _l(c, "ports"))
        w(2, f"{'Ports' if ',' in ports else 'Port'}:\t{ports or NONE}")
        for key, label in (("command", "Command"), ("args", "Args")):
            if _l(c, key):
                w(2, f"{label}:")
                for line in "\n".join(map(str, _l(c, key))).split("\n"):
                    w(3, line)
        if s is not None:
            _state(w, 2, "State", _d(s, "state"))
            if isinstance(_get(s, "lastState", "terminated"), dict):
                _state(w, 2, "Last State", _d(s, "lastState"))
            w(2, f"Ready:\t{'True' if s.get('ready') is True else 'False'}")
            w(2, f"Restart Count:\t{_s(s, 'restartCount', default='0')}")
        for label in ("limits", "requests"):
            if _d(c, "resources", label):
                w(2, f"{label.title()}:")
                for k, v in sorted(_d(c, "resources", label).items()):
                    w(3, f"{k}:\t{v}")
        env = _l(c, "env")
        w(2, "Environment:" + ("" if env else f"\t{NONE}"))
        for e in env:
            w(3, f"{_s(e, 'name')}:\t{_s(e, 'value') if 'value' in e else '<set from valueFrom>'}")
        mounts = sorted(_l(c, "volumeMounts"), key=lambda m: _s(m, "mountPath"))
        w(2, "Mounts:" + ("" if mounts else f"\t{NONE}"))
        for m in mounts:
            flags = ["ro" if m.get("readOnly") else "rw"] + ([f'path="{m["subPath"]}"'] if m.get("subPath") else [])
            w(3, f"{_s(m, 'mountPath')} from {_s(m, 'name')} ({','.join(flags)})")
        devices = sorted(_l(c, "volumeDevices"), key=lambda d: _s(d, "devicePath"))
        if devices:
            w(2, "Devices:")
        for d in devices:
            w(3, f"{_s(d, 'devicePath')} from {_s(d, 'name')}")


def _pod_describe(w: Writer, o: Obj, now: datetime) -> None:
    spec, st, m = _d(o, "spec"), _d(o, "status"), _d(o, "metadata")
    _name(w, o)
    if spec.get("serviceAccountName"):
        w(0, f"Service Account:\t{spec['serviceAccountName']}")
    w(0, f"Node:\t{spec['nodeName']}/{_s(st, 'hostIP')}" if spec.get("nodeName") else f"Node:\t{NONE}")
    if st.get("startTime"):
        w(0, f"Start Time:\t{_rfc1123(st['startTime'])}")
    _labels(w, o)
    if m.get("deletionTimestamp") and _s(st, "phase") not in ("Failed", "Succeeded"):
        w(0, f"Status:\tTerminating (lasts {_age(m['deletionTimestamp'], now)})")
        if m.get("deletionGracePeriodSeconds") is not None:
            w(0, f"Termination Grace Period:\t{m['deletionGracePeriodSeconds']}s")
    else:
        w(0, f"Status:\t{_s(st, 'phase')}")
    for key in ("reason", "message"):
        if st.get(key):
            w(0, f"{key.title()}:\t{st[key]}")
    w(0, f"IP:\t{_s(st, 'podIP')}")
    ips = [_s(p, "ip") for p in _l(st, "podIPs")]
    w(0, "IPs:" + ("" if ips else f"\t{NONE}"))
    for ip in ips:
        w(1, f"IP:\t{ip}")
    owner = next((r for r in _l(m, "ownerReferences") if r.get("controller")), None)
    if owner is not None:
        w(0, f"Controlled By:\t{_s(owner, 'kind')}/{_s(owner, 'name')}")
    if _l(spec, "initContainers"):
        _containers(w, "Init Containers", _l(spec, "initContainers"), _l(st, "initContainerStatuses"))
    _containers(w, "Containers", _l(spec, "containers"), _l(st, "containerStatuses"))
    if _l(st, "conditions"):
        w(0, "Conditions:")
        w(1, "Type\tStatus")
        for c in _l(st, "conditions"):
            w(1, f"{_s(c, 'type')} \t{_s(c, 'status')} ")
    volumes = _l(spec, "volumes")
    w(0, "Volumes:" + ("" if volumes else f"\t{NONE}"))
    for v in volumes:
        w(1, f"{_s(v, 'name')}:")
        _source(w, 2, v, tuple(k for k in _SOURCES if k != "local"))
    if st.get("qosClass"):
        w(0, f"QoS Class:\t{st['qosClass']}")
    _multi(w, 0, "Node-Selectors", _kv(spec.get("nodeSelector")))


def _sc_describe(w: Writer, o: Obj, now: datetime) -> None:
    w(0, f"Name:\t{_s(o, 'metadata', 'name')}")
    w(0, f"IsDefaultClass:\t{'Yes' if _is_default_class(o) else 'No'}")
    _multi(w, 0, "Annotations", _kv(_get(o, "metadata", "annotations")))
    w(0, f"Provisioner:\t{_s(o, 'provisioner')}")
    _multi(w, 0, "Parameters", _kv(o.get("parameters")))
    expand = o.get("allowVolumeExpansion")
    w(0, f"AllowVolumeExpansion:\t{UNSET if expand is None else 'True' if expand is True else 'False'}")
    _multi(w, 0, "MountOptions", list(map(str, _l(o, "mountOptions"))))
    w(0, f"ReclaimPolicy:\t{_s(o, 'reclaimPolicy', default='Delete')}")
    w(0, f"VolumeBindingMode:\t{_s(o, 'volumeBindingMode', default='Immediate')}")
    if "allowedTopologies" in o:
        topo = _l(o, "allowedTopologies")
        w(0, "AllowedTopologies:\t" + ("" if topo else NONE))
        for i, term in enumerate(topo):
            _multi(w, 1, f"Term {i}", [f"{_s(e, 'key')} in [{', '.join(map(str, _l(e, 'values')))}]"
                                       for e in _l(term, "matchLabelExpressions")])


def _smart_label(field: str) -> str:
    """camelCase field name -> "Title Case" words, as kubectl's generic describer labels fields."""
    if not re.fullmatch(r"[A-Za-z-]+", field):
        return field
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|-", field)
    acronyms = {"API", "URL", "UID", "OSB", "GUID"}
    return " ".join(p.upper() if p.upper() in acronyms else p[:1].upper() + p[1:] for p in words)


def _unstructured(w: Writer, lvl: int, content: Obj, prefix: str = "") -> None:
    skip = {".metadata.managedFields", ".metadata.name", ".metadata.namespace", ".metadata.labels",
            ".metadata.annotations"}
    for field in sorted(k for k in content if not str(k).startswith("_") and f"{prefix}.{k}" not in skip):
        value = content[field]
        if isinstance(value, dict | list):
            w(lvl, f"{_smart_label(field)}:")
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, dict):
                    _unstructured(w, lvl + 1, child, f"{prefix}.{field}")
                else:
                    w(lvl + 1, "<nil>" if child is None else _scalar(child))
        else:
            w(lvl, f"{_smart_label(field)}:\t{'<nil>' if value is None else _scalar(value)}")


def _generic_describe(w: Writer, o: Obj, now: datetime) -> None:
    _name(w, o)
    _labels(w, o)
    _unstructured(w, 0, o)


_DESCRIBERS: dict[str, Callable[[Writer, Obj, datetime], None]] = {
    "persistentvolumeclaim": _pvc_describe, "persistentvolume": _pv_describe, "pod": _pod_describe,
    "storageclass": _sc_describe,
}


def _event_sort_key(e: Obj) -> datetime:
    times = (_parse_time(e.get(k)) for k in ("lastTimestamp", "eventTime", "firstTimestamp"))
    return next((t for t in times if t is not None), datetime.min.replace(tzinfo=UTC))


def describe(obj: Obj, events: list[Obj], *, now: datetime | None = None) -> str:
    """`kubectl describe` text for obj, ending with an Events section built from `events` (already
    filtered to this object by the caller; sorted here by lastTimestamp). PVC, PV, Pod and
    StorageClass have kubectl's dedicated layouts; other kinds (VolumeAttachment, the snapshot
    kinds, StatefulSet, ...) get kubectl's generic field-by-field layout."""
    t, parts = _now(now), []

    def w(lvl: int, text: str) -> None:
        parts.append("  " * lvl + text)

    _DESCRIBERS.get(_s(obj, "kind").lower(), _generic_describe)(w, obj, t)
    if not events:
        w(0, f"Events:\t{NONE}")
        return _tabwrite("\n".join(parts), 0, 2)
    rows = ["Events:", "  Type\tReason\tAge\tFrom\tMessage", "  ----\t------\t----\t----\t-------"]
    for e in sorted(events, key=_event_sort_key):
        first, last, count = _event_times(e, t)
        age = f"{last} (x{count} over {first})" if count > 1 else first
        source = _s(e, "source", "component") or _s(e, "reportingComponent")
        rows.append(f"  {_s(e, 'type')}\t{_s(e, 'reason')}\t{age}\t{source}\t{_s(e, 'message').strip()}")
    return _tabwrite("\n".join(parts), 0, 2) + "\n" + _tabwrite("\n".join(rows), 0, 2)


