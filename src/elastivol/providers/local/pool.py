"""A local pool: a directory that holds sparse volume images and their metadata.

Layout::

    POOL/pool.json                 what the pool is (schema-versioned)
    POOL/images/vol-*.img          one sparse image per block volume
    POOL/snapshots/snap-*.img      one image per snapshot (a reflink copy where possible)
    POOL/meta/<kind>/<id>.json     one record per volume, snapshot, node...
    POOL/locks/                    flock files shared by the processes using the pool

Snapshots and clones want reflink (O(1) copies), shared file volumes want per-directory
quotas. When the directory's own filesystem lacks what is needed, ``init_pool`` makes a
filesystem image beside it (``POOL.img``), formats it with a filesystem that has it and
mounts it at POOL. What the kernel offers is probed, never assumed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from elastivol import ids
from elastivol.domain import Health, Snapshot
from elastivol.errors import Exhausted, FailedPrecondition, InvalidArgument, Unavailable
from elastivol.node import copy as hostcopy
from elastivol.node import fs as hostfs
from elastivol.node import loop, mount
from elastivol.node.run import run
from elastivol.store import RecordStore, atomic_write_json
from elastivol.units import GiB

POOL_FILE = "pool.json"
OPERATIONS_LOCK = "pool-operations.lock"
# Admission: checking and reserving pool space (or a node's attachment slots) is one step under
# one of these flocks, shared by every process on the pool.
SPACE_LOCK = "pool-space.lock"
ATTACH_LOCK = "pool-attachments.lock"
# A create holds its size as a sparse file of that size in images/ until its image is in place.
# The name contains ".img.partial", so start-up recovery sweeps one a crash left behind.
RESERVATION_SUFFIX = ".img.partial.reserved"
# locks/frozen-<major>-<minor>-<pid>.json: a filesystem this pool's process is freezing (for a snapshot).
FROZEN_PREFIX = "frozen-"
POOL_SCHEMA = 1
DEFAULT_POOL_SIZE = 20 * GiB
POOL_FILESYSTEMS = ("xfs", "btrfs")
# Chosen by measuring first writes into a sparse volume image on each (see README, Performance).
DEFAULT_POOL_FS = "xfs"
NO_REFLINK_NOTICE = (
    "pool {pool} ({fs}) has no reflink: snapshots and clones are full sparse copies, O(size) "
    "instead of O(1); `elastivol pool init` on an empty directory makes an xfs or btrfs pool"
)


@dataclass(frozen=True)
class PoolConfig:
    schema: int
    id: str
    fs_type: str
    reflink: bool
    quotas: str  # "btrfs-qgroup" or "none"
    backing_image: str  # "" when the pool lives on the directory's own filesystem
    created_at: float


@dataclass(frozen=True)
class PoolUsage:
    total_bytes: int
    free_bytes: int
    provisioned_bytes: int
    allocated_bytes: int
    uncommitted_bytes: int
    volumes: int
    snapshots: int


@dataclass(frozen=True)
class PoolLoop:
    """A loop device whose backing file is one of the pool's images, or was one until deleted."""

    device: loop.LoopDevice
    kind: str  # "volume", "snapshot", or "unknown" (a deleted file of the pool's own filesystem)
    object_id: str  # the vol-/snap- id its file name carries; "" when it carries none
    image: Path | None  # the live image; None when the device holds a deleted file

    @property
    def deleted(self) -> bool:
        return self.image is None


def _deleted_shape(backing_file: str) -> tuple[str, str]:
    """(kind, id) that a deleted file's last two path components say it was, or ("", "").

    Only the tail is read: the head is the path in the mount namespace that attached the
    device, which a restarted node plugin does not share.
    """
    parent, name = os.path.split(backing_file)
    stem = name.removesuffix(".partial").removesuffix(".img")
    folder = os.path.basename(parent)
    if folder == "images" and name.endswith((".img", ".img.partial")) and ids.is_volume_id(stem):
        return "volume", stem
    if folder == "snapshots" and name.endswith((".img", ".img.partial")) and ids.is_snapshot_id(stem):
        return "snapshot", stem
    return "", ""


def backing_image_for(directory: Path) -> Path:
    return directory.with_name(directory.name + ".img")


def _probe_fs_type(directory: Path) -> str:
    info = mount.find_by_target(str(directory))
    best = info
    if best is None:
        # The directory is not a mountpoint itself: find the mount that contains it.
        candidates = [m for m in mount.mounts() if _is_under(directory, Path(m.target))]
        best = max(candidates, key=lambda m: len(m.target), default=None)
    return best.fstype if best is not None else "unknown"


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


def _btrfs_quota_enable(directory: Path) -> bool:
    result = run(["btrfs", "quota", "enable", str(directory)], timeout=60, check=False)
    return result.returncode == 0


