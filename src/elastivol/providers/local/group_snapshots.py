"""Volume group snapshots on a local pool: every member cut at one instant.

Every staged filesystem of the group is frozen (FIFREEZE) before the first image is copied and
thawed after the last one, so the member images hold one instant of all the volumes together: a
write that reached one volume before the cut is in its snapshot, and a write to another volume
issued after it (which waits on the frozen filesystem) is in none. Volumes not staged on this
host have no writer here and need no freeze. The images are reflinked, so the freeze window is
a few milliseconds per member.

On disk a group is a record in ``meta/groups`` (written first: the intent) and one ordinary
snapshot record per member carrying ``group_snapshot_id``; restore, ListSnapshots and the
pool's accounting treat members like any snapshot. A failure part-way removes the members made
so far; start-up recovery (:func:`scan_groups`) completes a group whose members were all made
and rolls back any other half-made group.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from elastivol import crashpoints, ids
from elastivol.errors import AlreadyExists, FailedPrecondition, NotFound
from elastivol.node import copy as hostcopy
from elastivol.node import fs as hostfs
from elastivol.providers.groups import GroupSnapshot
from elastivol.providers.local.block import LocalBlockProvider
from elastivol.providers.local.pool import Pool, snapshot_from_record
from elastivol.store import RecordStore

log = logging.getLogger("elastivol.providers.local.groups")

crashpoints.register(
    "group.after_intent",
    "group.while_frozen",
    "group.after_members",
    "group.delete_after_member",
)

FreezeObserver = Callable[[float, int], None]


def group_store(pool: Pool) -> RecordStore:
    return RecordStore(pool.directory / "meta" / "groups", "group snapshot", ids.is_group_snapshot_id)


class LocalGroupSnapshots:
    """The local provider's half of the GroupController (see providers/groups.py)."""

    def __init__(self, pool: Pool, block: LocalBlockProvider, *, on_freeze: FreezeObserver | None = None) -> None:
        self.pool = pool
        self.block = block
        self.groups = group_store(pool)
        # Told (window seconds, filesystems frozen) after every cut that froze something: a metric.
        self.on_freeze = on_freeze

    # -- reading -------------------------------------------------------------------------------
    def _group(self, rec: dict[str, Any]) -> GroupSnapshot:
        members = []
        for m in rec.get("members", []):
            snap = self.pool.snapshots.get(m["snapshot_id"])
            if snap is not None:
                members.append(snapshot_from_record(snap))
        window = rec.get("freeze_window_s")
        return GroupSnapshot(
            id=rec["id"],
            name=rec["name"],
            source_volume_ids=tuple(rec["source_volume_ids"]),
            snapshots=tuple(members),
            created_at=float(rec["created_at"]),
            # Ready when cut and every member is still there and ready.
            ready=rec.get("state") == "ready"
            and len(members) == len(rec.get("members", []))
            and all(s.ready for s in members),
            freeze_window_s=None if window is None else float(window),
            recorded_ids=tuple(m["snapshot_id"] for m in rec.get("members", [])),
        )

    def get_group_snapshot(self, group_snapshot_id: str) -> GroupSnapshot:
        rec = self.groups.get(group_snapshot_id) if ids.is_group_snapshot_id(group_snapshot_id) else None
        if rec is None or rec.get("state") not in ("ready",):
            raise NotFound(f"group snapshot {group_snapshot_id} does not exist")
        return self._group(rec)

    def list_group_snapshots(self) -> list[GroupSnapshot]:
        return [self._group(r) for r in self.groups.all() if r.get("state") == "ready"]

    # -- creating ------------------------------------------------------------------------------
    def create_group_snapshot(self, name: str, source_volume_ids: list[str], tags: dict[str, str]) -> GroupSnapshot:
        existing = self.groups.find("name", name)
        if existing is not None:
            if sorted(existing["source_volume_ids"]) != sorted(source_volume_ids):
                raise AlreadyExists(
                    f"a group snapshot named {name!r} already exists ({existing['id']}) of volumes "
                    f"{', '.join(sorted(existing['source_volume_ids']))}, not of {', '.join(sorted(source_volume_ids))}; "
                    "use another name"
                )
            if existing.get("state") == "ready":
                return self._group(existing)
            # A cut that died half-way (and recovery has not run): start it again under the same id.
            self._roll_back(existing)
            group_id = str(existing["id"])
        else:
            group_id = ids.new_id("vgs")
        sources = []
        for volume_id in source_volume_ids:
            rec = self.block._record(volume_id)
            image = self.pool.image_path(volume_id)
            if not image.exists():
                raise FailedPrecondition(
                    f"volume {volume_id} has no image in the pool; it cannot be snapshotted (see elastivol doctor)"
                )
            sources.append((rec, image))
        now = time.time()
        group: dict[str, Any] = {
            "id": group_id,
            "name": name,
            "source_volume_ids": list(source_volume_ids),
            "members": [{"volume_id": v, "snapshot_id": ids.new_id("snap")} for v in source_volume_ids],
            "created_at": now,
            "state": "creating",
            "tags": tags,
        }
        with self.pool.operation():
            # The intent first: whatever happens next, recovery knows which snapshots are this group's.
            self.groups.put(group_id, group)
            crashpoints.hit("group.after_intent")
            with self.pool.out_of_space(f"cutting group snapshot {name!r}", "no member was kept"):
                try:
                    self._cut(group, sources, tags, now)
                except BaseException:
                    self._roll_back(group)
                    raise
        return self._group(group)

    def _cut(self, group: dict[str, Any], sources: list[tuple[dict[str, Any], Path]], tags: dict[str, str],
             now: float) -> None:
        members: list[dict[str, Any]] = []
        for member, (src, _image) in zip(group["members"], sources, strict=True):
            rec = {
                "id": member["snapshot_id"],
                "name": f"{group['name']}/{member['volume_id']}",
                "source_volume_id": member["volume_id"],
                "source_mode": src.get("mode", "filesystem"),
                "source_fs_type": src.get("fs_type", "ext4"),
                "size_bytes": int(src["size_bytes"]),
                "created_at": now,
                "state": "creating",
                "tags": tags,
                "group_snapshot_id": group["id"],
            }
            self.pool.snapshots.put(rec["id"], rec)
            members.append(rec)
        staged = [self.block._staged_mountpoint(image) for _src, image in sources]
        mountpoints = sorted({m for m in staged if m})
        with self._all_frozen(mountpoints) as window:
            for rec, (_src, image) in zip(members, sources, strict=True):
                # The reflink fixes the member's content; the fsyncs that make it durable wait
                # until after the thaw, so that writers are held only for the clones themselves.
                rec["method"] = hostcopy.clone_file(
                    str(image), str(self.pool.snapshot_path(rec["id"])), durable=not mountpoints)
                crashpoints.hit("group.while_frozen")
        if mountpoints:
            hostcopy.make_durable([str(self.pool.snapshot_path(rec["id"])) for rec in members])
        for rec, mountpoint in zip(members, staged, strict=True):
            # A member not staged here is crash-consistent (block level), at the same instant.
            rec.update(state="ready", consistency="filesystem" if mountpoint else "crash")
            self.pool.snapshots.put(rec["id"], rec)
        crashpoints.hit("group.after_members")
        group.update(state="ready", freeze_window_s=window[0] if mountpoints else None, frozen=len(mountpoints),
                     freeze_phases_s={"freeze": window[1], "copy": window[2], "thaw": window[3]} if mountpoints else None)
        self.groups.put(group["id"], group)
        if mountpoints:
            log.info("group snapshot %s (%s): %d members, %d filesystems frozen for %.1f ms "
                     "(freezing %.1f, copying %.1f, thawing %.1f)", group["id"], group["name"], len(members),
                     len(mountpoints), window[0] * 1000, window[1] * 1000, window[2] * 1000, window[3] * 1000)
            if self.on_freeze is not None:
                self.on_freeze(window[0], len(mountpoints))
        else:
            log.info("group snapshot %s (%s): %d members, none staged on this host (nothing to freeze)",
                     group["id"], group["name"], len(members))

    @contextlib.contextmanager
    def _all_frozen(self, mountpoints: list[str]) -> Iterator[list[float]]:
        """Every filesystem frozen for the block; yields a list that holds the window once thawed.

        The markers (recovery thaws what a killed process left frozen, see recovery.scan_frozen)
        are written before the first freeze and removed after the last thaw, so the window covers
        the freezes, the copies and the thaws and nothing else.
        """
        # [window, time to freeze all, time inside (the copies), time to thaw all]
        window: list[float] = [0.0, 0.0, 0.0, 0.0]
        markers = [self.pool.freeze_marker(m) for m in mountpoints]
        frozen: list[str] = []
        start = time.monotonic()
        try:
            # All at once: each FIFREEZE flushes its filesystem and waits for the disk, and one
            # after the other the waits add up (about 40 ms each here) while the first is held.
            self._freeze_all(mountpoints, frozen)
            window[1] = time.monotonic() - start
            yield window
        finally:
            window[2] = time.monotonic() - start - window[1]
            failures = []
            for mountpoint in reversed(frozen):
                try:
                    hostfs.thaw(mountpoint)
                except Exception as exc:  # thaw every other one whatever one of them says
                    failures.append(exc)
            window[0] = time.monotonic() - start
            window[3] = window[0] - window[1] - window[2]
            if not failures:
                for marker in markers:
                    marker.unlink(missing_ok=True)
            if failures:
                raise failures[0]

    @staticmethod
    def _freeze_all(mountpoints: list[str], frozen: list[str]) -> None:
        """Freeze every mountpoint concurrently; ``frozen`` lists those that were (to thaw)."""
        if not mountpoints:
            return
        if len(mountpoints) == 1:
            hostfs.freeze(mountpoints[0])
            frozen.append(mountpoints[0])
            return
        with ThreadPoolExecutor(max_workers=min(len(mountpoints), 16), thread_name_prefix="freeze") as pool:
            futures = {pool.submit(hostfs.freeze, m): m for m in mountpoints}
            errors = []
            for future, mountpoint in futures.items():
                try:
                    future.result()
                    frozen.append(mountpoint)
                except Exception as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]

    def _roll_back(self, group: dict[str, Any]) -> None:
        """Remove every member of a half-made group, then the group record."""
        for member in group.get("members", []):
            self._drop_member(member["snapshot_id"])
        self.groups.delete(group["id"])

    def _drop_member(self, snapshot_id: str) -> None:
        target = self.pool.snapshot_path(snapshot_id)
        target.with_name(target.name + hostcopy.PARTIAL_SUFFIX).unlink(missing_ok=True)
        self.block.delete_snapshot(snapshot_id)

    # -- deleting ------------------------------------------------------------------------------
    def delete_group_snapshot(self, group_snapshot_id: str) -> None:
        rec = self.groups.get(group_snapshot_id) if ids.is_group_snapshot_id(group_snapshot_id) else None
        if rec is None:
            return
        with self.pool.operation():
            rec["state"] = "deleting"
            self.groups.put(group_snapshot_id, rec)
            for member in rec.get("members", []):
                self._drop_member(member["snapshot_id"])
                crashpoints.hit("group.delete_after_member")
            self.groups.delete(group_snapshot_id)


