"""Start-up reconciliation of a local block pool, and the findings `elastivol doctor` reports.

A process killed mid-operation leaves one of a few known shapes on disk: an image without its
record (create died after the image), a ``.partial`` image, a record marked ``deleting`` (delete
died between the image and the record), a snapshot record still ``creating``, an image of a
snapshot without a record, a metadata temp file, a loop device whose volume is gone (found by
its backing file's identity, so also when another mount namespace attached it), an image
with two loop devices. Each shape
is a :class:`Finding` that says what it is, what to run and, when the repair is safe, how to make
it. The server applies the safe repairs at start-up; ``doctor --fix`` applies them on demand.

Pool-wide sweeps run only while :meth:`Pool.quiesced` holds: another process's create in flight
looks exactly like a crashed one, and its shared lock is what tells them apart.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from elastivol import ids
from elastivol.node import fs, holders, loop, mount
from elastivol.providers.local.pool import FROZEN_PREFIX, Pool, PoolLoop

log = logging.getLogger("elastivol.recovery")

Fix = Callable[[], None]


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    detail: str
    remedy: str
    fix: Fix | None = field(default=None, compare=False, repr=False)

    @property
    def safe(self) -> bool:
        return self.fix is not None


def _unlink(path: Path) -> Fix:
    return lambda: path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def scan_pool(pool: Pool) -> list[Finding]:
    """Half-made and half-deleted objects in the pool's images and metadata."""
    out: list[Finding] = []
    where = f"--pool {pool.directory}"
    records = {r["id"]: r for r in pool.volumes.all()}
    snapshots = {r["id"]: r for r in pool.snapshots.all()}
    for entry in sorted(pool.images.iterdir()):
        name = entry.name
        if ".img.partial" in name:
            out.append(Finding("partial-image", str(entry), "an image a create never finished",
                               f"elastivol doctor {where} --fix (or rm {entry})", _unlink(entry)))
            continue
        volume_id = name.removesuffix(".img")
        if not name.endswith(".img") or not ids.is_volume_id(volume_id):
            out.append(Finding("stray-file", str(entry), "a file that is not a volume image",
                               f"inspect and remove {entry} by hand"))
            continue
        if volume_id not in records and not loop.find(entry):
            out.append(Finding("orphan-image", str(entry),
                               f"image of {volume_id} has no metadata record (a create died before writing it)",
                               f"elastivol doctor {where} --fix (or rm {entry})", _unlink(entry)))
    for volume_id, rec in sorted(records.items()):
        image = pool.image_path(volume_id)
        if rec.get("state") == "deleting":
            fix = None if loop.find(image) else _finish_delete(pool, volume_id)
            out.append(Finding("half-deleted-volume", volume_id, "a delete died between the image and the record",
                               f"elastivol doctor {where} --fix, or DeleteVolume {volume_id} again", fix))
        elif not image.exists():
            out.append(Finding("missing-image", volume_id, f"volume record without its image {image}",
                               f"restore {image} from a backup, or DeleteVolume {volume_id}"))
    for snapshot_id, rec in sorted(snapshots.items()):
        if rec.get("state") != "ready":
            out.append(Finding("half-made-snapshot", snapshot_id, "a snapshot whose copy never finished",
                               f"elastivol doctor {where} --fix, or CreateSnapshot {rec.get('name')!r} again",
                               _drop_snapshot(pool, snapshot_id)))
    for entry in sorted(pool.snapshot_images.iterdir()):
        if ".img.partial" in entry.name:
            out.append(Finding("partial-image", str(entry), "a snapshot copy that never finished",
                               f"elastivol doctor {where} --fix (or rm {entry})", _unlink(entry)))
            continue
        snapshot_id = entry.name.removesuffix(".img")
        if ids.is_snapshot_id(snapshot_id) and snapshot_id not in snapshots:
            out.append(Finding("orphan-snapshot-image", str(entry), "snapshot image without a record",
                               f"elastivol doctor {where} --fix (or rm {entry})", _unlink(entry)))
    out += scan_frozen(pool)
    # Here, not at the top: a node plugin reconciles only its loop devices and never loads the
    # controller's provider modules that the group scan needs (~20 ms of start-up).
    from elastivol.providers.local.group_snapshots import scan_groups

    for group_id, detail, fix in scan_groups(pool):
        out.append(Finding("half-made-group-snapshot", group_id, detail, f"elastivol doctor {where} --fix", fix))
    for store in (pool.volumes, pool.snapshots, pool.nodes):
        out += _temp_files(store.directory)
        for problem in store.problems:
            out.append(Finding("bad-metadata", problem.path, problem.reason,
                               f"elastivol doctor {where} --fix moves it to {pool.directory / 'quarantine'}",
                               _quarantine(pool, Path(problem.path))))
    return out


