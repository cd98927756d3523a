"""Node side of the local file provider: bind mounts of access point directories, and their usage.

The directory to publish is opened component by component without following links (a pod may
have swapped a subdirectory for a link to ``/``), and the bind mount is made from that open
descriptor (``/proc/self/fd/N``), so the mount is of exactly the directory that was checked.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from dataclasses import dataclass

from elastivol.errors import AlreadyExists, FailedPrecondition, NotFound
from elastivol.node import mount as hostmount
from elastivol.node.paths import require_directory_target
from elastivol.providers.file import FILE_TARGET, AccessPoint, FilePublication, FileSystem, FileUsage
from elastivol.providers.local.file import btrfs, tree
from elastivol.providers.local.file.registry import FileRegistry
from elastivol.providers.local.file.usage import UsageWalker

log = logging.getLogger("elastivol.providers.local.file.node")


@dataclass(frozen=True)
class DirIdentity:
    """What a directory is, independent of its path: (device, inode)."""

    dev: int
    ino: int


class LocalFileNode:
    """Implements :class:`elastivol.providers.file.FileNodeProvider` for registered local roots."""

    def __init__(self, registry: FileRegistry, *, walker: UsageWalker | None = None) -> None:
        self.registry = registry
        self.walker = walker or UsageWalker()

    # The node servicer resolves volume ids with these (they only read the pool's records).
    def get_filesystem(self, fs_id: str) -> FileSystem:
        return self.registry.get_filesystem(fs_id)

    def get_access_point(self, fs_id: str, ap_id: str) -> AccessPoint:
        rec = self.registry.access_point_record(fs_id, ap_id)
        if rec.get("state") != "ready":
            raise NotFound(f"access point {ap_id} is {rec.get('state')}, not ready")
        return self.registry.get_access_point(fs_id, ap_id)

    # -- publish -----------------------------------------------------------------------------
    @staticmethod
    def _relative(access_point: AccessPoint | None, subpath: str) -> str:
        base = access_point.directory if access_point is not None else ""
        return "/".join(p for p in (base.strip("/"), subpath.strip("/")) if p)

    def publish(self, publication: FilePublication) -> None:
        fs = self.registry.get_filesystem(publication.fs_id)
        access_point, subpath = publication.access_point, publication.subpath
        relative = self._relative(access_point, subpath)
        with contextlib.ExitStack() as stack:
            try:
                fd = stack.enter_context(tree.opened(fs.root, relative))
            except FileNotFoundError as exc:
                raise self._missing(fs, relative, access_point, subpath, exc.filename) from None
            self._bind(fd, fs, relative, publication.target, publication.readonly, publication.mount_options)

    @staticmethod
    def _missing(
        fs: FileSystem, relative: str, access_point: AccessPoint | None, subpath: str, missing: str | None
    ) -> NotFound:
        where = missing or f"{fs.root}/{relative}"
        if access_point is not None and subpath:
            return NotFound(
                f"subpath /{subpath} does not exist in access point {access_point.id} ({where} is missing): "
                "create it inside the volume first, or fix the PV's volumeHandle"
            )
        if access_point is not None:
            return NotFound(f"the directory of access point {access_point.id} ({where}) is missing on this node")
        return NotFound(f"{where} does not exist: create it, or fix the PV's volumeHandle")

    def _bind(
        self, fd: int, fs: FileSystem, relative: str, target: str, readonly: bool, options: tuple[str, ...]
    ) -> None:
        st = os.fstat(fd)
        wanted = DirIdentity(st.st_dev, st.st_ino)
        existing = hostmount.find_by_target(target)
        if existing is not None:
            if self._identity(target) != wanted:
                raise AlreadyExists(f"{target} already has another volume or directory mounted on it")
            if existing.read_only != readonly:
                raise AlreadyExists(
                    f"{target} is already published with readonly={existing.read_only}; unpublish it first"
                )
            return
        require_directory_target(target, FILE_TARGET)
        hostmount.refuse_covering(target)
        # As the block driver does: the parents are made too (the guard checked they are directories).
        os.makedirs(os.path.dirname(target), 0o750, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(target, 0o750)
        # The descriptor names the checked directory itself; no path is resolved again.
        hostmount.bind(f"/proc/self/fd/{fd}", target, readonly=readonly, options=hostmount.volume_options(options))
        log.info("published %s/%s at %s%s", fs.root, relative, target, " read-only" if readonly else "")

    @staticmethod
    def _identity(path: str) -> DirIdentity | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return DirIdentity(st.st_dev, st.st_ino)

    def published_elsewhere(
        self, fs_id: str, subpath: str, access_point: AccessPoint | None, target: str, roots: list[str]
    ) -> list[str]:
        """Other mounts of the same directory below ``roots`` (for ReadWriteOncePod)."""
        fs = self.registry.get_filesystem(fs_id)
        try:
            with tree.opened(fs.root, self._relative(access_point, subpath)) as fd:
                st = os.fstat(fd)
        except FileNotFoundError:
            return []
        wanted = DirIdentity(st.st_dev, st.st_ino)
        found = []
        for m in hostmount.mounts():
            if m.target == target or not any(m.target.startswith(r.rstrip("/") + "/") for r in roots):
                continue
            if self._identity(m.target) == wanted:
                found.append(m.target)
        return found

    def holds(self, fs_id: str, subpath: str, access_point: AccessPoint | None, path: str) -> bool:
        """Whether ``path`` is the volume's directory (the same inode), as a stats call must check."""
        fs = self.registry.get_filesystem(fs_id)
        try:
            with tree.opened(fs.root, self._relative(access_point, subpath)) as fd:
                st = os.fstat(fd)
        except FileNotFoundError:
            return False
        return self._identity(path) == DirIdentity(st.st_dev, st.st_ino)

    def unpublish(self, target: str) -> None:
        hostmount.unmount_all(target)
        try:
            os.rmdir(target)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EBUSY):
                raise
            log.warning("left %s in place after unmounting it: %s", target, exc.strerror)

    # -- usage -------------------------------------------------------------------------------
    def usage(self, fs_id: str, access_point: AccessPoint | None, path: str) -> FileUsage:
        """Usage of the volume published at ``path``.

        With quotas the access point's quota group answers (O(1)); without, statvfs gives
        total and available bytes and a bounded, cached walk gives the used bytes.
        """
        st = os.statvfs(path)
        total = st.f_blocks * st.f_frsize
        available = st.f_bavail * st.f_frsize
        inodes = (st.f_files, st.f_files - st.f_ffree, st.f_favail)
        quota = self._quota(fs_id, access_point)
        if quota is not None:
            used = quota.referenced
            if quota.limit is not None:
                total = quota.limit
                available = max(0, min(available, quota.limit - quota.referenced))
            return FileUsage(total, used, available, *inodes, exact=True)
        walked = self.walker.usage(path)
        return FileUsage(total, walked.used_bytes, available, inodes[0], walked.inodes, inodes[2], exact=walked.exact)

    def _quota(self, fs_id: str, access_point: AccessPoint | None) -> btrfs.QuotaUsage | None:
        if access_point is None:
            return None
        try:
            fs_rec = self.registry.filesystem_record(fs_id)
            if fs_rec.get("fs_type") != "btrfs":
                return None
            with tree.opened(fs_rec["root"], access_point.directory) as fd:
                if not btrfs.is_subvolume(fd):
                    return None
                return btrfs.quota_usage(fd)
        except (OSError, FailedPrecondition, NotFound):
            return None
