"""Identifier formats. An id that does not match its exact format never reaches the filesystem."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

# AWS ids have 17 hex digits today; volumes, snapshots and file systems made before 2016-2018 keep
# their 8-digit ids (seed 000's fs-4af69aab), and moto makes 8-digit EFS ids. New ids are 17.
_HEX = "(?:[0-9a-f]{8}|[0-9a-f]{17})"
VOLUME_ID = re.compile(rf"vol-{_HEX}")
SNAPSHOT_ID = re.compile(rf"snap-{_HEX}")
FILESYSTEM_ID = re.compile(rf"fs-{_HEX}")
ACCESS_POINT_ID = re.compile(rf"fsap-{_HEX}")
# Volume group snapshots (EBS has no such object: the aws provider tags the members with this id).
GROUP_SNAPSHOT_ID = re.compile(r"vgs-[0-9a-f]{17}")
# Node ids become file names in the pool; keep them to a safe alphabet.
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def new_id(prefix: str) -> str:
    """A fresh id such as ``vol-0a1b2c3d4e5f60718`` (prefix + 17 lowercase hex)."""
    # os.urandom is what the secrets module reads too; importing it would bring random and hmac.
    return f"{prefix}-{os.urandom(9).hex()[:17]}"


def _matcher(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    """A check that ``value`` is an id of ``pattern``'s format, as a whole."""

    def matches(value: str) -> bool:
        return pattern.fullmatch(value) is not None

    return matches


is_volume_id = _matcher(VOLUME_ID)
is_snapshot_id = _matcher(SNAPSHOT_ID)
is_group_snapshot_id = _matcher(GROUP_SNAPSHOT_ID)
is_filesystem_id = _matcher(FILESYSTEM_ID)
is_access_point_id = _matcher(ACCESS_POINT_ID)
is_node_id = _matcher(NODE_ID)
