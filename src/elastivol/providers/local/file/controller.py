"""Shared file volumes on the local provider: access points as directories under a registered root.

A file system is a root directory that every node sees at the same path (a local directory on
one machine; an NFS or CephFS mount in a cluster). An access point is a directory below it with
its own owner, group and mode. On btrfs each new access point directory is a subvolume, which
gives O(1) snapshots and usage, and, with ``enforceCapacity``, a quota limit.

Consistency rules, all kept under one lock per file system (shared by the pool's processes):

* GIDs are allocated from the records: the lowest free GID of the range, written into the new
  access point's record before the lock is released, so two calls never get the same one.
* A directory is removed (``deleteAccessPointRootDir``) only when no other access point uses it
  or lies below it, never when it is the root, and never through a symbolic link. It is first
  renamed into ``.elastivol/trash`` under the lock (O(1)) and emptied after the lock is released.
* Every multi-step change writes its record first (state ``creating``/``deleting``), so a crash
  leaves a record that the retried call completes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from typing import Any

from elastivol import crashpoints, ids
from elastivol.domain import AccessPointSpec, Health, Snapshot
from elastivol.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    Unavailable,
)
from elastivol.params.file import RESERVED_TOP_DIR
from elastivol.providers.file import AccessPoint, FileSystem, check_reusable
from elastivol.providers.local.file import btrfs, snapshots, tree
from elastivol.providers.local.file.registry import (
    TRASH_DIR,
    FileRegistry,
    access_point_from_record,
    allocate_gid,
)
from elastivol.providers.local.pool import Pool

log = logging.getLogger("elastivol.providers.local.file")

crashpoints.register(
    "accesspoint.after_record",
    "accesspoint.after_mkdir",
    "accesspoint.after_copy",
    "accesspoint.delete_after_trash",
)

_HEALTH_LOCK = threading.Lock()


def pool_health(pool: Pool) -> Health:
    # Pool.health writes and removes one fixed probe file: concurrent calls in one process
    # would remove each other's probe and report a healthy pool as unwritable.
    with _HEALTH_LOCK:
        return pool.health()


def _split(directory: str) -> tuple[str, str]:
    """(parent, name) of an access point directory; refuses the root itself."""
    parts = tree.components(directory)
    if not parts:
        raise FailedPrecondition(f"refusing to use the file system root itself ({directory!r}) as a directory")
    if parts[0] == RESERVED_TOP_DIR:
        raise FailedPrecondition(f"refusing to use {directory!r}: /{RESERVED_TOP_DIR} is elastivol's own directory")
    return "/".join(parts[:-1]), parts[-1]


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


class LocalFileProvider:
    """Controller side: file systems, access points and snapshots of one pool."""

    def __init__(self, registry: FileRegistry) -> None:
        self.registry = registry
        self.pool = registry.pool
        self.snapshots = snapshots.LocalFileSnapshots(registry)

    # -- file systems ------------------------------------------------------------------------
    def health(self) -> Health:
        return pool_health(self.pool)

    def _require_usable(self) -> None:
        health = self.health()
        if not health.ready:
            raise Unavailable(health.reason)

    def get_filesystem(self, fs_id: str) -> FileSystem:
        return self.registry.get_filesystem(fs_id)

    def list_filesystems(self) -> list[FileSystem]:
        return self.registry.list_filesystems()

    # -- access points -----------------------------------------------------------------------
    def get_access_point(self, fs_id: str, ap_id: str) -> AccessPoint:
        return self.registry.get_access_point(fs_id, ap_id)

    def list_access_points(self, fs_id: str | None = None) -> list[AccessPoint]:
        recs = [r for r in self.registry.access_points_of(fs_id) if r.get("state") == "ready"]
        return sorted((access_point_from_record(r) for r in recs), key=lambda a: (a.created_at, a.id))

    def access_point_state(self, fs_id: str, ap_id: str) -> str:
        """"" when the directory is there, else what is wrong (for volume conditions)."""
        rec = self.registry.access_point_record(fs_id, ap_id)
        fs = self.registry.get_filesystem(fs_id)
        if rec.get("state") != "ready":
            return f"access point is {rec.get('state')}"
        try:
            if not tree.exists(fs.root, rec["directory"]):
                return f"the access point's directory {rec['directory']} is missing under {fs.root}"
        except FailedPrecondition as exc:
            return exc.message
        return ""

    def create_access_point(self, spec: AccessPointSpec) -> AccessPoint:
        self._require_usable()
        fs_rec = self.registry.filesystem_record(spec.fs_id)
        fs = self.registry.get_filesystem(spec.fs_id)
        if spec.enforce_capacity and fs.quotas == "none":
            raise InvalidArgument(
                f'enforceCapacity: "true" needs per-directory quotas, and file system {fs.id} ({fs.name}, root '
                f"{fs.root} on {fs_rec.get('fs_type', 'unknown')}) has none. Put the root on btrfs with quotas "
                "(`elastivol pool init DIR --fs btrfs`, then `elastivol fs create` below DIR), or remove "
                "enforceCapacity: capacity is then recorded and reported but not enforced, as on EFS"
            )
        snap = self._restore_source(spec)
        with self.registry.fs_lock(fs.id):
            rec = self._find_or_reserve(spec, fs_rec, snap)
            if rec.get("state") == "ready":
                return access_point_from_record(rec)
            crashpoints.hit("accesspoint.after_record")
            if snap is None:
                self._make_directory(fs_rec, rec)
                self._finish(fs_rec, rec)
                return access_point_from_record(rec)
        # A restore copies outside the lock (a tree copy may take a while), then moves it in.
        if snap is None:  # narrows the type; cannot happen on this path
            raise Internal("snap is missing where it was just set")
        snapshots.copy_for_restore(fs_rec, snap, rec)
        crashpoints.hit("accesspoint.after_copy")
        with self.registry.fs_lock(fs.id):
            self._move_restored(fs_rec, rec)
            self._finish(fs_rec, rec)
        return access_point_from_record(rec)

    def _restore_source(self, spec: AccessPointSpec) -> dict[str, Any] | None:
        if not spec.source_snapshot_id:
            return None
        snap = self.registry.snapshot_record(spec.source_snapshot_id)
        if snap.get("fs_id") != spec.fs_id:
            raise InvalidArgument(
                f"snapshot {snap['id']} belongs to file system {snap.get('fs_id')}; restore it with a StorageClass "
                f"whose fileSystemId is {snap.get('fs_id')} (a copy-on-write copy cannot cross file systems)"
            )
        if snap.get("state") != "ready":
            raise Aborted(f"snapshot {snap['id']} is not ready yet; retry later")
        if spec.capacity_bytes < int(snap["size_bytes"]):
            raise OutOfRange(
                f"snapshot {snap['id']} was taken of a {snap['size_bytes']}-byte volume; the restored volume must "
                f"be at least that large, {spec.capacity_bytes} bytes were asked"
            )
        return snap

    def _find_or_reserve(
        self, spec: AccessPointSpec, fs_rec: dict[str, Any], snap: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The record for ``spec``: an existing one (retry or reuse), or a new one in state "creating"."""
        records = self.registry.access_points_of(fs_rec["id"])
        for existing in records:
            if existing["name"] == spec.name:
                if existing.get("state") == "deleting":
                    raise Aborted(f"access point {existing['id']} named {spec.name!r} is being deleted; retry later")
                self._check_same(existing, spec)
                return existing
        if spec.reuse and spec.reuse_key:
            for existing in records:
                if existing.get("reuse_key") == spec.reuse_key and existing.get("state") == "ready":
                    check_reusable(existing["id"], existing["directory"], int(existing["uid"]), int(existing["gid"]), spec)
                    return existing
        _split(spec.directory)  # never the root, never elastivol's own directory
        exists = tree.exists(fs_rec["root"], spec.directory)
        if snap is not None and exists:
            raise AlreadyExists(
                f"cannot restore snapshot {snap['id']} into {spec.directory}: the directory exists already "
                "(shared with ensureUniqueDirectory: \"false\"?); restore with ensureUniqueDirectory \"true\""
            )
        if spec.enforce_capacity and exists and snapshots.is_btrfs(fs_rec):
            with tree.opened(fs_rec["root"], spec.directory) as fd:
                if not btrfs.is_subvolume(fd):
                    raise InvalidArgument(
                        f"enforceCapacity cannot limit {spec.directory}: it exists already as a plain directory, "
                        "and quotas apply to directories elastivol created; use ensureUniqueDirectory: \"true\" or "
                        "another subPathPattern"
                    )
        uid, gid = spec.uid, spec.gid
        allocated = None
        if snap is not None:
            # A restore keeps the snapshot's owner: its files belong to that uid/gid.
            uid = int(snap["uid"]) if uid is None else uid
            gid = int(snap["gid"]) if gid is None else gid
        if uid is None or gid is None:
            allocated = allocate_gid(records, spec.gid_range, fs_rec["id"])
        rec: dict[str, Any] = {
            "id": ids.new_id("fsap"),
            "fs_id": fs_rec["id"],
            "name": spec.name,
            "directory": spec.directory,
            "uid": allocated if uid is None else uid,
            "gid": allocated if gid is None else gid,
            "gid_allocated": allocated is not None,
            "gid_range": list(spec.gid_range),
            "explicit_uid": spec.uid,
            "explicit_gid": spec.gid,
            "perms": spec.perms,
            "capacity_bytes": spec.capacity_bytes,
            "requested_bytes": spec.capacity_bytes,
            "enforce_capacity": spec.enforce_capacity,
            "delete_root_dir": spec.delete_root_dir,
            "reuse_key": spec.reuse_key,
            "source_snapshot_id": spec.source_snapshot_id,
            "created_dir": not exists,
            "tags": dict(spec.tags),
            "created_at": time.time(),
            "state": "creating",
        }
        self.registry.access_points.put(rec["id"], rec)
        return rec

    @staticmethod
    def _check_same(rec: dict[str, Any], spec: AccessPointSpec) -> None:
        differences = []
        if rec["directory"] != spec.directory:
            differences.append(f"directory {rec['directory']} != {spec.directory}")
        if int(rec.get("requested_bytes", rec["capacity_bytes"])) != spec.capacity_bytes:
            differences.append(f"capacity {rec.get('requested_bytes')} != {spec.capacity_bytes}")
        if rec.get("explicit_uid") != spec.uid or rec.get("explicit_gid") != spec.gid:
            differences.append("uid/gid differ")
        if rec.get("gid_allocated") and tuple(rec.get("gid_range", ())) != tuple(spec.gid_range):
            differences.append("GID range differs")
        if int(rec["perms"]) != spec.perms:
            differences.append(f"directoryPerms {rec['perms']:o} != {spec.perms:o}")
        if bool(rec.get("enforce_capacity")) != spec.enforce_capacity:
            differences.append("enforceCapacity differs")
        if rec.get("source_snapshot_id", "") != spec.source_snapshot_id:
            differences.append("content source differs")
        if differences:
            raise AlreadyExists(
                f"a volume named {spec.name!r} already exists as access point {rec['id']} with different settings "
                f"({'; '.join(differences)}); use another name or delete that volume"
            )

    def _make_directory(self, fs_rec: dict[str, Any], rec: dict[str, Any]) -> None:
        parent, name = _split(rec["directory"])
        with tree.opened(fs_rec["root"], parent, create=True) as pfd:
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is None:
                if snapshots.is_btrfs(fs_rec):
                    btrfs.create_subvolume(pfd, name)
                else:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o700, dir_fd=pfd)
            crashpoints.hit("accesspoint.after_mkdir")

    def _finish(self, fs_rec: dict[str, Any], rec: dict[str, Any]) -> None:
        """Owner, mode and quota of a new directory; then the record is ready."""
        with tree.opened(fs_rec["root"], rec["directory"]) as fd:
            if rec.get("created_dir", True):
                tree.set_owner_mode(fd, int(rec["uid"]), int(rec["gid"]), int(rec["perms"]))
            if rec.get("enforce_capacity"):
                self._apply_limit(fs_rec, rec["directory"], fd, extra=rec)
        rec["state"] = "ready"
        self.registry.access_points.put(rec["id"], rec)

    def _apply_limit(
        self, fs_rec: dict[str, Any], directory: str, fd: int, *, extra: dict[str, Any] | None = None,
        without: str = "",
    ) -> None:
        """Set the directory's quota to the largest capacity of the access points that enforce it.

        Access points share a directory only with ensureUniqueDirectory "false"; they then share
        its quota too, and the largest one wins.
        """
        if not snapshots.is_btrfs(fs_rec) or not btrfs.is_subvolume(fd):
            return
        sizes = [
            int(r["capacity_bytes"])
            for r in self.registry.access_points_of(fs_rec["id"])
            if r["directory"] == directory and r.get("enforce_capacity") and r["id"] != without
            and (extra is None or r["id"] != extra["id"])
        ]
        if extra is not None and extra.get("enforce_capacity"):
            sizes.append(int(extra["capacity_bytes"]))
        btrfs.set_limit(fd, max(sizes) if sizes else None)

    # -- restore -----------------------------------------------------------------------------
    def _move_restored(self, fs_rec: dict[str, Any], rec: dict[str, Any]) -> None:
        root = fs_rec["root"]
        if tree.exists(root, rec["directory"]):
            return
        parent, name = _split(rec["directory"])
        with tree.opened(root, snapshots.RESTORING_DIR) as staging, tree.opened(root, parent, create=True) as pfd:
            try:
                os.rename(rec["id"], name, src_dir_fd=staging, dst_dir_fd=pfd)
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    raise FailedPrecondition(
                        f"cannot restore into {rec['directory']}: it lies inside another btrfs subvolume (another "
                        "access point?); choose a basePath outside access point directories"
                    ) from None
                raise
        # The restored tree keeps its owner; an explicit uid/gid or the new mode apply to its top.
        with tree.opened(root, rec["directory"]) as fd:
            st = os.fstat(fd)
            uid = int(rec["uid"]) if rec.get("explicit_uid") is not None else st.st_uid
            gid = int(rec["gid"]) if rec.get("explicit_gid") is not None else st.st_gid
            tree.set_owner_mode(fd, uid, gid, int(rec["perms"]))
        rec["created_dir"] = False  # owner and mode are settled; _finish must not reset them

    # -- delete ------------------------------------------------------------------------------
    def delete_access_point(self, fs_id: str, ap_id: str) -> None:
        try:
            fs_rec = self.registry.filesystem_record(fs_id)
        except NotFound:
            return  # the file system (and so its access points) is gone already
        trashed = ""
        with self.registry.fs_lock(fs_id):
            rec = self.registry.access_points.get(ap_id) if ids.is_access_point_id(ap_id) else None
            if rec is None or rec.get("fs_id") != fs_id:
                return
            others = [
                r for r in self.registry.access_points_of(fs_id)
                if r["id"] != ap_id and (_inside(r["directory"], rec["directory"]))
            ]
            remove = bool(rec.get("delete_root_dir")) and not others
            if remove:
                # Refuse the root, elastivol's own directory and paths through links before any change,
                # so a refused delete leaves the access point as it was.
                parent, _name = _split(rec["directory"])
                with contextlib.suppress(FileNotFoundError):
                    tree.exists(fs_rec["root"], parent)
            if rec.get("state") != "deleting":
                rec["state"] = "deleting"
                self.registry.access_points.put(ap_id, rec)
            if remove:
                trashed = self._trash(fs_rec, rec)
                crashpoints.hit("accesspoint.delete_after_trash")
            elif others and rec.get("delete_root_dir"):
                log.info(
                    "keeping %s: still used by access point(s) %s", rec["directory"], ", ".join(r["id"] for r in others)
                )
            elif not rec.get("delete_root_dir"):
                with contextlib.suppress(FileNotFoundError, FailedPrecondition), \
                        tree.opened(fs_rec["root"], rec["directory"]) as fd:
                    # A quota that outlives its access point would still cap the kept directory.
                    if rec.get("enforce_capacity"):
                        self._apply_limit(fs_rec, rec["directory"], fd, without=ap_id)
            self.registry.access_points.delete(ap_id)
        snapshots.empty_trash(fs_rec, trashed)

    def _trash(self, fs_rec: dict[str, Any], rec: dict[str, Any]) -> str:
        """Move the directory into the trash (O(1), under the lock); "" when there was nothing to move."""
        root = fs_rec["root"]
        parent, name = _split(rec["directory"])
        try:
            with tree.opened(root, parent) as pfd:
                try:
                    os.stat(name, dir_fd=pfd, follow_symlinks=False)
                except FileNotFoundError:
                    return ""
                with tree.opened(root, TRASH_DIR, create=True, parents_mode=0o700) as trash:
                    entry = f"{rec['id']}-{time.time_ns()}"
                    try:
                        os.rename(name, entry, src_dir_fd=pfd, dst_dir_fd=trash)
                    except OSError as exc:
                        if exc.errno != errno.EXDEV:
                            raise
                        # Inside another subvolume: no rename across it; remove in place instead.
                        snapshots.remove_directory(fs_rec, pfd, name)
                        return ""
                    return entry
        except FileNotFoundError:
            return ""

    # -- expand ------------------------------------------------------------------------------
    def expand_access_point(self, fs_id: str, ap_id: str, new_size_bytes: int) -> AccessPoint:
        fs_rec = self.registry.filesystem_record(fs_id)
        with self.registry.fs_lock(fs_id):
            rec = self.registry.access_point_record(fs_id, ap_id)
            if new_size_bytes <= int(rec["capacity_bytes"]):
                return access_point_from_record(rec)
            rec["capacity_bytes"] = new_size_bytes
            if rec.get("enforce_capacity"):
                # Raise the limit before recording it: a crash between leaves the old size recorded
                # with a larger quota, which the retried expand repeats harmlessly.
                with tree.opened(fs_rec["root"], rec["directory"]) as fd:
                    self._apply_limit(fs_rec, rec["directory"], fd, extra=rec)
            self.registry.access_points.put(ap_id, rec)
        return access_point_from_record(rec)

    # -- snapshots (see file_snapshots) ----------------------------------------------------
    def create_snapshot(self, name: str, fs_id: str, ap_id: str, tags: dict[str, str]) -> Snapshot:
        self._require_usable()
        return self.snapshots.create(name, fs_id, ap_id, tags)

    def delete_snapshot(self, snapshot_id: str) -> None:
        self.snapshots.delete(snapshot_id)

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        return self.snapshots.get(snapshot_id)

    def list_snapshots(self) -> list[Snapshot]:
        return self.snapshots.list_all()
