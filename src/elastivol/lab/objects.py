"""Small helpers over Kubernetes-shaped objects: quantities, access modes, metadata."""

from __future__ import annotations

import hashlib
import re
from typing import Any

Obj = dict[str, Any]

_SUFFIX = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")

ACCESS_MODES = {
    "ReadWriteOnce": "SINGLE_NODE_WRITER",
    "ReadWriteOncePod": "SINGLE_NODE_SINGLE_WRITER",
    "ReadOnlyMany": "MULTI_NODE_READER_ONLY",
    "ReadWriteMany": "MULTI_NODE_MULTI_WRITER",
}
ZONE_LABEL = "topology.kubernetes.io/zone"
HOSTNAME_LABEL = "kubernetes.io/hostname"


def parse_quantity(text: Any) -> int:
    """Bytes of a Kubernetes quantity such as 4Gi, 500M or 1073741824."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f'quantities must match the regular expression "^([0-9.]+)(Ki|Mi|Gi|...)?$": {text!r}')
    number, suffix = match.groups()
    value = float(number) * _SUFFIX[suffix or ""]
    return int(value) if value == int(value) else int(value) + 1


def format_quantity(n: int) -> str:
    """The shortest exact binary form, as Kubernetes canonicalises: 4Gi, 1536Mi, 1000."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _SUFFIX[suffix]
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def key(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace')}/{meta['name']}" if meta.get("namespace") else meta["name"]


def deleting(obj: Obj) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def add_finalizer(obj: Obj, name: str) -> bool:
    finalizers = obj["metadata"].setdefault("finalizers", [])
    if name in finalizers:
        return False
    finalizers.append(name)
    return True


def remove_finalizer(obj: Obj, name: str) -> bool:
    finalizers = obj["metadata"].get("finalizers") or []
    if name not in finalizers:
        return False
    finalizers.remove(name)
    return True


def annots(obj: Obj) -> dict[str, str]:
    found: dict[str, str] = obj["metadata"].setdefault("annotations", {}) or {}
    obj["metadata"]["annotations"] = found
    return found


def pvc_request(pvc: Obj) -> int:
    return parse_quantity(pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage", "0"))


def volume_attachment_name(driver: str, pv_name: str, node: str) -> str:
    # Kubernetes names a VolumeAttachment after a hash of these three, so that it is unique per triple.
    return "csi-" + hashlib.sha256(f"{pv_name}{driver}{node}".encode()).hexdigest()


def staging_dir_name(volume_handle: str) -> str:
    return hashlib.sha256(volume_handle.encode()).hexdigest()


def set_condition(obj: Obj, type_: str, status: str, reason: str = "", message: str = "") -> None:
    from elastivol.lab.store import now_rfc3339

    conditions = obj.setdefault("status", {}).setdefault("conditions", [])
    for c in conditions:
        if c.get("type") == type_:
            if c.get("status") != status:
                c["lastTransitionTime"] = now_rfc3339()
            c.update(status=status, reason=reason, message=message, lastProbeTime=None)
            return
    conditions.append({"type": type_, "status": status, "reason": reason, "message": message,
                       "lastProbeTime": None, "lastTransitionTime": now_rfc3339()})


def drop_condition(obj: Obj, type_: str) -> None:
    conditions = obj.get("status", {}).get("conditions")
    if conditions:
        obj["status"]["conditions"] = [c for c in conditions if c.get("type") != type_]


def node_selector_matches(terms: list[Obj], labels: dict[str, str]) -> bool:
    """A nodeSelectorTerms list matches when any term matches (all of its expressions)."""
    if not terms:
        return True
    return any(_term_matches(t, labels) for t in terms)


def _term_matches(term: Obj, labels: dict[str, str]) -> bool:
    for expr in term.get("matchExpressions") or []:
        k, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        have = labels.get(k)
        if op == "In" and have not in values:
            return False
        if op == "NotIn" and have in values:
            return False
        if op == "Exists" and have is None:
            return False
        if op == "DoesNotExist" and have is not None:
            return False
    for expr in term.get("matchFields") or []:
        if expr.get("key") == "metadata.name" and expr.get("operator") == "In" and \
                labels.get(HOSTNAME_LABEL) not in (expr.get("values") or []):
            return False
    return True
