"""Snapshots of access points, and removing directories: copy-on-write copies inside the root.

A snapshot must live on the same filesystem as its source to share its extents, so it is kept
inside the file system root, in ``.elastivol/snapshots/<snap-id>`` (mode 0700):

* on btrfs, when the access point is a subvolume: ``btrfs subvolume snapshot -r``, O(1), one
  atomic point in time ("crash" consistency, like a power cut);
* elsewhere with reflink (XFS, or a plain btrfs directory): a tree copy whose files share their
  extents with the source, O(files) and not O(bytes); each file is whole, but the files are
  copied one after the other ("per-file" consistency);
* without reflink: refused, since a snapshot would be a full copy.

A restore copies the snapshot the same way into ``.elastivol/restoring/<fsap-id>`` and the
provider then moves it into place under the file system's lock.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from typing import Any

from elastivol import crashpoints, ids
from elastivol.domain import Snapshot
from elastivol.errors import Aborted, AlreadyExists, FailedPrecondition, Internal, NotFound
from elastivol.params.file import RESERVED_TOP_DIR
from elastivol.providers.local.file import btrfs, tree
from elastivol.providers.local.file.registry import (
    SNAPSHOTS_DIR,
    TRASH_DIR,
    FileRegistry,
)
from elastivol.providers.local.pool import snapshot_from_record

log = logging.getLogger("elastivol.providers.local.file.snapshots")

crashpoints.register("filesnapshot.after_record", "filesnapshot.after_copy")

RESTORING_DIR = f"{RESERVED_TOP_DIR}/restoring"


def is_btrfs(fs_rec: dict[str, Any]) -> bool:
    return fs_rec.get("fs_type") == "btrfs"


def remove_directory(fs_rec: dict[str, Any], parent: int, name: str) -> None:
    """Remove ``name`` under ``parent``: a subvolume at once, anything else file by file."""
    try:
        fd = os.open(name, tree.DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            os.unlink(name, dir_fd=parent)
            return
        raise
    try:
        subvolume = is_btrfs(fs_rec) and btrfs.is_subvolume(fd)
    finally:
        os.close(fd)
    if subvolume:
        # O(1): the kernel's cleaner frees the extents in the background. It refuses a
        # subvolume holding other subvolumes (a pod may make some); rmtree handles those.
        try:
            btrfs.delete_subvolume(parent, name)
            return
        except Internal as exc:
            log.info("btrfs subvolume delete of %s failed (%s); removing it file by file", name, exc)
    tree.remove_entry(parent, name)


def empty_trash(fs_rec: dict[str, Any], entry: str) -> None:
    """Remove ``entry`` (and leftovers of interrupted deletes) from the trash."""
    try:
        with tree.opened(fs_rec["root"], TRASH_DIR) as trash:
            names = [entry] if entry else []
            with os.scandir(trash) as entries:
                names += [e.name for e in entries if e.name != entry]
            for name in names:
                try:
                    remove_directory(fs_rec, trash, name)
                except OSError as exc:
                    log.warning("could not empty %s/%s/%s: %s", fs_rec["root"], TRASH_DIR, name, exc)
    except (FileNotFoundError, FailedPrecondition):
        return


def copy_for_restore(fs_rec: dict[str, Any], snap: dict[str, Any], rec: dict[str, Any]) -> None:
    """Copy snapshot ``snap`` into the restore staging area for access point ``rec``."""
    root = fs_rec["root"]
    if tree.exists(root, rec["directory"]):
        return  # moved in already by an earlier try
    with tree.opened(root, RESTORING_DIR, create=True, parents_mode=0o700) as staging:
        remove_directory(fs_rec, staging, rec["id"])  # a partial copy from a crashed try
        with tree.opened(root, snap["path"]) as src:
            if is_btrfs(fs_rec) and btrfs.is_subvolume(src):
                btrfs.snapshot(src, staging, rec["id"], readonly=False)
                return
            if is_btrfs(fs_rec):
                btrfs.create_subvolume(staging, rec["id"])
            else:
                os.mkdir(rec["id"], 0o700, dir_fd=staging)
            with tree.opened(root, f"{RESTORING_DIR}/{rec['id']}") as dst:
                tree.clone_tree(src, dst)


class LocalFileSnapshots:
    """CreateSnapshot and friends for the local file provider."""

    def __init__(self, registry: FileRegistry) -> None:
        self.registry = registry

    def create(self, name: str, fs_id: str, ap_id: str, tags: dict[str, str]) -> Snapshot:
        fs_rec = self.registry.filesystem_record(fs_id)
        fs = self.registry.get_filesystem(fs_id)
        source_volume_id = f"{fs_id}::{ap_id}"
        existing = self.registry.snapshots.find("name", name)
        if existing is not None and existing.get("source_volume_id") != source_volume_id:
            raise AlreadyExists(
                f"a snapshot named {name!r} already exists as {existing['id']} of volume "
                f"{existing.get('source_volume_id')}; use another name"
            )
        if existing is not None and existing.get("state") == "ready":
            return snapshot_from_record(existing)
        if not fs.reflink:
            raise FailedPrecondition(
                f"file system {fs.id} ({fs.name}, root {fs.root} on {fs_rec.get('fs_type', 'unknown')}) has no "
                "copy-on-write copies, so elastivol does not snapshot it (a snapshot would be a full copy): put "
                "the root on btrfs or XFS with reflink (`elastivol pool init DIR --fs btrfs`)"
            )
        with self.registry.fs_lock(fs_id):
            ap = self.registry.access_point_record(fs_id, ap_id)
            if ap.get("state") != "ready":
                raise Aborted(f"access point {ap_id} is {ap.get('state')}; retry later")
            rec = existing or {
                "id": ids.new_id("snap"),
                "name": name,
                "fs_id": fs_id,
                "access_point_id": ap_id,
                "source_volume_id": source_volume_id,
                "size_bytes": int(ap["capacity_bytes"]),
                "uid": int(ap["uid"]),
                "gid": int(ap["gid"]),
                "perms": int(ap["perms"]),
                "directory": ap["directory"],
                "tags": dict(tags),
                "created_at": time.time(),
                "state": "creating",
            }
            rec["path"] = f"{SNAPSHOTS_DIR}/{rec['id']}"
            self.registry.snapshots.put(rec["id"], rec)
        crashpoints.hit("filesnapshot.after_record")
        root = fs_rec["root"]
        with tree.opened(root, SNAPSHOTS_DIR, create=True, parents_mode=0o700) as snaps:
            remove_directory(fs_rec, snaps, rec["id"])  # a partial copy from a crashed try
            with tree.opened(root, ap["directory"]) as src:
                if is_btrfs(fs_rec) and btrfs.is_subvolume(src):
                    btrfs.snapshot(src, snaps, rec["id"], readonly=True)
                    rec["consistency"] = "crash"  # one atomic point in time, like a power cut
                else:
                    os.mkdir(rec["id"], 0o700, dir_fd=snaps)
                    with tree.opened(root, rec["path"]) as dst:
                        stats = tree.clone_tree(src, dst)
                    rec["consistency"] = "per-file"  # each file is whole, but copied at its own moment
                    rec["files"] = stats.files
                    rec["full_copies"] = stats.full_copies
        crashpoints.hit("filesnapshot.after_copy")
        rec["state"] = "ready"
        rec["ready_at"] = time.time()
        self.registry.snapshots.put(rec["id"], rec)
        return snapshot_from_record(rec)

    def delete(self, snapshot_id: str) -> None:
        rec = self.registry.snapshots.get(snapshot_id) if ids.is_snapshot_id(snapshot_id) else None
        if rec is None:
            return
        try:
            fs_rec = self.registry.filesystem_record(rec["fs_id"])
        except NotFound:
            self.registry.snapshots.delete(snapshot_id)
            return
        rec["state"] = "deleting"
        self.registry.snapshots.put(snapshot_id, rec)
        with contextlib.suppress(FileNotFoundError), \
                tree.opened(fs_rec["root"], SNAPSHOTS_DIR) as snaps:
            remove_directory(fs_rec, snaps, rec["id"])
        self.registry.snapshots.delete(snapshot_id)

    def get(self, snapshot_id: str) -> Snapshot:
        return snapshot_from_record(self.registry.snapshot_record(snapshot_id))

    def list_all(self) -> list[Snapshot]:
        snaps = [snapshot_from_record(r) for r in self.registry.snapshots.all() if r.get("state") != "deleting"]
        return sorted(snaps, key=lambda s: (s.created_at, s.id))