def scan_groups(pool: Pool) -> list[tuple[str, str, Callable[[], None]]]:
    """Half-made and half-deleted groups: (group id, what happened, the repair).

    A group still ``creating`` whose members were all cut is completed (the cut happened; only
    the records lagged); any other ``creating`` group is rolled back, a ``deleting`` one finished.
    Run only while the pool is quiesced (recovery.scan_pool).
    """
    out: list[tuple[str, str, Callable[[], None]]] = []
    groups = group_store(pool)
    for rec in groups.all():
        state = rec.get("state")
        if state == "ready":
            continue
        members = [pool.snapshots.get(m["snapshot_id"]) for m in rec.get("members", [])]
        cut = bool(members) and all(
            m is not None and m.get("state") == "ready" and pool.snapshot_path(m["id"]).exists() for m in members
        )
        if state == "creating" and cut:
            out.append((rec["id"], "a group snapshot cut whose record was not marked ready", _complete(groups, rec)))
        else:
            what = "a group snapshot that was never finished" if state == "creating" else "a group delete that died"
            out.append((rec["id"], what, _remove(pool, groups, rec)))
    return out


def _complete(groups: RecordStore, rec: dict[str, Any]) -> Callable[[], None]:
    def fix() -> None:
        rec["state"] = "ready"
        groups.put(rec["id"], rec)
    return fix


def _remove(pool: Pool, groups: RecordStore, rec: dict[str, Any]) -> Callable[[], None]:
    def fix() -> None:
        for member in rec.get("members", []):
            snapshot_id = member["snapshot_id"]
            for path in (pool.snapshot_path(snapshot_id),
                         pool.snapshot_path(snapshot_id).with_name(f"{snapshot_id}.img{hostcopy.PARTIAL_SUFFIX}")):
                path.unlink(missing_ok=True)
            pool.snapshots.delete(snapshot_id)
        groups.delete(rec["id"])
    return fix
