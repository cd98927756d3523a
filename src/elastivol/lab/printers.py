"""kubectl-style output for the lab: `get` tables, `describe` text, `-o yaml|json` and JSONPath.

Objects are plain dicts in the Kubernetes JSON shape. Everything here is a pure function of its
arguments (pass `now` to make ages deterministic). Text results carry no trailing newline, so they
can be handed straight to `click.echo` -- except to_yaml, which ends with PyYAML's newline. Keys starting with "_" are the lab's private notes on an
object (e.g. a PVC's "_usedBy"); they never appear in any output except where documented.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

Obj = dict[str, Any]
Writer = Callable[[int, str], None]
Getter = str | Callable[[Obj, datetime], str]  # "dotted.path|default" or a function

NONE, UNSET, UNKNOWN = "<none>", "<unset>", "<unknown>"
_ZERO_TIME = "Mon, 01 Jan 0001 00:00:00 +0000"  # how Go prints an unset timestamp in RFC1123Z
_DAYS = "Mon Tue Wed Thu Fri Sat Sun".split()
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_MODES = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP"))
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_MAX_ANNOTATION = 140


# ---------------------------------------------------------------- small helpers


def _get(obj: Any, *path: str | int) -> Any:
    """obj[path[0]][path[1]]..., or None as soon as a step is missing or of the wrong type."""
    cur = obj
    for p in path:
        if isinstance(p, int):
            cur = cur[p] if isinstance(cur, list) and -len(cur) <= p < len(cur) else None
        else:
            cur = cur.get(p) if isinstance(cur, dict) else None
        if cur is None:
            return None
    return cur


def _scalar(v: Any) -> str:
    """A value the way Go's %v and kubectl's JSONPath print it."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e21 else repr(v)
    if isinstance(v, dict | list):
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    return str(v)


def _s(obj: Any, *path: str | int, default: str = "") -> str:
    v = _get(obj, *path)
    return default if v is None or v == "" else _scalar(v)


def _d(obj: Any, *path: str) -> Obj:
    v = _get(obj, *path)
    return v if isinstance(v, dict) else {}


def _l(obj: Any, *path: str) -> list[Any]:
    v = _get(obj, *path)
    return v if isinstance(v, list) else []


def _parse_time(v: Any) -> datetime | None:
    if not isinstance(v, str) or not v:
        return None
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def human_duration(d: timedelta) -> str:
    """kubectl's compact duration ("95s", "3m5s", "45m", "3h5m", "26h", "3d5h", "45d", "2y30d")."""
    secs = int(d.total_seconds())  # truncates toward zero, like Go's int(d.Seconds())
    if secs < -1:
        return "<invalid>"
    if secs < 120:
        return f"{max(secs, 0)}s"

    def two(a: int, ua: str, b: int, ub: str) -> str:
        return f"{a}{ua}{b}{ub}" if b else f"{a}{ua}"

    mins, hours, days = secs // 60, secs // 3600, secs // 86400
    if mins < 10:
        return two(mins, "m", secs % 60, "s")
    if mins < 180:
        return f"{mins}m"
    if hours < 8:
        return two(hours, "h", mins % 60, "m")
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return two(days, "d", hours % 24, "h")
    if days < 365 * 2:
        return f"{days}d"
    if days < 365 * 8:
        return two(days // 365, "y", days % 365, "d")
    return f"{days // 365}y"


def _age(v: Any, now: datetime) -> str:
    t = _parse_time(v)
    return UNKNOWN if t is None else human_duration(now - t)


def _rfc1123(v: Any) -> str:
    t = _parse_time(v)
    if t is None:
        return _ZERO_TIME
    return f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} {t:%H:%M:%S %z}"


def _modes(modes: Any) -> str:
    have = set(modes) if isinstance(modes, list) else set()
    return ",".join(short for full, short in _MODES if full in have)


def _phase(o: Obj) -> str:
    return "Terminating" if _get(o, "metadata", "deletionTimestamp") else _s(o, "status", "phase")


def _claim_class(o: Obj) -> str:
    return _s(o, "metadata", "annotations", "volume.beta.kubernetes.io/storage-class") or _s(o, "spec", "storageClassName")


def _claim_ref(o: Obj) -> str:
    ref = _get(o, "spec", "claimRef")
    return f"{_s(ref, 'namespace')}/{_s(ref, 'name')}" if isinstance(ref, dict) else ""


