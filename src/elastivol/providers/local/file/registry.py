"""The pool's registry of shared file systems, access points and their snapshots.

Layout (beside the block driver's records, in the same pool)::

    POOL/meta/filesystems/fs-*.json        kind "filesystem": id, name, root, what the root offers
    POOL/meta/accesspoints/fsap-*.json     kind "accesspoint": directory, owner, mode, capacity, state
    POOL/meta/file-snapshots/snap-*.json   kind "snapshot": where the copy lives, what it came from
    POOL/locks/filesystem-<id>.lock        serialises GID allocation and directory reference counts

Inside each file system root elastivol keeps ``.elastivol/`` (mode 0700): ``snapshots/`` holds
snapshot copies (they must be on the same filesystem as their source to be copy-on-write) and
``trash/`` holds deleted directories until they are emptied.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from elastivol import errors, ids
from elastivol.node.run import run
from elastivol.params.file import RESERVED_TOP_DIR
from elastivol.providers.file import AccessPoint, FileSystem
from elastivol.providers.local.file import btrfs
from elastivol.providers.local.pool import Pool
from elastivol.store import RecordStore

LOCK_TIMEOUT = 60.0
SNAPSHOTS_DIR = f"{RESERVED_TOP_DIR}/snapshots"
TRASH_DIR = f"{RESERVED_TOP_DIR}/trash"


def filesystem_from_record(rec: dict[str, Any]) -> FileSystem:
    return FileSystem(
        id=rec["id"],
        name=rec["name"],
        root=rec["root"],
        reflink=bool(rec.get("reflink")),
        quotas=str(rec.get("quotas", "none")),
        created_at=float(rec.get("created_at", 0.0)),
    )


def access_point_from_record(rec: dict[str, Any]) -> AccessPoint:
    return AccessPoint(
        id=rec["id"],
        fs_id=rec["fs_id"],
        name=rec["name"],
        directory=rec["directory"],
        uid=int(rec["uid"]),
        gid=int(rec["gid"]),
        perms=int(rec["perms"]),
        capacity_bytes=int(rec["capacity_bytes"]),
        enforce_capacity=bool(rec.get("enforce_capacity")),
        delete_root_dir=bool(rec.get("delete_root_dir")),
        created_at=float(rec.get("created_at", 0.0)),
        tags=dict(rec.get("tags", {})),
    )


def probe_fs_type(path: str) -> str:
    """The filesystem type of ``path`` as the kernel names it (btrfs, xfs, ext2/ext3, nfs, ...)."""
    return run(["stat", "-f", "-c", "%T", path], timeout=30).stdout.strip() or "unknown"


def probe_reflink(path: str) -> bool:
    """Whether files under ``path`` can share extents: try it on two scratch files."""
    from elastivol.providers.local.file.tree import FICLONE

    src_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    names = (f".elastivol-reflink-probe-{os.getpid()}-a", f".elastivol-reflink-probe-{os.getpid()}-b")
    try:
        a = os.open(names[0], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600, dir_fd=src_fd)
        b = os.open(names[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600, dir_fd=src_fd)
        try:
            os.write(a, b"x" * 4096)
            fcntl.ioctl(b, FICLONE, a)
            return True
        except OSError:
            return False
        finally:
            os.close(a)
            os.close(b)
    finally:
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=src_fd)
        os.close(src_fd)


def probe_quotas(path: str, fs_type: str) -> str:
    if fs_type != "btrfs":
        # XFS/ext4 project quotas would also do, where the kernel has them; not implemented yet.
        return "none"
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return "btrfs-qgroup" if btrfs.quotas_enabled(fd) else "none"
    finally:
        os.close(fd)


class FileRegistry:
    """All file-driver records of one pool, and the locks that keep them consistent."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        meta = pool.directory / "meta"
        self.filesystems = RecordStore(meta / "filesystems", "filesystem", ids.is_filesystem_id)
        self.access_points = RecordStore(meta / "accesspoints", "accesspoint", ids.is_access_point_id)
        self.snapshots = RecordStore(meta / "file-snapshots", "snapshot", ids.is_snapshot_id)
        self._mutexes: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # -- locks -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, key: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Wait (up to ``timeout``) for the exclusive lock ``key``, shared by every process of the pool.

        Unlike the in-flight locks this one queues: 100 CreateVolume calls on one file system
        must all succeed, one after the other, each seeing the GIDs the previous ones took.
        """
        with self._guard:
            mutex = self._mutexes.setdefault(key, threading.Lock())
        deadline = time.monotonic() + timeout
        if not mutex.acquire(timeout=timeout):
            raise errors.FailedPrecondition(f"timed out after {timeout:.0f}s waiting for {key}; retry later")
        try:
            fd = os.open(self.pool.lock_dir / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise errors.FailedPrecondition(
                                f"timed out after {timeout:.0f}s waiting for {key}, held by another elastivol "
                                "process sharing this pool; retry later"
                            ) from None
                        time.sleep(0.002)
                yield
            finally:
                os.close(fd)
        finally:
            mutex.release()

    def fs_lock(self, fs_id: str) -> contextlib.AbstractContextManager[None]:
        return self.locked(f"filesystem-{fs_id}")

    # -- file systems ------------------------------------------------------------------------
    def get_filesystem(self, fs_id: str) -> FileSystem:
        rec = self.filesystems.get(fs_id) if ids.is_filesystem_id(fs_id) else None
        if rec is None:
            raise errors.NotFound(
                f"file system {fs_id[:80]!r} is not registered in pool {self.pool.directory}; "
                f"`elastivol fs list --pool {self.pool.directory}` shows the registered ones"
            )
        return filesystem_from_record(rec)

    def filesystem_record(self, fs_id: str) -> dict[str, Any]:
        self.get_filesystem(fs_id)
        rec = self.filesystems.get(fs_id)
        if rec is None:  # narrows the type; cannot happen on this path
            raise errors.Internal("rec is missing where it was just set")
        return rec

    def list_filesystems(self) -> list[FileSystem]:
        return sorted((filesystem_from_record(r) for r in self.filesystems.all()), key=lambda f: (f.created_at, f.id))

    def register(self, name: str, root: str) -> FileSystem:
        """Register ``root`` as a file system named ``name`` (idempotent for the same name and root)."""
        if not name or len(name) > 128 or "\x00" in name or "\n" in name:
            raise errors.InvalidArgument("--name must be 1 to 128 characters on one line")
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise errors.FailedPrecondition(
                f"root {root} does not exist or is not a directory: create it (or mount the shared "
                "filesystem there) first"
            )
        if real == "/":
            raise errors.InvalidArgument("the host's / cannot be a file system root: give a directory of its own")
        pool = str(self.pool.directory.resolve())
        if _inside(pool, real):
            raise errors.InvalidArgument(
                f"root {real} is or contains the pool directory {pool}, whose metadata must stay private: "
                f"give a directory of its own, such as {pool}/fs/{name}"
            )
        for sub in ("images", "snapshots", "meta", "locks"):
            if _inside(real, f"{pool}/{sub}"):
                raise errors.InvalidArgument(
                    f"root {real} is inside the pool's {sub}/ directory: use {pool}/fs/{name} or another directory"
                )
        with self.locked("filesystems"):
            for rec in self.filesystems.all():
                if rec["name"] == name:
                    if rec["root"] == real:
                        return filesystem_from_record(rec)
                    raise errors.AlreadyExists(
                        f"a file system named {name!r} is already registered as {rec['id']} with root {rec['root']}; "
                        "choose another name"
                    )
                if _overlaps(real, rec["root"]):
                    raise errors.AlreadyExists(
                        f"root {real} overlaps file system {rec['id']} ({rec['name']}, root {rec['root']}); two "
                        "file systems must not share directories, or one could delete the other's data"
                    )
            fs_type = probe_fs_type(real)
            quotas = probe_quotas(real, fs_type)
            rec = {
                "id": ids.new_id("fs"),
                "name": name,
                "root": real,
                "fs_type": fs_type,
                "reflink": probe_reflink(real),
                "quotas": quotas,
                "created_at": time.time(),
            }
            self.filesystems.put(rec["id"], rec)
        return filesystem_from_record(rec)

    def unregister(self, fs_id: str, *, force: bool = False) -> list[str]:
        """Forget a file system. Returns the access points forgotten with it (``force``).

        Nothing under the root is deleted: the directories stay for the administrator to keep
        or remove. Without ``force`` the file system must have no access points or snapshots.
        """
        with self.locked("filesystems"), self.fs_lock(fs_id):
            fs = self.get_filesystem(fs_id)
            aps = [r for r in self.access_points.all() if r.get("fs_id") == fs.id]
            snaps = [r for r in self.snapshots.all() if r.get("fs_id") == fs.id]
            if (aps or snaps) and not force:
                raise errors.InUse(
                    f"file system {fs.id} ({fs.name}) still has {len(aps)} access point(s) and {len(snaps)} "
                    "snapshot(s); delete their volumes first, or pass --force to forget them (their directories "
                    f"stay under {fs.root})"
                )
            for r in aps:
                self.access_points.delete(r["id"])
            for r in snaps:
                self.snapshots.delete(r["id"])
            self.filesystems.delete(fs.id)
        return [r["id"] for r in aps]

    # -- access points -----------------------------------------------------------------------
    def access_point_record(self, fs_id: str, ap_id: str) -> dict[str, Any]:
        rec = self.access_points.get(ap_id) if ids.is_access_point_id(ap_id) else None
        if rec is None or rec.get("fs_id") != fs_id:
            raise errors.NotFound(f"access point {ap_id[:80]!r} does not exist in file system {fs_id[:80]!r}")
        return rec

    def get_access_point(self, fs_id: str, ap_id: str) -> AccessPoint:
        return access_point_from_record(self.access_point_record(fs_id, ap_id))

    def access_points_of(self, fs_id: str | None) -> list[dict[str, Any]]:
        return [r for r in self.access_points.all() if fs_id is None or r.get("fs_id") == fs_id]

    def snapshot_record(self, snapshot_id: str) -> dict[str, Any]:
        rec = self.snapshots.get(snapshot_id) if ids.is_snapshot_id(snapshot_id) else None
        if rec is None:
            raise errors.NotFound(f"snapshot {snapshot_id[:80]!r} does not exist")
        return rec


def allocate_gid(records: list[dict[str, Any]], gid_range: tuple[int, int], fs_id: str) -> int:
    """The lowest GID in ``gid_range`` (inclusive) that no access point of the file system uses."""
    used = {int(r["gid"]) for r in records}
    start, end = gid_range
    for gid in range(start, end + 1):
        if gid not in used:
            return gid
    raise errors.Exhausted(
        f"all {end - start + 1} GIDs of gidRangeStart-gidRangeEnd {start}-{end} are used by access points of "
        f"file system {fs_id}: create a new StorageClass with another or a wider gidRangeStart/gidRangeEnd, "
        "or delete volumes that are no longer needed"
    )


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _overlaps(a: str, b: str) -> bool:
    return _inside(a, b) or _inside(b, a)
