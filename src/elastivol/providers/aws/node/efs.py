"""The EFS node side: NodePublish mounts ``fs-id[:/path]`` through the access point with the mount helper."""

from __future__ import annotations

import os
import posixpath
from typing import Any

from elastivol.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated, Unavailable
from elastivol.node import mount as hostmount
from elastivol.node.paths import PathGuard, require_directory_target
from elastivol.providers.aws.awserrors import call
from elastivol.providers.aws.efs_model import to_access_point
from elastivol.providers.aws.mounter import Mounter, MountRequest
from elastivol.providers.file import FILE_TARGET, AccessPoint, FilePublication, FileSystem, FileUsage


class EfsNodeProvider:
    """Publishes EFS volumes. Targets pass the node's path guard here too, whoever calls, and the
    mount gets the same safe defaults (nosuid, nodev) as every other volume mount."""

    def __init__(self, mounter: Mounter, guard: PathGuard, *, allow_privileged_mount_options: bool = False) -> None:
        self.mounter = mounter
        self.guard = guard
        self.allow_privileged = allow_privileged_mount_options

    def publish(self, publication: FilePublication) -> None:
        target = str(self.guard.check(publication.target))
        require_directory_target(target, FILE_TARGET)
        subpath = publication.subpath.strip("/")
        path = posixpath.normpath("/" + subpath) if subpath else "/"
        options = tuple(o for o in publication.mount_options if o not in ("ro", "rw"))
        # suid/dev/exec only when the operator allowed them; the syntax checks always apply.
        hostmount.parse_options(options, allow_privileged=self.allow_privileged)
        ro = publication.readonly or "ro" in publication.mount_options
        self.mounter.mount(MountRequest(publication.fs_id, path, publication.access_point, target, ro, options))

    def unpublish(self, target: str) -> None:
        self.mounter.unmount(str(self.guard.check(target)))

    def usage(self, fs_id: str, access_point: AccessPoint | None, path: str) -> FileUsage:
        # EFS reports an effectively unlimited size (8 EiB); statfs shows what the mount says.
        st = os.statvfs(path)
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        return FileUsage(
            total_bytes=total,
            used_bytes=max(total - st.f_bfree * st.f_frsize, 0),
            available_bytes=free,
            inodes_total=st.f_files,
            inodes_used=max(st.f_files - st.f_ffree, 0),
            inodes_available=st.f_favail,
        )


class EfsCatalog:
    """How a node learns an access point's details. The node role usually has no EFS permission
    (mounting needs none), so when EFS cannot be asked, the access point id alone is enough for
    the mount helper."""

    def __init__(self, efs: Any) -> None:
        self.efs = efs

    def get_filesystem(self, fs_id: str) -> FileSystem:
        return FileSystem(id=fs_id, name=fs_id, root="")

    def get_access_point(self, fs_id: str, ap_id: str) -> AccessPoint:
        try:
            found = call(self.efs, "DescribeAccessPoints", AccessPointId=ap_id).get("AccessPoints", [])
        except (PermissionDenied, Unauthenticated, Unavailable, InvalidArgument):
            return AccessPoint(id=ap_id, fs_id=fs_id, name="", directory="", uid=0, gid=0, perms=0, capacity_bytes=0)
        except NotFound:
            found = []
        if not found or found[0].get("FileSystemId") != fs_id:
            raise NotFound(f"access point {ap_id} of file system {fs_id} does not exist")
        return to_access_point(found[0])