def quotas_available(directory: Path, fs_type: str) -> str:
    if fs_type != "btrfs":
        # XFS project quotas need CONFIG_XFS_QUOTA; ext4 project quotas need a quota-enabled
        # mount. Neither is offered by every kernel, and this pool does not use them.
        return "none"
    result = run(["btrfs", "qgroup", "show", str(directory)], timeout=30, check=False)
    return "btrfs-qgroup" if result.returncode == 0 else "none"


def _mount_backing(image: Path, directory: Path, fs_type: str) -> None:
    dev = loop.ensure_attached(image, direct_io=True)
    mount.mount(dev.path, str(directory), fs_type, ())


def init_pool(
    directory: Path, size_bytes: int | None = None, fs_type: str | None = None, *, in_place: bool = False
) -> PoolConfig:
    """Prepare ``directory`` as a pool (idempotent). Returns what the pool is.

    ``in_place`` keeps the directory's own filesystem even without reflink: snapshots and
    clones then become full sparse copies, O(size) instead of O(1).
    """
    if fs_type is not None and fs_type not in POOL_FILESYSTEMS:
        raise InvalidArgument(f"--fs {fs_type!r} is not supported for pools; choose one of {POOL_FILESYSTEMS}")
    directory = directory.absolute()
    directory.mkdir(parents=True, exist_ok=True)
    existing = load_config(directory, remount=True)
    if existing is not None:
        if fs_type is not None and existing.fs_type != fs_type:
            raise FailedPrecondition(
                f"{directory} is already a {existing.fs_type} pool; to use {fs_type}, delete the pool's "
                "volumes, unmount it and remove it first"
            )
        return existing
    here_fs = _probe_fs_type(directory)
    here_reflink = hostcopy.reflink_supported(directory)
    if in_place and fs_type is not None and fs_type != here_fs:
        raise InvalidArgument(f"--in-place keeps {directory}'s own filesystem ({here_fs}); it cannot also be --fs {fs_type}")
    wanted = here_fs if in_place else (
        fs_type or (here_fs if here_reflink and here_fs in POOL_FILESYSTEMS else DEFAULT_POOL_FS)
    )
    backing = ""
    if not in_place and not (here_reflink and here_fs == wanted):
        if any(directory.iterdir()):
            raise FailedPrecondition(
                f"{directory} is on {here_fs} (reflink: {'yes' if here_reflink else 'no'}) and is not empty, "
                f"so elastivol cannot mount a {wanted} pool filesystem over it: choose an empty directory"
            )
        image = backing_image_for(directory)
        size = size_bytes or DEFAULT_POOL_SIZE
        if size < 1 * GiB:
            raise InvalidArgument(f"pool size {size} bytes is too small: give --size of at least 1G")
        with open(image, "ab") as fh:
            if os.fstat(fh.fileno()).st_size < size:
                fh.truncate(size)
        dev = loop.ensure_attached(image, direct_io=True)
        if hostfs.detect(dev.path) is None:
            hostfs.make(dev.path, wanted, ())
        mount.mount(dev.path, str(directory), wanted, ())
        backing = str(image)
    quotas = "none"
    if wanted == "btrfs" and _btrfs_quota_enable(directory):
        quotas = quotas_available(directory, wanted)
    config = PoolConfig(
        schema=POOL_SCHEMA,
        id=ids.new_id("pool"),
        fs_type=wanted,
        reflink=hostcopy.reflink_supported(directory),
        quotas=quotas,
        backing_image=backing,
        created_at=time.time(),
    )
    for sub in ("images", "snapshots", "meta", "locks"):
        (directory / sub).mkdir(exist_ok=True)
    atomic_write_json(directory / POOL_FILE, {"schema": POOL_SCHEMA, "kind": "pool", "data": asdict(config)})
    return config


def load_config(directory: Path, *, remount: bool = False) -> PoolConfig | None:
    """The pool's config, or None when ``directory`` is not a pool.

    With ``remount``, a pool whose backing image is no longer mounted (after a reboot) is
    mounted again first.
    """
    path = directory / POOL_FILE
    if not path.exists() and remount:
        image = backing_image_for(directory)
        if image.exists() and not mount.is_mountpoint(str(directory)):
            fs_type = hostfs.detect(loop.ensure_attached(image, direct_io=True).path)
            if fs_type in POOL_FILESYSTEMS:
                _mount_backing(image, directory, fs_type)
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_bytes())
        data = payload["data"]
        return PoolConfig(**{k: data[k] for k in PoolConfig.__dataclass_fields__})
    except (ValueError, KeyError, TypeError) as exc:
        raise FailedPrecondition(f"{path} is damaged ({exc}); run `elastivol doctor --pool {directory}`") from exc


