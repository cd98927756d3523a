"""EBS <-> domain: tag names, ClientTokens, and EC2 dicts turned into Volume and Snapshot.

AWS is the source of truth: everything the controller needs to know about a volume after a restart
is in EC2's own fields or in the tags written at creation (there is no other store).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from elastivol.domain import Attachment, ContentSource, Snapshot, VolumeMode
from elastivol.errors import InvalidArgument
from elastivol.params.block import BlockParameters, Performance, VolumeType
from elastivol.providers.block import Volume, VolumeSpec
from elastivol.providers.groups import GROUP_TAG
from elastivol.units import GiB

NAME_TAG = "CSIVolumeName"
SNAPSHOT_NAME_TAG = "CSIVolumeSnapshotName"
CLUSTER_TAG = "elastivol.io/cluster"
FS_TYPE_TAG = "elastivol.io/fs-type"
MODE_TAG = "elastivol.io/volume-mode"
IOPS_PER_GB_TAG = "elastivol.io/iops-per-gb"
AUTO_IOPS_TAG = "elastivol.io/allow-auto-iops-per-gb-increase"
CLONE_SOURCE_TAG = "elastivol.io/clone-source"  # on a clone: the volume it was cloned from
CLONE_FOR_TAG = "elastivol.io/clone-for"  # on the temporary snapshot of a clone: the clone's name
PVC_NAME_TAG = "kubernetes.io/created-for/pvc/name"
PVC_NAMESPACE_TAG = "kubernetes.io/created-for/pvc/namespace"
PV_NAME_TAG = "kubernetes.io/created-for/pv/name"

ATTACHED_STATES = ("attaching", "attached", "busy")
PROVISIONED_IOPS_TYPES = (VolumeType.GP3, VolumeType.IO1, VolumeType.IO2)
MAX_TAGS = 50
# What XML 1.0 cannot carry: EC2 answers in XML, so a tag holding one of these would break
# every later Describe* of the object (moto's answer stops parsing; AWS refuses the tag).
_UNTAGGABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def client_token(name: str) -> str:
    """EC2's idempotency key for a CSI name: the same name always sends the same token (<= 64 chars)."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """Tags in the API's shape; refused (nothing sent) when one holds a character AWS cannot store."""
    for key, value in tags.items():
        for what, text in (("key", key), ("value", value)):
            bad = _UNTAGGABLE.search(text)
            if bad is not None:
                raise InvalidArgument(
                    f"tag {key[:80]!r}: its {what} holds the control character U+{ord(bad.group()):04X}, which AWS "
                    "tags cannot carry; remove it from the name or parameter the tag is made from"
                )
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tags_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in obj.get("Tags", []) or []}


def volume_tags(spec: VolumeSpec, cluster_id: str, extra: Mapping[str, str]) -> dict[str, str]:
    """The tags a new volume carries: ours, the provisioner's PVC/PV names, extra and StorageClass tags."""
    p = spec.params
    tags: dict[str, str] = {**extra, **p.tags}
    tags[NAME_TAG] = spec.name
    tags[CLUSTER_TAG] = cluster_id
    tags[MODE_TAG] = spec.mode.value
    if spec.fs_type:
        tags[FS_TYPE_TAG] = spec.fs_type
    if p.iops_per_gb is not None:
        tags[IOPS_PER_GB_TAG] = str(p.iops_per_gb)
    if p.allow_auto_iops_per_gb_increase:
        tags[AUTO_IOPS_TAG] = "true"
    for key, value in ((PVC_NAME_TAG, p.pvc_name), (PVC_NAMESPACE_TAG, p.pvc_namespace), (PV_NAME_TAG, p.pv_name)):
        if value:
            tags[key] = value
    if spec.source is not None and spec.source.kind == "volume":
        tags[CLONE_SOURCE_TAG] = spec.source.id
    return tags


def performance_fields(params: BlockParameters, perf: Performance) -> dict[str, Any]:
    """Iops/Throughput as EC2 wants them: only for the types that take them."""
    fields: dict[str, Any] = {}
    if perf.iops is not None and params.volume_type in PROVISIONED_IOPS_TYPES:
        fields["Iops"] = perf.iops
    if perf.throughput is not None and params.volume_type is VolumeType.GP3:
        fields["Throughput"] = perf.throughput
    return fields


