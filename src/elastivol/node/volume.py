"""Stage, publish and expand a volume on this host, given its block device.

Both block providers (loop devices locally, EBS devices on AWS) hand this module a device
path; it knows nothing of pools or clouds. Every step is idempotent, because a CO retries
every call and a node can crash between any two steps.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from elastivol import crashpoints
from elastivol.errors import AlreadyExists, FailedPrecondition, Internal, InvalidArgument
from elastivol.node import fs, mount
from elastivol.node.paths import require_directory_target

log = logging.getLogger("elastivol.node.volume")

crashpoints.register("stage.after_mkfs", "stage.after_mount")

# Filesystems are grown at stage only when the device outgrew them by more than this: mkfs
# and the grow tools leave a tail smaller than a block or a too-small last group unused, and
# "growing" that on every stage would spawn a tool for nothing.
GROW_SLACK = 4 << 20
_DIR_MODE = 0o750


@dataclass(frozen=True)
class StageResult:
    formatted: bool
    grown: bool
    fs_type: str


def _device_id(device: str) -> str:
    st = fs.stat_existing(device, f"device {device}")
    if not stat.S_ISBLK(st.st_mode):
        raise InvalidArgument(f"{device} is not a block device")
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def _outgrown(device: str, mountpoint: str, fs_type: str, slack: int) -> bool:
    """Whether the device is larger than its filesystem by more than ``slack``."""
    size = fs.fs_size_bytes(device, fs_type, mountpoint=mountpoint or None)
    return fs.device_size(device) - size > slack


def _grow_if_smaller(device: str, mountpoint: str, fs_type: str, slack: int) -> bool:
    """Grow the filesystem mounted at ``mountpoint`` if its device outgrew it."""
    if not _outgrown(device, mountpoint, fs_type, slack):
        return False
    fs.grow(device, mountpoint, fs_type)
    return True


def stage_filesystem(
    device: str,
    staging_path: str,
    fs_type: str,
    *,
    mkfs_args: Sequence[str] = (),
    mount_options: Sequence[str] = (),
    readonly: bool = False,
) -> StageResult:
    """Format ``device`` if blank, mount it at ``staging_path``, grow it if the device grew.

    A device attached read-only (ControllerPublishVolume ``readonly``) is mounted read-only;
    a blank one is refused, since it cannot be formatted.
    """
    device_id = _device_id(device)
    attached_read_only = device_read_only(device)
    options = mount.volume_options(mount_options)
    if readonly or attached_read_only:
        options.append("ro")
    read_only_mount = bool(mount.parse_options(options, allow_privileged=True)[0] & mount.MS_RDONLY)

    current = mount.find_by_target(staging_path)
    if current is not None:
        if current.major_minor != device_id or current.root != "/":
            raise FailedPrecondition(
                f"{staging_path} already has another filesystem mounted on it ({current.source}); "
                "unstage that volume first"
            )
        # Same volume, staged before: the same request is a no-op, a different one is the spec's
        # ALREADY_EXISTS (the kubelet restages with the same capability after every restart).
        if current.fstype != fs_type:
            raise AlreadyExists(
                f"the volume is already staged at {staging_path} as {current.fstype}, not {fs_type}; "
                "unstage it first to stage it differently"
            )
        differs = _stage_flags_differ(current, options)
        if differs:
            raise AlreadyExists(
                f"the volume is already staged at {staging_path} with {differs}; unstage it first to stage it "
                "with other mount options or another access mode"
            )
        grown = not current.read_only and _grow_if_smaller(device, staging_path, fs_type, GROW_SLACK)
        return StageResult(formatted=False, grown=grown, fs_type=fs_type)
    # One staging path per volume: a second one would mount the same filesystem twice, and the
    # next unstage would unmount one and leave the other holding the device.
    elsewhere = sorted(m.target for m in mount.mounts() if m.major_minor == device_id)
    if elsewhere:
        raise FailedPrecondition(
            f"{device} is already mounted at {', '.join(elsewhere[:3])}, so it cannot be staged at "
            f"staging_target_path {staging_path} too: unpublish and unstage it there first"
        )

    found = fs.detect(device)
    formatted = False
    if found is None:
        if attached_read_only:
            raise FailedPrecondition(
                f"{device} is blank and attached read-only (ControllerPublishVolume readonly=true), so it cannot "
                "be formatted: attach it read-write once to create its filesystem, or restore it from a snapshot"
            )
        if read_only_mount:
            raise FailedPrecondition(
                f"{device} is blank and the volume is to be mounted read-only, so it cannot be formatted; "
                "stage it read-write once first"
            )
        fs.make(device, fs_type, mkfs_args)
        formatted = True
        crashpoints.hit("stage.after_mkfs")
    elif found != fs_type:
        # Never reformat: whatever is on the device may be someone's data.
        raise FailedPrecondition(
            f"{device} already holds {found} but the volume asks for {fs_type}; elastivol never reformats a "
            f"device that is not blank: use fsType {found} or a new volume"
        )

    # Expanded while unstaged? Measured before mounting, from the on-disk superblock.
    outgrown = not formatted and not read_only_mount and _outgrown(device, "", fs_type, GROW_SLACK)
    grown = False
    if outgrown and found in fs.EXT_TYPES and fs.ext_clean(device):
        # Grow ext before mounting, where no capability is needed (online ext4 resize needs
        # CAP_SYS_RESOURCE, which containers often drop).
        fs.grow_offline(device, fs_type)
        grown = True

    os.makedirs(staging_path, mode=_DIR_MODE, exist_ok=True)
    if fs_type == "xfs" and "nouuid" not in options:
        # A clone or snapshot restore has its source's UUID; xfs refuses a second mount of a
        # UUID unless told not to check.
        options.append("nouuid")
    mount.mount(device, staging_path, fs_type, options)
    crashpoints.hit("stage.after_mount")

    if outgrown and not grown:
        # xfs and btrfs grow only mounted (and an ext with a journal to replay).
        fs.grow(device, staging_path, fs_type)
        grown = True
    return StageResult(formatted=formatted, grown=grown, fs_type=fs_type)


def unstage(staging_path: str) -> bool:
    """Unmount whatever is staged at ``staging_path``; False when nothing was.

    Refused, with nothing changed, while the staged filesystem is still bound at a publish
    target: unmounting the staging path would succeed, but the device behind it could not be
    detached, and the volume would be left half unstaged.
    """
    table = mount.mounts()
    staged = mount.find_by_target(staging_path, table)
    if staged is not None:
        published = sorted({m.target for m in table if m.major_minor == staged.major_minor
                            and m.target != staged.target and not m.target.startswith(staged.target + "/")})
        if published:
            shown = ", ".join(published[:3]) + (f" and {len(published) - 3} more" if len(published) > 3 else "")
            raise FailedPrecondition(
                f"staging_target_path {staging_path} is still published at {shown}: "
                "call NodeUnpublishVolume for those targets first"
            )
    return mount.unmount_all(staging_path) > 0


def publish_bind(staging_path: str, target: str, readonly: bool, options: Sequence[str] = ()) -> None:
    """Bind the staged filesystem at ``target`` (a directory, created if missing)."""
    table = mount.mounts()
    staged = mount.find_by_target(staging_path, table)
    if staged is None:
        raise FailedPrecondition(f"nothing is staged at {staging_path}: stage the volume first")
    existing = mount.find_by_target(target, table)
    if existing is not None:
        # The same filesystem and the same directory of it (device and root), not a path's text.
        if (existing.major_minor, existing.root) == (staged.major_minor, staged.root) and existing.read_only == readonly:
            return
        raise FailedPrecondition(f"{target} already has another mount on it; unpublish it first")
    require_directory_target(target, "a volume in mount mode is published on one")
    mount.refuse_covering(target, table)
    os.makedirs(target, mode=_DIR_MODE, exist_ok=True)
    mount.bind(staging_path, target, readonly=readonly, options=mount.volume_options(options))


def publish_block(device: str, target_file: str, readonly: bool) -> None:
    """Bind the device node onto a regular file at ``target_file`` (created if missing).

    A read-only bind stops writes through files, not through a device node: a read-only
    raw block volume relies on the device itself being read-only (the attachment).
    """
    device_id = _device_id(device)
    existing = mount.find_by_target(target_file)
    if existing is not None:
        st = os.stat(target_file)
        if stat.S_ISBLK(st.st_mode) and f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" == device_id:
            if existing.read_only != readonly:
                raise AlreadyExists(
                    f"the volume is already published at {target_file} with readonly={existing.read_only}; "
                    f"unpublish it first to publish it with readonly={readonly}"
                )
            return
        raise FailedPrecondition(f"{target_file} already has another mount on it; unpublish it first")
    os.makedirs(os.path.dirname(target_file), mode=_DIR_MODE, exist_ok=True)
    try:
        fd = os.open(target_file, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR):
            raise InvalidArgument(
                f"{target_file} must be a regular file (or not exist) for a raw block volume"
            ) from None
        raise Internal(f"cannot create {target_file}: {exc.strerror}") from exc
    os.close(fd)
    mount.bind(device, target_file, readonly=readonly, options=mount.volume_options((), device_node=True))


def unpublish(target: str) -> bool:
    """Unmount ``target`` and remove the empty directory or file publishing left there.

    Returns whether something was mounted. Non-empty directories and non-empty files are left
    alone: they are not ours.
    """
    unmounted = mount.unmount_all(target) > 0
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return unmounted
    try:
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(target)
        elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
            os.unlink(target)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            raise Internal(f"cannot remove {target} after unmounting it: {exc.strerror}") from exc
        log.info("left %s in place: %s", target, exc.strerror)
    return unmounted


def expand_online(device: str, mountpoint: str, fs_type: str) -> int:
    """Grow the mounted filesystem to its device's size; returns the filesystem's new size."""
    _grow_if_smaller(device, mountpoint, fs_type, 0)
    return fs.fs_size_bytes(device, fs_type, mountpoint=mountpoint)


def is_mount_of(info: mount.MountInfo, path: str, device: str) -> bool:
    """Whether the mount ``info`` at ``path`` is of ``device``: its filesystem (a stage or a
    publication of it), or the device node itself bound onto a file (a raw block publication)."""
    device_id = _device_id(device)
    if info.major_minor == device_id:
        return True
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISBLK(st.st_mode) and f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" == device_id


def device_read_only(device: str) -> bool:
    """Whether the kernel has ``device`` read-only (a loop device attached read-only, say)."""
    st = os.stat(device)
    try:
        with open(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/ro") as fh:
            return fh.read().strip() == "1"
    except OSError:
        return False  # no sysfs entry (not a block device we can ask): treat as writable


def _atime_mode(flags: int) -> str:
    if flags & mount.MS_NOATIME:
        return "noatime"
    if flags & mount.MS_STRICTATIME:
        return "strictatime"
    return "relatime"


def _stage_flags_differ(current: mount.MountInfo, wanted: Sequence[str]) -> str:
    """How the per-mount flags of ``current`` differ from the options a stage asks for ("" if they
    agree). Only flags the mount table shows reliably are compared: ro, noexec, nodiratime and the
    atime mode. Filesystem options are not: the kernel rewrites and adds to them."""
    asked = mount.parse_options(wanted, allow_privileged=True)[0]
    words = current.options.split(",")
    # Words the parser takes as flags (its data string stays empty for them); the rest are not ours.
    flag_words = [w for w in words if w and not mount.parse_options([w], allow_privileged=True)[1]]
    have = mount.parse_options(flag_words, allow_privileged=True)[0]
    if "relatime" not in words and not have & mount.MS_NOATIME:
        have |= mount.MS_STRICTATIME  # the table shows strictatime as the absence of the others
    diffs = []
    for bit, on, off in ((mount.MS_RDONLY, "ro", "rw"), (mount.MS_NOEXEC, "noexec", "exec"),
                         (mount.MS_NODIRATIME, "nodiratime", "diratime")):
        if asked & bit != have & bit:
            diffs.append(f"{on if have & bit else off} (asked: {on if asked & bit else off})")
    if _atime_mode(asked) != _atime_mode(have):
        diffs.append(f"{_atime_mode(have)} (asked: {_atime_mode(asked)})")
    return ", ".join(diffs)