def _is_default_class(o: Obj) -> bool:
    ann = _d(o, "metadata", "annotations")
    return "true" in (ann.get("storageclass.kubernetes.io/is-default-class"),
                      ann.get("storageclass.beta.kubernetes.io/is-default-class"))


def _selector(sel: Any) -> str:
    """A metav1.LabelSelector as text: "app=web,tier in (a,b),!legacy"; <none> when empty."""
    parts = [f"{k}={v}" for k, v in sorted(_d(sel, "matchLabels").items())]
    for e in _l(sel, "matchExpressions"):
        key, op, vals = _s(e, "key"), _s(e, "operator"), ",".join(sorted(map(str, _l(e, "values"))))
        parts.append({"In": f"{key} in ({vals})", "NotIn": f"{key} notin ({vals})",
                      "Exists": key, "DoesNotExist": f"!{key}"}.get(op, f"{key} {op} ({vals})"))
    return ",".join(parts) or NONE


def _strip(v: Any) -> Any:
    """A deep copy of v without the lab's private ("_"-prefixed) keys."""
    if isinstance(v, dict):
        return {k: _strip(x) for k, x in v.items() if not (isinstance(k, str) and k.startswith("_"))}
    if isinstance(v, list):
        return [_strip(x) for x in v]
    return v


# ---------------------------------------------------------------- column alignment


def _tabwrite(text: str, minwidth: int, padding: int) -> str:
    """Align tab-separated cells like Go's text/tabwriter: a column's width is set by the run of
    consecutive lines that all have a tab-terminated cell in it; the last cell of a line is never
    padded. Trailing spaces are dropped."""
    lines = [ln.split("\t") for ln in text.rstrip("\n").split("\n")]
    out: list[str] = []
    widths: list[int] = []

    def emit(a: int, b: int) -> None:
        for cells in lines[a:b]:
            out.append("".join(c.ljust(widths[j]) if j < len(widths) else c for j, c in enumerate(cells)).rstrip())

    def block(a: int, b: int) -> None:
        col, i = len(widths), a
        while i < b:
            if col >= len(lines[i]) - 1:
                i += 1
                continue
            emit(a, i)
            start, width = i, minwidth
            while i < b and col < len(lines[i]) - 1:
                width = max(width, len(lines[i][col]) + padding)
                i += 1
            widths.append(width)
            block(start, i)
            widths.pop()
            a = i
        emit(a, b)

    block(0, len(lines))
    return "\n".join(out)


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    """kubectl's plain `get` output: upper-case headers, left-aligned columns, at least 3 spaces
    between them (like kubectl's tabwriter, every column but the last is also at least 6 wide)."""
    def clean(c: str) -> str:
        return c.replace("\t", " ").replace("\n", " ")

    lines = ["\t".join(clean(h).upper() for h in headers)] + ["\t".join(map(clean, r)) for r in rows]
    return _tabwrite("\n".join(lines), 6, 3)


# ---------------------------------------------------------------- get tables


def _age_col(o: Obj, now: datetime) -> str:
    return _age(_get(o, "metadata", "creationTimestamp"), now)


def _date_col(path: str) -> Callable[[Obj, datetime], str]:
    """A CRD "date" column: an age, or blank when the field is absent."""
    return lambda o, now: _age(_get(o, *path.split(".")), now) if _get(o, *path.split(".")) else ""


def _exit_reason(term: Obj, prefix: str = "") -> str:
    if term.get("reason"):
        return prefix + str(term["reason"])
    if term.get("signal"):
        return f"{prefix}Signal:{term['signal']}"
    return f"{prefix}ExitCode:{term.get('exitCode', 0)}"