def scan_frozen(pool: Pool) -> list[Finding]:
    """Filesystems a snapshot froze and a killed process never thawed (its marker is still there).

    Writes to a frozen filesystem block until it is thawed, so a pod on it hangs: the fix thaws it
    (through any mount of the same device) and drops the marker. Run only while the pool is
    quiesced: a live snapshot's freeze looks the same.
    """
    out = []
    for marker in sorted(pool.lock_dir.glob(f"{FROZEN_PREFIX}*.json")):
        try:
            data = json.loads(marker.read_bytes())["data"]
            mountpoint, major_minor = str(data["mountpoint"]), str(data["major_minor"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            out.append(Finding("bad-freeze-marker", str(marker), f"unreadable ({exc})",
                               f"check whether a volume's filesystem is frozen (fsfreeze -u), then rm {marker}"))
            continue
        out.append(Finding("frozen-filesystem", mountpoint,
                           f"a snapshot froze {mountpoint} (device {major_minor}) and was killed before thawing it",
                           f"elastivol doctor --pool {pool.directory} --fix (or fsfreeze -u {mountpoint})",
                           _thaw(marker, mountpoint, major_minor)))
    return out


def _thaw(marker: Path, mountpoint: str, major_minor: str) -> Fix:
    def fix() -> None:
        # By device number, through any mount of it: the staging path may be gone or hold
        # something else now, and FITHAW acts on the filesystem, not on one mount of it.
        mounts = [m for m in mount.mounts() if m.major_minor == major_minor] if major_minor else []
        if mounts:
            fs.thaw(mounts[0].target)
        marker.unlink(missing_ok=True)
    return fix


def _temp_files(directory: Path) -> list[Finding]:
    out = []
    for entry in sorted(directory.glob(".*.tmp")):
        parts = entry.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else 0
        if pid and _pid_alive(pid):
            continue
        out.append(Finding("stale-temp-record", str(entry), "a metadata write that died before its rename",
                           f"rm {entry}", _unlink(entry)))
    return out


def _finish_delete(pool: Pool, volume_id: str) -> Fix:
    def fix() -> None:
        pool.image_path(volume_id).unlink(missing_ok=True)
        pool.volumes.delete(volume_id)
    return fix


def _drop_snapshot(pool: Pool, snapshot_id: str) -> Fix:
    def fix() -> None:
        pool.snapshot_path(snapshot_id).unlink(missing_ok=True)
        pool.snapshots.delete(snapshot_id)
    return fix


def _quarantine(pool: Pool, path: Path) -> Fix:
    def fix() -> None:
        target = pool.directory / "quarantine"
        target.mkdir(exist_ok=True)
        os.replace(path, target / f"{path.parent.name}-{path.name}")
    return fix


def _unclaimed(pool: Pool, found: PoolLoop) -> str:
    """Why no volume record claims this device as staged; "" when one does.

    A volume may be staged on a node of this host exactly while it is attached to one
    (ControllerPublishVolume comes before NodeStageVolume, ControllerUnpublishVolume after
    NodeUnstageVolume), so an attachment to any node is the claim: which node's plugin
    attached a device is not recorded by the kernel, and a raw block volume has no mount to
    show it is in use.
    """
    what = f"{found.kind} {found.object_id}".strip()
    if found.image is None:
        return f"its image ({what}, {found.device.backing_file}) was deleted while attached"
    if found.kind != "volume":
        return f"it holds the image of {what}, and elastivol never attaches snapshot images"
    rec = pool.volumes.get(found.object_id)
    if rec is None:
        return f"volume {found.object_id} has no record (it was deleted, or its create died)"
    if rec.get("state") == "deleting":
        return f"volume {found.object_id} is being deleted"
    if not rec.get("attachments"):
        return f"volume {found.object_id} is not attached to any node, so no node has it staged"
    return ""


def scan_loops(pool: Pool) -> list[Finding]:
    """Loop devices over pool images (live or deleted) that no volume record claims, and images
    with more than one device. Each finding says what start-up recovery and ``--fix`` do."""
    out = []
    claimed: dict[loop.FileId, list[PoolLoop]] = {}
    for found in pool.loop_devices():
        dev = found.device
        reason = _unclaimed(pool, found)
        if not reason:
            claimed.setdefault(dev.backing, []).append(found)
            continue
        users = holders.describe(dev.major_minor, f"loop{dev.number}")
        if users:
            detail = f"{dev.path}: {reason}; left attached because it is {'; '.join(users)}"
            remedy = f"unmount it ({'; '.join(users)}), then elastivol doctor --pool {pool.directory} --fix"
        else:
            detail = f"{dev.path}: {reason}; nothing holds it, so start-up recovery and --fix detach it"
            remedy = f"elastivol doctor --pool {pool.directory} --fix (or losetup -d {dev.path})"
        out.append(Finding("loop-without-volume", dev.path, detail, remedy,
                           None if users else _detach(dev.path, dev.backing)))
    for group in claimed.values():
        if len(group) > 1:
            out.append(_duplicates(pool, group))
    return out


def _duplicates(pool: Pool, group: list[PoolLoop]) -> Finding:
    """Two or more devices on one image: keep the one in use (or the first), detach the rest."""
    used = {f.device.path: holders.describe(f.device.major_minor, f"loop{f.device.number}") for f in group}
    busy = [f.device for f in group if used[f.device.path]]
    names = ", ".join(f.device.path for f in group)
    subject = f"{group[0].object_id} ({names})"
    if len(busy) > 1:
        where = "; ".join(f"{d.path} {', '.join(used[d.path])}" for d in busy)
        return Finding("image-with-several-loop-devices", subject,
                       f"the image of {group[0].object_id} is attached to {len(group)} devices and more than one is in "
                       f"use ({where}): its filesystem may be damaged; left alone",
                       "stop the pods using it, unmount all but one, then elastivol doctor --fix")
    keep = busy[0] if busy else group[0].device
    extra = [f.device for f in group if f.device.path != keep.path]

    def fix() -> None:
        for dev in extra:
            loop.detach(dev.path, expect=dev.backing)
    return Finding("image-with-several-loop-devices", subject,
                   f"the image of {group[0].object_id} is attached to {len(group)} devices; {keep.path} is kept, "
                   f"{', '.join(d.path for d in extra)} (unused) are detached by start-up recovery and --fix",
                   f"elastivol doctor --pool {pool.directory} --fix", fix)


def _detach(device: str, backing: loop.FileId) -> Fix:
    def fix() -> None:
        loop.detach(device, expect=backing)
    return fix


def apply(findings: list[Finding]) -> list[str]:
    """Make every safe repair; returns what was repaired (failures are logged and skipped)."""
    done = []
    for finding in findings:
        if finding.fix is None:
            continue
        try:
            finding.fix()
        except Exception as exc:  # one stuck object must not stop the others' repair
            log.warning("could not repair %s %s: %s", finding.kind, finding.subject, exc)
            continue
        done.append(f"{finding.kind} {finding.subject}: repaired ({finding.detail})")
    return done


def reconcile(pool: Pool, *, controller: bool, node: bool) -> list[str]:
    """What a starting server repairs. Logs each repair and each finding it leaves alone."""
    findings: list[Finding] = []
    if controller:
        with pool.quiesced() as alone:
            if alone:
                findings = scan_pool(pool)
                repaired = apply(findings)
            else:
                log.info("another process is changing pool %s: start-up sweep skipped", pool.directory)
                repaired = []
    else:
        repaired = []
    if node:
        loops = scan_loops(pool)
        findings += loops
        repaired += apply(loops)
    for line in repaired:
        log.warning("start-up recovery: %s", line)
    for finding in findings:
        if finding.fix is None:
            log.warning("start-up recovery left %s %s: %s; %s", finding.kind, finding.subject, finding.detail,
                        finding.remedy)
    return repaired