class Pool:
    """An initialised pool, as seen by one process."""

    def __init__(self, directory: Path, *, overcommit_ratio: float = 1.0) -> None:
        self.directory = directory.absolute()
        config = load_config(self.directory, remount=True)
        if config is None:
            raise FailedPrecondition(
                f"{self.directory} is not an elastivol pool: run `elastivol pool init {self.directory}` first"
            )
        self.config = config
        self.overcommit_ratio = overcommit_ratio
        self.images = self.directory / "images"
        self.snapshot_images = self.directory / "snapshots"
        self.lock_dir = self.directory / "locks"
        meta = self.directory / "meta"
        self.volumes = RecordStore(meta / "volumes", "volume", ids.is_volume_id)
        self.snapshots = RecordStore(meta / "snapshots", "snapshot", ids.is_snapshot_id)
        self.nodes = RecordStore(meta / "nodes", "node", ids.is_node_id)

    @contextlib.contextmanager
    def operation(self) -> Iterator[None]:
        """Mark a multi-step change of the pool as in progress (a shared flock).

        Start-up recovery and ``doctor --fix`` sweep half-made objects only while they can take
        this lock exclusively, so they never mistake another process's running create for the
        leftover of a crash. The kernel drops the lock when its holder dies.
        """
        with _flocked(self.lock_dir / OPERATIONS_LOCK, fcntl.LOCK_SH):
            yield

    @contextlib.contextmanager
    def quiesced(self) -> Iterator[bool]:
        """Yield True when no process is in the middle of an :meth:`operation` (and none can start)."""
        fd = os.open(self.lock_dir / OPERATIONS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """An exclusive flock on ``locks/<name>``: one holder across every thread and process.

        Each call opens its own descriptor, and flocks on different open files exclude each
        other, so threads of one process queue on it as other processes do.
        """
        with _flocked(self.lock_dir / name, fcntl.LOCK_EX):
            yield

    def reservation_path(self, key: str) -> Path:
        return self.images / f"{key}{RESERVATION_SUFFIX}"

    @contextlib.contextmanager
    def reserved(self, key: str, size_bytes: int, what: str) -> Iterator[None]:
        """Admit ``size_bytes`` against what the pool can promise and hold it for the block.

        The check and the reservation happen under one lock, so concurrent creates (threads or
        processes) can never together promise more than the pool has. The block must put its
        image in place before it ends; the reservation goes after that (for that short moment
        both count, which errs on the safe side).
        """
        path = self.reservation_path(key)
        with self.exclusive(SPACE_LOCK):
            available = self.available_bytes()
            if size_bytes > available:
                raise Exhausted(
                    f"pool {self.directory} cannot hold {what} ({size_bytes} bytes): it can promise {available} "
                    "more bytes; free space, grow the pool, or set --overcommit-ratio"
                )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, size_bytes)  # sparse: it costs no space, it only counts
            finally:
                os.close(fd)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def out_of_space(self, doing: str, kept: str = "nothing was kept", *, say_why: bool = True) -> Iterator[None]:
        """An ENOSPC or EDQUOT in the block becomes Exhausted: the pool ran out of space while
        ``doing``; ``kept`` says what is left of the work (the block has undone it by then)."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            why = f" ({exc.strerror})" if say_why else ""
            raise Exhausted(
                f"pool {self.directory} ran out of space while {doing}{why}; {kept}: free space or grow the pool, "
                "then retry"
            ) from exc

    def freeze_marker(self, mountpoint: str) -> Path:
        """Record, before freezing ``mountpoint``, which filesystem is about to be frozen (its
        device number, so recovery thaws that filesystem and no other); returns the marker."""
        device = mount.find_by_target(mountpoint)
        major_minor = device.major_minor if device is not None else ""
        path = self.lock_dir / f"{FROZEN_PREFIX}{major_minor.replace(':', '-') or 'unknown'}-{os.getpid()}-{threading.get_ident()}.json"
        atomic_write_json(path, {"schema": POOL_SCHEMA, "kind": "frozen", "data": {
            "mountpoint": mountpoint, "major_minor": major_minor, "pid": os.getpid(), "at": time.time()}})
        return path

    def image_path(self, volume_id: str) -> Path:
        return self.images / f"{volume_id}.img"

    def snapshot_path(self, snapshot_id: str) -> Path:
        return self.snapshot_images / f"{snapshot_id}.img"

    def loop_devices(self) -> list[PoolLoop]:
        """Every loop device on this host whose backing file is a pool image, live or deleted.

        Matched by identity (see :class:`elastivol.node.loop.FileId`), so devices attached by
        a plugin in another mount namespace, with the pool mounted at another path, count too.
        A live image is recognised by its inode. A deleted one has no name left to stat; it is
        recognised by being on the pool's filesystem (``lo_device`` is the pool's ``st_dev``)
        while no file of the pool has its inode, and, unless that filesystem is the pool's own
        (a pool image mounted at the pool directory), by sysfs naming it
        ``.../images/vol-*.img (deleted)`` or ``.../snapshots/snap-*.img (deleted)``.
        """
        live: dict[loop.FileId, tuple[str, Path]] = {}
        for kind, folder in (("volume", self.images), ("snapshot", self.snapshot_images)):
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        live[loop.FileId.of(st)] = (kind, Path(entry.path))
        dedicated = bool(self.config.backing_image)
        folders = {loop.file_id(self.images), loop.file_id(self.snapshot_images)}
        out = []
        for dev in loop.on_filesystem(os.stat(self.directory).st_dev):
            hit = live.get(dev.backing)
            if hit is not None:
                kind, path = hit
                name = path.name.removesuffix(".partial").removesuffix(".img")
                out.append(PoolLoop(dev, kind, name, path))
            elif dev.deleted and (dedicated or self._maybe_ours(dev, folders)):
                kind, object_id = _deleted_shape(dev.backing_file)
                if kind or dedicated:
                    out.append(PoolLoop(dev, kind or "unknown", object_id, None))
        return out

    @staticmethod
    def _maybe_ours(dev: loop.LoopDevice, folders: set[loop.FileId | None]) -> bool:
        """A deleted file on a filesystem the pool shares: not another pool's, as far as can be told.

        When the folder sysfs names is visible here and is not this pool's images or snapshots
        folder, the file was another pool's (two pools on one filesystem). A folder that does not
        resolve here was named by another mount namespace, and the name's shape decides.
        """
        folder = loop.file_id(os.path.dirname(dev.backing_file))
        return folder is None or folder in folders

    def health(self) -> Health:
        if not (self.directory / POOL_FILE).exists():
            return Health(False, f"pool {self.directory} is gone (is its filesystem unmounted?)")
        if self.config.backing_image and not mount.is_mountpoint(str(self.directory)):
            return Health(False, f"pool filesystem {self.config.backing_image} is not mounted at {self.directory}")
        probe = self.directory / "locks" / f".probe-{os.getpid()}-{threading.get_ident()}"
        try:
            with open(probe, "wb") as fh:
                fh.write(b"ok")
            probe.unlink()
        except OSError as exc:
            return Health(False, f"pool {self.directory} is not writable: {exc.strerror}")
        if not self.config.reflink:
            return Health(True, notice=NO_REFLINK_NOTICE.format(pool=self.directory, fs=self.config.fs_type))
        return Health(True)

    def usage(self) -> PoolUsage:
        stats = hostfs.statfs(str(self.directory))
        provisioned = allocated = 0
        volumes = snapshots = 0
        for folder in (self.images, self.snapshot_images):
            with os.scandir(folder) as entries:
                for entry in entries:
                    reservation = entry.name.endswith(RESERVATION_SUFFIX)
                    if not entry.name.endswith(".img") and not reservation:
                        continue
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue  # deleted by a concurrent DeleteVolume/DeleteSnapshot since the scan
                    provisioned += st.st_size
                    allocated += min(st.st_blocks * 512, st.st_size)
                    if reservation:
                        continue
                    if folder is self.images:
                        volumes += 1
                    else:
                        snapshots += 1
        return PoolUsage(
            total_bytes=stats.total_bytes,
            free_bytes=stats.available_bytes,
            provisioned_bytes=provisioned,
            allocated_bytes=allocated,
            uncommitted_bytes=provisioned - allocated,
            volumes=volumes,
            snapshots=snapshots,
        )

    def available_bytes(self) -> int:
        """Space a new volume may promise: free space, less what existing images may still claim."""
        usage = self.usage()
        return max(0, int(usage.free_bytes * self.overcommit_ratio) - usage.uncommitted_bytes)

    def require_usable(self) -> None:
        health = self.health()
        if not health.ready:
            raise Unavailable(health.reason)


def snapshot_from_record(rec: dict[str, Any]) -> Snapshot:
    """A snapshot record of the pool (a block volume's or an access point's) as the domain's Snapshot."""
    return Snapshot(
        id=rec["id"],
        name=rec["name"],
        source_volume_id=rec["source_volume_id"],
        size_bytes=int(rec["size_bytes"]),
        created_at=float(rec["created_at"]),
        ready=rec.get("state") == "ready",
        consistency=str(rec.get("consistency", "crash")),
        tags=dict(rec.get("tags", {})),
        group_snapshot_id=str(rec.get("group_snapshot_id", "")),
    )


@contextlib.contextmanager
def _flocked(path: Path, operation: int) -> Iterator[None]:
    """Hold a flock on ``path`` (created if missing) through its own descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)