def _pod_summary(o: Obj, now: datetime) -> tuple[str, str, str]:
    """(READY, STATUS, RESTARTS) of a pod, derived the way `kubectl get pod` does."""
    spec, st = _d(o, "spec"), _d(o, "status")
    conds = _l(st, "conditions")
    reason = _s(st, "reason") or _s(st, "phase")
    if any(_s(c, "type") == "PodScheduled" and _s(c, "reason") == "SchedulingGated" for c in conds):
        reason = "SchedulingGated"
    restarts, initializing = 0, False
    for i, c in enumerate(_l(st, "initContainerStatuses")):
        restarts += int(c.get("restartCount") or 0)
        term, wait = _get(c, "state", "terminated"), _d(c, "state", "waiting")
        if isinstance(term, dict) and not term.get("exitCode"):
            continue
        initializing = True
        if isinstance(term, dict):
            reason = _exit_reason(term, "Init:")
        elif wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = f"Init:{wait['reason']}"
        else:
            reason = f"Init:{i}/{len(_l(spec, 'initContainers'))}"
        break
    statuses = _l(st, "containerStatuses")
    ready, last_restart = 0, None
    if not initializing:
        restarts, running = 0, False
        for c in reversed(statuses):
            restarts += int(c.get("restartCount") or 0)
            finished = _parse_time(_get(c, "lastState", "terminated", "finishedAt"))
            if finished is not None and (last_restart is None or finished > last_restart):
                last_restart = finished
            term, wait = _get(c, "state", "terminated"), _d(c, "state", "waiting")
            if wait.get("reason"):
                reason = str(wait["reason"])
            elif isinstance(term, dict):
                reason = _exit_reason(term)
            elif c.get("ready") is True:
                running, ready = True, ready + 1
        if reason == "Completed" and running:
            ok = any(_s(c, "type") == "Ready" and _s(c, "status") == "True" for c in conds)
            reason = "Running" if ok else "NotReady"
    if _get(o, "metadata", "deletionTimestamp"):
        if _s(st, "reason") == "NodeLost":
            reason = "Unknown"
        elif _s(st, "phase") not in ("Succeeded", "Failed"):
            reason = "Terminating"
    shown = str(restarts)
    if restarts and last_restart is not None:
        shown = f"{restarts} ({human_duration(now - last_restart)} ago)"
    return f"{ready}/{len(_l(spec, 'containers')) or len(statuses)}", reason, shown


def _readiness_gates(o: Obj, now: datetime) -> str:
    gates = [_s(g, "conditionType") for g in _l(o, "spec", "readinessGates")]
    true = {_s(c, "type") for c in _l(o, "status", "conditions") if _s(c, "status") == "True"}
    return f"{sum(g in true for g in gates)}/{len(gates)}" if gates else NONE


def _replicas(o: Obj, now: datetime) -> str:
    return f"{_s(o, 'status', 'readyReplicas', default='0')}/{_s(o, 'spec', 'replicas', default='1')}"


def _containers_col(field: str) -> Callable[[Obj, datetime], str]:
    return lambda o, now: ",".join(_s(c, field) for c in _l(o, "spec", "template", "spec", "containers"))


def _node_status(o: Obj, now: datetime) -> str:
    ready = [_s(c, "status") for c in _l(o, "status", "conditions") if _s(c, "type") == "Ready"]
    status = "Unknown" if not ready else "Ready" if ready[0] == "True" else "NotReady"
    return status + (",SchedulingDisabled" if _get(o, "spec", "unschedulable") else "")


def _node_roles(o: Obj, now: datetime | None = None) -> str:
    roles = {str(v) for k, v in _d(o, "metadata", "labels").items() if k == "kubernetes.io/role" and v}
    roles |= {k.split("/", 1)[1] for k in _d(o, "metadata", "labels") if k.startswith("node-role.kubernetes.io/")}
    return ",".join(sorted(r for r in roles if r)) or NONE


def _address(kind: str) -> Callable[[Obj, datetime], str]:
    return lambda o, now: next((_s(a, "address") for a in _l(o, "status", "addresses") if _s(a, "type") == kind), NONE)


def _event_times(e: Obj, now: datetime) -> tuple[str, str, int]:
    """(first seen, last seen, count) of an Event."""
    first = _age(e.get("firstTimestamp") or e.get("eventTime"), now)
    return first, (_age(e["lastTimestamp"], now) if e.get("lastTimestamp") else first), int(e.get("count") or 1)


def _event_object(e: Obj, now: datetime) -> str:
    return _s(e, "involvedObject", "kind").lower() + (f"/{_s(e, 'involvedObject', 'name')}"
                                                      if _s(e, "involvedObject", "name") else "")


def _event_source(e: Obj, now: datetime) -> str:
    return ", ".join(x for x in (_s(e, "source", "component") or _s(e, "reportingComponent"),
                                 _s(e, "source", "host")) if x)


