"""EFS access points as the API shows them: our tags, and the conversion to the domain's AccessPoint
(shared by the controller's EfsProvider and the node's catalog)."""

from __future__ import annotations

from typing import Any

from elastivol.providers.file import AccessPoint

NAME_TAG = "CSIVolumeName"
CLUSTER_TAG = "elastivol.io/cluster"
CAPACITY_TAG = "elastivol.io/capacity-bytes"
DELETE_ROOT_TAG = "elastivol.io/delete-root-dir"
REUSE_TAG = "elastivol.io/reuse-key"
BASE_PATH_TAG = "elastivol.io/base-path"
Obj = dict[str, Any]


def _tags(obj: Obj) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in obj.get("Tags", []) or []}


def to_access_point(ap: Obj) -> AccessPoint:
    tags = _tags(ap)
    posix = ap.get("PosixUser", {}) or {}
    root = ap.get("RootDirectory", {}) or {}
    info = root.get("CreationInfo", {}) or {}
    try:
        perms = int(str(info.get("Permissions", "0")), 8)
    except ValueError:
        perms = 0
    return AccessPoint(
        id=str(ap["AccessPointId"]),
        fs_id=str(ap["FileSystemId"]),
        name=tags.get(NAME_TAG, tags.get("Name", "")),
        directory=str(root.get("Path", "/")),
        uid=int(posix.get("Uid", 0)),
        gid=int(posix.get("Gid", 0)),
        perms=perms,
        capacity_bytes=int(tags.get(CAPACITY_TAG, "0") or 0),
        delete_root_dir=tags.get(DELETE_ROOT_TAG) == "true",
        tags=tags,
    )