def _stamp(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0


def params_record(v: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, str]:
    """The StorageClass parameters of an existing volume, rebuilt from EC2 fields and our tags.

    It parses back with ``parse_block_parameters``: IOPS only for the types that take them (EC2
    reports a baseline for gp2 too), ``iopsPerGB`` instead of ``iops`` when the class used it.
    """
    vtype = str(v.get("VolumeType", "gp2"))
    rec = {"type": vtype}
    if vtype in PROVISIONED_IOPS_TYPES:
        if tags.get(IOPS_PER_GB_TAG):
            rec["iopsPerGB"] = tags[IOPS_PER_GB_TAG]
        elif v.get("Iops"):
            rec["iops"] = str(v["Iops"])
    if vtype == VolumeType.GP3 and v.get("Throughput"):
        rec["throughput"] = str(v["Throughput"])
    if tags.get(AUTO_IOPS_TAG) == "true":
        rec["allowAutoIOPSPerGBIncrease"] = "true"
    if v.get("Encrypted"):
        rec["encrypted"] = "true"
        if v.get("KmsKeyId"):
            rec["kmsKeyId"] = str(v["KmsKeyId"])
    if v.get("MultiAttachEnabled") and vtype == VolumeType.IO2:
        rec["multiAttach"] = "true"
    if tags.get(FS_TYPE_TAG):
        rec["csi.storage.k8s.io/fstype"] = tags[FS_TYPE_TAG]
    return rec


def to_volume(v: Mapping[str, Any]) -> Volume:
    tags = tags_of(v)
    state = str(v.get("State", ""))
    try:
        mode = VolumeMode(tags.get(MODE_TAG, VolumeMode.FILESYSTEM.value))
    except ValueError:
        mode = VolumeMode.FILESYSTEM
    source: ContentSource | None = None
    if tags.get(CLONE_SOURCE_TAG):
        source = ContentSource("volume", tags[CLONE_SOURCE_TAG])
    elif v.get("SourceVolumeId"):
        source = ContentSource("volume", str(v["SourceVolumeId"]))
    elif v.get("SnapshotId"):
        source = ContentSource("snapshot", str(v["SnapshotId"]))
    attachments = tuple(
        Attachment(node_id=str(a["InstanceId"]), attached_at=_stamp(a.get("AttachTime")),
                   device_path=str(a.get("Device", "")))
        for a in v.get("Attachments", []) or []
        if a.get("State") in ATTACHED_STATES
    )
    # "unknown" for a volume made outside elastivol (a static PV): it carries no mode tag.
    extra = {"state": state, "volume_mode": tags.get(MODE_TAG, "unknown")}
    for key in ("Iops", "Throughput"):
        if v.get(key):
            extra[key.lower()] = str(v[key])
    return Volume(
        id=str(v["VolumeId"]),
        name=tags.get(NAME_TAG, ""),
        size_bytes=int(v.get("Size", 0)) * GiB,
        zone=str(v.get("AvailabilityZone", "")),
        params=params_record(v, tags),
        mode=mode,
        fs_type=tags.get(FS_TYPE_TAG, ""),
        source=source,
        created_at=_stamp(v.get("CreateTime")),
        attachments=attachments,
        abnormal="" if state in ("available", "in-use") else f"EBS reports the volume as {state!r}",
        extra=extra,
    )


def to_snapshot(s: Mapping[str, Any]) -> Snapshot:
    tags = tags_of(s)
    return Snapshot(
        id=str(s["SnapshotId"]),
        name=tags.get(SNAPSHOT_NAME_TAG, ""),
        source_volume_id=str(s.get("VolumeId", "")),
        size_bytes=int(s.get("VolumeSize", 0)) * GiB,
        created_at=_stamp(s.get("StartTime")),
        ready=s.get("State") == "completed",
        tags=tags,
        group_snapshot_id=tags.get(GROUP_TAG, ""),
    )
