"""Which volume capabilities the block driver serves: one check for the controller and the node."""

from __future__ import annotations

from elastivol.domain import VOLUME_FS_TYPES, AccessMode, VolumeMode
from elastivol.drivers.common import Capability
from elastivol.errors import InvalidArgument
from elastivol.params.block import BlockParameters


def unsupported_mode_message(cap: Capability) -> str:
    # The wording EBS CSI users meet (seed 000), so that searches for it find the answer.
    return (
        f"Volume capabilities {cap.mode.name} not supported. Only AccessModes[ReadWriteOnce] supported."
        if cap.volume_mode is VolumeMode.FILESYSTEM
        else f"Volume capabilities {cap.mode.name} not supported for raw block volumes without "
        'multiAttach: "true". Only AccessModes[ReadWriteOnce] supported.'
    )


def check_fs_type(fs_type: str) -> None:
    if fs_type not in VOLUME_FS_TYPES:
        raise InvalidArgument(f"fs type {fs_type!r} is not supported; choose one of {', '.join(VOLUME_FS_TYPES)}")


def check_block_capability(cap: Capability, params: BlockParameters | None = None, multi_attach: bool = False) -> None:
    if cap.mode.multi_node:
        # EBS multi-attach: raw block only, opted in per StorageClass, many writers.
        allowed = (
            cap.volume_mode is VolumeMode.BLOCK
            and cap.mode is AccessMode.MULTI_NODE_MULTI_WRITER
            and (multi_attach or (params is not None and params.multi_attach))
        )
        if not allowed:
            raise InvalidArgument(unsupported_mode_message(cap))
    if cap.volume_mode is VolumeMode.FILESYSTEM and cap.fs_type:
        check_fs_type(cap.fs_type)