# kind -> (show_kind prefix, columns); a "*" before a header marks a column only `-o wide` shows
_TABLES: dict[str, tuple[str, list[tuple[str, Getter]]]] = {
    "PersistentVolumeClaim": ("persistentvolumeclaim", [
        ("NAME", "metadata.name"), ("STATUS", lambda o, t: _phase(o)), ("VOLUME", "spec.volumeName"),
        ("CAPACITY", lambda o, t: _s(o, "status", "capacity", "storage") if _s(o, "spec", "volumeName") else ""),
        ("ACCESS MODES", lambda o, t: _modes(_get(o, "status", "accessModes")) if _s(o, "spec", "volumeName") else ""),
        ("STORAGECLASS", lambda o, t: _claim_class(o)), ("VOLUMEATTRIBUTESCLASS", "spec.volumeAttributesClassName|<unset>"),
        ("AGE", _age_col), ("*VOLUMEMODE", "spec.volumeMode|<unset>")]),
    "PersistentVolume": ("persistentvolume", [
        ("NAME", "metadata.name"), ("CAPACITY", "spec.capacity.storage|0"),
        ("ACCESS MODES", lambda o, t: _modes(_get(o, "spec", "accessModes"))),
        ("RECLAIM POLICY", "spec.persistentVolumeReclaimPolicy"), ("STATUS", lambda o, t: _phase(o)),
        ("CLAIM", lambda o, t: _claim_ref(o)), ("STORAGECLASS", lambda o, t: _claim_class(o)),
        ("VOLUMEATTRIBUTESCLASS", "spec.volumeAttributesClassName|<unset>"), ("REASON", "status.reason"),
        ("AGE", _age_col), ("*VOLUMEMODE", "spec.volumeMode|<unset>")]),
    "Pod": ("pod", [
        ("NAME", "metadata.name"), ("READY", lambda o, t: _pod_summary(o, t)[0]),
        ("STATUS", lambda o, t: _pod_summary(o, t)[1]), ("RESTARTS", lambda o, t: _pod_summary(o, t)[2]),
        ("AGE", _age_col), ("*IP", lambda o, t: _s(o, "status", "podIPs", 0, "ip") or _s(o, "status", "podIP") or NONE),
        ("*NODE", "spec.nodeName|<none>"), ("*NOMINATED NODE", "status.nominatedNodeName|<none>"),
        ("*READINESS GATES", _readiness_gates)]),
    "StorageClass": ("storageclass.storage.k8s.io", [
        ("NAME", lambda o, t: _s(o, "metadata", "name") + (" (default)" if _is_default_class(o) else "")),
        ("PROVISIONER", "provisioner"), ("RECLAIMPOLICY", "reclaimPolicy|Delete"),
        ("VOLUMEBINDINGMODE", "volumeBindingMode|Immediate"), ("ALLOWVOLUMEEXPANSION", "allowVolumeExpansion|false"),
        ("AGE", _age_col)]),
    "VolumeAttachment": ("volumeattachment.storage.k8s.io", [
        ("NAME", "metadata.name"), ("ATTACHER", "spec.attacher"), ("PV", "spec.source.persistentVolumeName"),
        ("NODE", "spec.nodeName"), ("ATTACHED", "status.attached|false"), ("AGE", _age_col)]),
    "VolumeSnapshot": ("volumesnapshot.snapshot.storage.k8s.io", [
        ("NAME", "metadata.name"), ("READYTOUSE", "status.readyToUse"),
        ("SOURCEPVC", "spec.source.persistentVolumeClaimName"),
        ("SOURCESNAPSHOTCONTENT", "spec.source.volumeSnapshotContentName"), ("RESTORESIZE", "status.restoreSize"),
        ("SNAPSHOTCLASS", "spec.volumeSnapshotClassName"), ("SNAPSHOTCONTENT", "status.boundVolumeSnapshotContentName"),
        ("CREATIONTIME", _date_col("status.creationTime")), ("AGE", _age_col)]),
    "VolumeSnapshotContent": ("volumesnapshotcontent.snapshot.storage.k8s.io", [
        ("NAME", "metadata.name"), ("READYTOUSE", "status.readyToUse"), ("RESTORESIZE", "status.restoreSize"),
        ("DELETIONPOLICY", "spec.deletionPolicy"), ("DRIVER", "spec.driver"),
        ("VOLUMESNAPSHOTCLASS", "spec.volumeSnapshotClassName"), ("VOLUMESNAPSHOT", "spec.volumeSnapshotRef.name"),
        ("VOLUMESNAPSHOTNAMESPACE", "spec.volumeSnapshotRef.namespace"), ("AGE", _age_col)]),
    "VolumeSnapshotClass": ("volumesnapshotclass.snapshot.storage.k8s.io", [
        ("NAME", "metadata.name"), ("DRIVER", "driver"), ("DELETIONPOLICY", "deletionPolicy"), ("AGE", _age_col)]),
    # The printer columns of the groupsnapshot.storage.k8s.io CRDs.
    "VolumeGroupSnapshot": ("volumegroupsnapshot.groupsnapshot.storage.k8s.io", [
        ("NAME", "metadata.name"), ("READYTOUSE", "status.readyToUse"),
        ("VOLUMEGROUPSNAPSHOTCLASS", "spec.volumeGroupSnapshotClassName"),
        ("VOLUMEGROUPSNAPSHOTCONTENT", "status.boundVolumeGroupSnapshotContentName"),
        ("CREATIONTIME", _date_col("status.creationTime")), ("AGE", _age_col)]),
    "VolumeGroupSnapshotContent": ("volumegroupsnapshotcontent.groupsnapshot.storage.k8s.io", [
        ("NAME", "metadata.name"), ("READYTOUSE", "status.readyToUse"), ("DELETIONPOLICY", "spec.deletionPolicy"),
        ("DRIVER", "spec.driver"), ("VOLUMEGROUPSNAPSHOTCLASS", "spec.volumeGroupSnapshotClassName"),
        ("VOLUMEGROUPSNAPSHOTNAMESPACE", "spec.volumeGroupSnapshotRef.namespace"),
        ("VOLUMEGROUPSNAPSHOT", "spec.volumeGroupSnapshotRef.name"), ("AGE", _age_col)]),
    "VolumeGroupSnapshotClass": ("volumegroupsnapshotclass.groupsnapshot.storage.k8s.io", [
        ("NAME", "metadata.name"), ("DRIVER", "driver"), ("DELETIONPOLICY", "deletionPolicy"), ("AGE", _age_col)]),
    "StatefulSet": ("statefulset.apps", [
        ("NAME", "metadata.name"), ("READY", _replicas), ("AGE", _age_col),
        ("*CONTAINERS", _containers_col("name")), ("*IMAGES", _containers_col("image"))]),
    "Deployment": ("deployment.apps", [
        ("NAME", "metadata.name"), ("READY", _replicas), ("UP-TO-DATE", "status.updatedReplicas|0"),
        ("AVAILABLE", "status.availableReplicas|0"), ("AGE", _age_col), ("*CONTAINERS", _containers_col("name")),
        ("*IMAGES", _containers_col("image")), ("*SELECTOR", lambda o, t: _selector(_get(o, "spec", "selector")))]),
    "Node": ("node", [
        ("NAME", "metadata.name"), ("STATUS", _node_status), ("ROLES", _node_roles), ("AGE", _age_col),
        ("VERSION", "status.nodeInfo.kubeletVersion"), ("*INTERNAL-IP", _address("InternalIP")),
        ("*EXTERNAL-IP", _address("ExternalIP")), ("*OS-IMAGE", "status.nodeInfo.osImage|<unknown>"),
        ("*KERNEL-VERSION", "status.nodeInfo.kernelVersion|<unknown>"),
        ("*CONTAINER-RUNTIME", "status.nodeInfo.containerRuntimeVersion|<unknown>"),
        ("*ZONE", lambda o, t: _s(o, "metadata", "labels", "topology.kubernetes.io/zone"))]),
    "Event": ("event", [
        ("LAST SEEN", lambda o, t: _event_times(o, t)[1]), ("TYPE", "type"), ("REASON", "reason"),
        ("OBJECT", _event_object), ("*SUBOBJECT", "involvedObject.fieldPath"), ("*SOURCE", _event_source),
        ("MESSAGE", lambda o, t: _s(o, "message").strip()), ("*FIRST SEEN", lambda o, t: _event_times(o, t)[0]),
        ("*COUNT", lambda o, t: str(_event_times(o, t)[2])), ("*NAME", "metadata.name")]),
}
_KIND_NAMES = {k.lower(): k for k in _TABLES}


