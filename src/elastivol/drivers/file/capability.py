"""Which volume capabilities the file driver serves: one check for the controller and the node."""

from __future__ import annotations

from elastivol.domain import VolumeMode
from elastivol.drivers.common import Capability
from elastivol.errors import InvalidArgument


def check_file_capability(cap: Capability) -> None:
    """Every access mode works on a shared directory (ReadOnlyMany included); raw block does not."""
    if cap.volume_mode is VolumeMode.BLOCK:
        raise InvalidArgument(
            "only filesystem volumes are supported: this driver shares directories, which cannot be raw "
            "block devices; use volumeMode: Filesystem (or the block driver for raw block volumes)"
        )
