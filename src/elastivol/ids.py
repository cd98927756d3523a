"""Identifier formats. An id that does not match its exact format never reaches the filesystem."""

from __future__ import annotations

import re
import secrets

_HEX17 = "[0-9a-f]{17}"
VOLUME_ID = re.compile(rf"vol-{_HEX17}")
SNAPSHOT_ID = re.compile(rf"snap-{_HEX17}")
FILESYSTEM_ID = re.compile(rf"fs-{_HEX17}")
ACCESS_POINT_ID = re.compile(rf"fsap-{_HEX17}")
# Node ids become file names in the pool; keep them to a safe alphabet.
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def new_id(prefix: str) -> str:
    """A fresh id such as ``vol-0a1b2c3d4e5f60718`` (prefix + 17 lowercase hex)."""
    return f"{prefix}-{secrets.token_hex(9)[:17]}"


def is_volume_id(value: str) -> bool:
    return VOLUME_ID.fullmatch(value) is not None


def is_snapshot_id(value: str) -> bool:
    return SNAPSHOT_ID.fullmatch(value) is not None


def is_filesystem_id(value: str) -> bool:
    return FILESYSTEM_ID.fullmatch(value) is not None


def is_access_point_id(value: str) -> bool:
    return ACCESS_POINT_ID.fullmatch(value) is not None


def is_node_id(value: str) -> bool:
    return NODE_ID.fullmatch(value) is not None
