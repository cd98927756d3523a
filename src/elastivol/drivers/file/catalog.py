"""How both file servicers turn a volume handle into its file system and access point."""

from __future__ import annotations

from typing import Protocol

from elastivol.params.file import VolumeHandle
from elastivol.providers.file import AccessPoint, FileSystem


class FileCatalog(Protocol):
    """Where ids are looked up: the pool's records or the cloud API (a FileProvider is one)."""

    def get_filesystem(self, fs_id: str) -> FileSystem: ...
    def get_access_point(self, fs_id: str, ap_id: str) -> AccessPoint: ...


def resolve(catalog: FileCatalog, handle: VolumeHandle) -> AccessPoint | None:
    """The handle's access point (None for a static volume without one); NotFound if the file
    system or the access point does not exist. Blocking: call it off the event loop."""
    catalog.get_filesystem(handle.fs_id)
    return catalog.get_access_point(handle.fs_id, handle.ap_id) if handle.ap_id else None