def _cell(o: Obj, getter: Getter, now: datetime) -> str:
    if callable(getter):
        return getter(o, now)
    path, _, default = getter.partition("|")
    return _s(o, *path.split("."), default=default)


def table(kind: str, objects: list[Obj], *, wide: bool = False, now: datetime | None = None,
          show_kind: bool = False) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of `kubectl get KIND [-o wide]`. `kind` is a Kind name (case-insensitive);
    an unknown one raises KeyError. show_kind prefixes NAME like a multi-kind get ("pod/app")."""
    canonical = _KIND_NAMES.get(kind.lower())
    if canonical is None:
        raise KeyError(f"no table printer for kind {kind!r}")
    prefix, columns = _TABLES[canonical]
    cols = [(h.lstrip("*"), g) for h, g in columns if wide or not h.startswith("*")]
    t, rows = _now(now), []
    for o in objects:
        rows.append([(f"{prefix}/" if show_kind and h == "NAME" else "") + _cell(o, g, t) for h, g in cols])
    return [h for h, _ in cols], rows


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


# ---------------------------------------------------------------- -o yaml / -o json


def _document(objects: list[Obj], single: bool) -> Any:
    if single:
        if len(objects) != 1:
            raise ValueError(f"single=True needs exactly one object, got {len(objects)}")
        return _strip(objects[0])
    return {"apiVersion": "v1", "kind": "List", "items": [_strip(o) for o in objects],
            "metadata": {"resourceVersion": ""}}


def to_yaml(objects: list[Obj], *, single: bool) -> str:
    """`-o yaml`: the object itself when single, else a v1 List of them; private keys removed.
    Ends with a newline, as PyYAML writes documents."""
    return yaml.safe_dump(_document(objects, single), sort_keys=False, default_flow_style=False,
                          allow_unicode=True, width=1 << 20)


def to_json(objects: list[Obj], *, single: bool) -> str:
    """`-o json` (4-space indent, like kubectl): the object when single, else a v1 List."""
    return json.dumps(_document(objects, single), indent=4, ensure_ascii=False)


# ---------------------------------------------------------------- JSONPath

Step = tuple[str, Any]  # ("key", name) | ("index", n) | ("slice", slice) | ("all", None) | ("filter", (...))
Node = tuple[str, Any]  # ("text", str) | ("path", steps) | ("range", (steps, body))
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: bool(a == b), "!=": lambda a, b: bool(a != b), "<": lambda a, b: bool(a < b),
    ">": lambda a, b: bool(a > b), "<=": lambda a, b: bool(a <= b), ">=": lambda a, b: bool(a >= b)}
_FILTER = re.compile(r"\?\(\s*(@[^=!<>\s]*)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*\)")


def _closing(s: str, i: int, open_ch: str, close_ch: str) -> int:
    """Index of the close_ch matching s[i] == open_ch, skipping quoted text; ValueError if none."""
    depth, quote, j = 0, "", i
    while j < len(s):
        ch = s[j]
        if quote:
            j += ch == "\\"
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in (open_ch, close_ch):
            depth += 1 if ch == open_ch else -1
            if depth == 0:
                return j
        j += 1
    raise ValueError(f"JSONPath: unclosed {open_ch!r} in {s!r}")


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return json.loads(text) if text[0] == '"' else text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text) if re.fullmatch(r"-?\d+", text) else float(text)
    except ValueError:
        raise ValueError(f"JSONPath: unsupported literal {text!r}") from None


def _bracket(inner: str, src: str) -> Step:
    inner = inner.strip()
    if inner == "*":
        return ("all", None)
    if re.fullmatch(r"-?\d+", inner):
        return ("index", int(inner))
    if m := re.fullmatch(r"(-?\d*):(-?\d*)(?::(\d+))?", inner):
        return ("slice", slice(*(int(g) if g else None for g in m.groups())))
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "\"'":
        return ("key", _literal(inner))
    if m := _FILTER.fullmatch(inner):
        left, op, right = m.groups()
        return ("filter", (_path(left), op, None if op is None else _literal(right)))
    raise ValueError(f"JSONPath: unsupported subscript [{inner}] in {src!r}")


def _path(src: str) -> list[Step]:
    s = src.strip()
    s = s[1:] if s[:1] in ("$", "@") else s
    if s in ("", "."):
        return []
    s = s if s[0] in ".[" else "." + s
    steps: list[Step] = []
    i = 0
    while i < len(s):
        if s.startswith("..", i):
            raise ValueError(f"JSONPath: recursive descent '..' is not supported: {src!r}")
        if s[i] == "[":
            j = _closing(s, i, "[", "]")
            steps.append(_bracket(s[i + 1:j], src))
            i = j + 1
            continue
        if s[i] != ".":
            raise ValueError(f"JSONPath: unexpected {s[i]!r} in {src!r}")
        i += 1
        if s.startswith("*", i):
            steps.append(("all", None))
            i += 1
            continue
        name: list[str] = []
        while i < len(s) and s[i] not in ".[":
            if s[i] == "\\" and i + 1 < len(s):
                i += 1
            elif s[i].isspace() or s[i] in "]()=!<>\"'{}":
                raise ValueError(f"JSONPath: unsupported syntax {src!r}")
            name.append(s[i])
            i += 1
        if not name:
            raise ValueError(f"JSONPath: empty field name in {src!r}")
        steps.append(("key", "".join(name)))
    return steps


def _evaluate(steps: list[Step], roots: list[Any]) -> list[Any]:
    cur = roots
    for kind, arg in steps:
        nxt: list[Any] = []
        for v in cur:
            if kind == "key" and isinstance(v, dict) and arg in v:
                nxt.append(v[arg])
            elif kind == "index" and isinstance(v, list) and -len(v) <= arg < len(v):
                nxt.append(v[arg])
            elif kind == "slice" and isinstance(v, list):
                nxt.extend(v[arg])
            elif kind == "all" and isinstance(v, list | dict):
                nxt.extend(v if isinstance(v, list) else (v[k] for k in sorted(v)))
            elif kind == "filter" and isinstance(v, list):
                nxt.extend(x for x in v if _matches(x, *arg))
        cur = nxt
    return cur


def _matches(item: Any, left: list[Step], op: str | None, right: Any) -> bool:
    found = _evaluate(left, [item])
    if op is None:
        return bool(found)
    for value in found:
        try:
            if isinstance(value, bool) == isinstance(right, bool) and _OPS[op](value, right):
                return True
        except TypeError:
            continue
    return False


def _template(expr: str) -> list[Node]:
    stack: list[tuple[list[Step], list[Node]]] = []
    nodes: list[Node] = []
    i = 0
    while i < len(expr):
        start, close = expr.find("{", i), expr.find("}", i)
        if close != -1 and (start == -1 or close < start):
            raise ValueError(f"JSONPath: unmatched '}}' in {expr!r}")
        if start == -1:
            nodes.append(("text", expr[i:]))
            break
        if start > i:
            nodes.append(("text", expr[i:start]))
        end = _closing(expr, start, "{", "}")
        action, i = expr[start + 1:end].strip(), end + 1
        if action[:1] in ("'", '"'):
            nodes.append(("text", str(_literal(action))))
        elif action == "end":
            if not stack:
                raise ValueError(f"JSONPath: {{end}} without {{range}} in {expr!r}")
            steps, outer = stack.pop()
            outer.append(("range", (steps, nodes)))
            nodes = outer
        elif action.split(None, 1)[:1] == ["range"]:
            stack.append((_path(action[5:]), nodes))
            nodes = []
        elif not action:
            raise ValueError(f"JSONPath: empty expression in {expr!r}")
        else:
            nodes.append(("path", _path(action)))
    if stack:
        raise ValueError(f"JSONPath: {{range}} without {{end}} in {expr!r}")
    return nodes


def _render(nodes: list[Node], root: Any) -> str:
    out: list[str] = []
    for kind, arg in nodes:
        if kind == "text":
            out.append(arg)
        elif kind == "path":
            out.append(" ".join(_scalar(v) for v in _evaluate(arg, [root])))
        else:
            out.extend(_render(arg[1], item) for item in _evaluate(arg[0], [root]))
    return "".join(out)


def jsonpath(obj: Obj, expr: str) -> str:
    """Evaluate a kubectl-style JSONPath template against obj (private keys are invisible).

    Supports {.a.b}, {$.a}, [N], [a:b], [*], .*, ['key'], escaped dots in keys (a\\.b), filters
    [?(@.x=="v")] with == != < > <= >= or bare existence, {range ...}{end}, {"literal"}, and text
    outside braces copied as is. Several results are joined by a space; a missing field gives "".
    Anything else raises ValueError."""
    return _render(_template(expr), _strip(obj))
