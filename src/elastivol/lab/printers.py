"""kubectl-style output for the lab: `get` tables, `-o yaml|json`, and the helpers that `describe`
(:mod:`elastivol.lab.describe`) and JSONPath (:mod:`elastivol.lab.jsonpath`) share with them.

Objects are plain dicts in the Kubernetes JSON shape. Everything here is a pure function of its
arguments (pass `now` to make ages deterministic). Text results carry no trailing newline, so they
can be handed straight to `click.echo` -- except to_yaml, which ends with PyYAML's newline. Keys starting with "_" are the lab's private notes on an
object (e.g. a PVC's "_usedBy"); they never appear in any output except where documented.
"""

from __future__ import annotations

import json
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
        ("STORAGECLASS", lambda o, t: _claim_class(o)),
        # What the volume has (as kubectl prints it), not what the claim asks for.
        ("VOLUMEATTRIBUTESCLASS", "status.currentVolumeAttributesClassName|<unset>"),
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
    "VolumeAttributesClass": ("volumeattributesclass.storage.k8s.io", [
        ("NAME", "metadata.name"), ("DRIVERNAME", "driverName"), ("AGE", _age_col)]),
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


