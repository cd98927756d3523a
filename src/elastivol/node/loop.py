"""Loop devices through their ioctls (no losetup).

A device is set up in one ``LOOP_CONFIGURE`` (Linux 5.8+): file, flags and direct I/O
together, so no one ever sees a half-configured device. Which devices are attached is read
from ``/sys/block/loopN/loop``; to what, from ``LOOP_GET_STATUS64``: the backing file's device
and inode (:class:`FileId`). Every lookup compares that identity with ``stat()`` of an image,
never the path sysfs prints, which depends on the mount namespace that attached the device.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

from elastivol.errors import FailedPrecondition, Internal, InUse, InvalidArgument, NotFound, Unavailable
from elastivol.node import _sys, holders

log = logging.getLogger("elastivol.node.loop")

LOOP_MAJOR = 7
LOOP_CONTROL = "/dev/loop-control"
_SYS_BLOCK = "/sys/block"
_DELETED = " (deleted)"

# <linux/loop.h>
LOOP_CLR_FD = 0x4C01
LOOP_GET_STATUS64 = 0x4C05
LOOP_SET_CAPACITY = 0x4C07
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_PARTSCAN = 8
LO_FLAGS_DIRECT_IO = 16
LO_NAME_SIZE = 64
LO_KEY_SIZE = 32
# Always 512-byte sectors. Left to choose (0), the kernel matches the backing file's direct
# I/O alignment, which changes under a volume: on xfs a file that was ever reflinked (a
# snapshot's source, a clone) wants 4096, and an xfs made on 512-byte sectors then refuses to
# mount ("device supports 4096 byte sectors"). With 512 the kernel quietly drops direct I/O
# where the file cannot do it at that size, and the volume's geometry never changes.
SECTOR_SIZE = 512
# Another process can take the number LOOP_CTL_GET_FREE gave us before we configure it.
_ATTACH_ATTEMPTS = 32
# How long an attach waits for a device already on its way out (autoclear) to go.
_DEPARTING_WAIT = 0.5
# How many 2 ms looks a detach takes for its device to be gone (another opener delays that).
_GONE_POLLS = 50


class LoopInfo64(ctypes.Structure):
    """``struct loop_info64``: 232 bytes, naturally aligned (checked at import)."""

    _fields_ = [
        ("lo_device", ctypes.c_uint64),
        ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64),
        ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32),
        ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_crypt_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_encrypt_key", ctypes.c_char * LO_KEY_SIZE),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class LoopConfig(ctypes.Structure):
    """``struct loop_config``: 304 bytes."""

    _fields_ = [
        ("fd", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("info", LoopInfo64),
        ("reserved", ctypes.c_uint64 * 8),
    ]


# A wrong layout would make the kernel read garbage flags; fail at import instead.
if ctypes.sizeof(LoopInfo64) != 232 or ctypes.sizeof(LoopConfig) != 304:
    # The ioctls read these structs by size; a mismatch would corrupt loop configuration.
    raise ImportError("struct loop_info64/loop_config layout does not match the kernel ABI on this platform")


@dataclass(frozen=True)
class FileId:
    """What a file is, independent of any path: its filesystem's device number and its inode.

    A loop device is matched to its image by this pair, as ``LOOP_GET_STATUS64`` reports it
    (``lo_device``/``lo_inode``) and ``stat()`` gives it. The path in sysfs is no use for that:
    the kernel prints it as seen from the mount namespace that attached the device, so a node
    plugin restarted in a new container (the pool mounted elsewhere, or the old mount gone)
    cannot recognise its own devices by it. An inode held open by a device is never freed, so
    while the device exists no other file can have the same pair.
    """

    device: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileId:
        return cls(st.st_dev, st.st_ino)


def file_id(path: str | os.PathLike[str]) -> FileId | None:
    """The identity of the file at ``path`` (symlinks followed), or None when there is none."""
    try:
        return FileId.of(os.stat(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


def _decode_dev(encoded: int) -> int:
    """``lo_device`` is the kernel's huge_encode_dev(); give it in the st_dev form Python uses."""
    major = (encoded & 0xFFF00) >> 8
    minor = (encoded & 0xFF) | ((encoded >> 12) & 0xFFF00)
    return os.makedev(major, minor)


@dataclass(frozen=True)
class LoopDevice:
    path: str
    number: int
    # Identity of the backing file (see FileId): what every lookup compares.
    backing: FileId
    # The backing file's path as sysfs prints it: relative to the mount namespace that attached
    # the device, so for messages only, never for matching.
    backing_file: str
    read_only: bool
    direct_io: bool
    # The backing file was unlinked (or renamed over) while attached.
    deleted: bool = False
    # "major:minor" of the device itself, as /proc/self/mountinfo shows its mounts.
    major_minor: str = ""
    autoclear: bool = False
    offset: int = 0
    sizelimit: int = 0

    @classmethod
    def from_status(
        cls, number: int, status: LoopStatus, major_minor: str, backing_file: str, *, deleted: bool = False
    ) -> LoopDevice:
        """``loopN`` as ``LOOP_GET_STATUS64`` reports it, with what the caller knows besides: the
        device's "major:minor" and the backing file's path (sysfs's, or the one just attached)."""
        return cls(
            path=f"/dev/loop{number}",
            number=number,
            backing=status.backing,
            backing_file=backing_file,
            read_only=status.read_only,
            direct_io=status.direct_io,
            deleted=deleted,
            major_minor=major_minor,
            autoclear=status.autoclear,
            offset=status.offset,
            sizelimit=status.sizelimit,
        )


@dataclass(frozen=True)
class LoopStatus:
    """What ``LOOP_GET_STATUS64`` reports for a device."""

    number: int
    backing_device: int
    backing_inode: int
    offset: int
    sizelimit: int
    flags: int
    file_name: str

    @property
    def read_only(self) -> bool:
        return bool(self.flags & LO_FLAGS_READ_ONLY)

    @property
    def direct_io(self) -> bool:
        return bool(self.flags & LO_FLAGS_DIRECT_IO)

    @property
    def autoclear(self) -> bool:
        return bool(self.flags & LO_FLAGS_AUTOCLEAR)

    @property
    def backing(self) -> FileId:
        return FileId(_decode_dev(self.backing_device), self.backing_inode)


# -- reading state -----------------------------------------------------------------------------
# A device can be detached (or removed) by another thread or process while we read it. Its
# attribute is then gone (ENOENT), or kernfs refuses it because its node is being removed
# under an open file (ENODEV), or the device is going away (ENXIO): all mean "not there".
_VANISHED = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO})


def _read_sys(path: str) -> str | None:
    """A sysfs attribute's text; None when it (or its device) is not there, even mid-read."""
    try:
        with open(path, "rb") as fh:
            return os.fsdecode(fh.read()).removesuffix("\n")
    except OSError as exc:
        if exc.errno in _VANISHED:
            return None
        raise


def _numbers() -> Iterator[int]:
    for name in os.listdir(_SYS_BLOCK):
        if name.startswith("loop") and name[4:].isdigit():
            yield int(name[4:])


def _backing(number: int) -> tuple[str, bool] | None:
    """(backing file as sysfs prints it, deleted) of ``loopN``, or None when it is free."""
    text = _read_sys(f"{_SYS_BLOCK}/loop{number}/loop/backing_file")
    if not text:
        return None
    if text.endswith(_DELETED):
        return text[: -len(_DELETED)], True
    return text, False


def _status_of(number: int) -> tuple[LoopStatus, str] | None:
    """(LOOP_GET_STATUS64, "major:minor") of ``/dev/loopN``; None when it is free or gone.

    Opening a loop device read-only has no side effect; an open that races a detach only
    delays the teardown until it is closed.
    """
    try:
        fd = os.open(f"/dev/loop{number}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _VANISHED:
            return None
        raise
    try:
        rdev = os.fstat(fd).st_rdev
        return _status_fd(fd), f"{os.major(rdev)}:{os.minor(rdev)}"
    except OSError as exc:
        if exc.errno in _VANISHED:
            return None
        raise
    finally:
        os.close(fd)


def _device(number: int) -> LoopDevice | None:
    """``loopN`` as attached now, or None when it is free (or was detached while being read)."""
    found = _backing(number)
    if found is None:
        return None
    backing_file, deleted = found
    read = _status_of(number)
    if read is None:
        return None
    st, major_minor = read
    return LoopDevice.from_status(number, st, major_minor, backing_file, deleted=deleted)


def list_all() -> list[LoopDevice]:
    """Every attached loop device on the host, by number (one detached mid-scan is left out).

    This is the one scan every lookup below filters: sysfs says which devices are attached
    (no open for a free one), ``LOOP_GET_STATUS64`` says to what.
    """
    out = []
    for number in sorted(_numbers()):
        dev = _device(number)
        if dev is not None:
            out.append(dev)
    return out


def backed_by(ident: FileId) -> list[LoopDevice]:
    """The devices whose backing file is the file ``ident``."""
    return [d for d in list_all() if d.backing == ident]


def find(image: str | os.PathLike[str]) -> list[LoopDevice]:
    """The devices whose backing file is the file now at ``image`` (compared by identity).

    A device whose file was deleted (or renamed over) holds an inode that no path leads to any
    more, so it is never found here: :func:`on_filesystem` finds those, and the pool scan
    (``Pool.loop_devices``) tells which of them were pool images.
    """
    ident = file_id(image)
    return [] if ident is None else backed_by(ident)


def on_filesystem(device: int) -> list[LoopDevice]:
    """The devices whose backing file, live or deleted, is on the filesystem ``device`` (an st_dev)."""
    return [d for d in list_all() if d.backing.device == device]


def under(root: str | os.PathLike[str]) -> list[LoopDevice]:
    """The devices backed by files under the directory ``root``, for cleanup and leak checks.

    A file counts when it is (by identity) a file under ``root``; or when it is on ``root``'s
    own filesystem (``root`` is a mount point, like a pool) or on a filesystem mounted below
    ``root`` from a loop device over a file under ``root``, deleted files included; or when
    sysfs names a deleted file under ``root`` (attached from this mount namespace). Other
    filesystems mounted below ``root`` do not make their files ``root``'s.
    """
    base = os.path.realpath(root)
    devices = list_all()
    files: set[FileId] = set()
    mounted: set[int] = set()
    owned: set[int] = set()
    top = os.stat(base).st_dev
    if os.stat(os.path.dirname(base) or "/").st_dev != top:
        owned.add(top)
    for dirpath, _dirs, names in os.walk(base):
        try:
            here = os.stat(dirpath).st_dev
        except FileNotFoundError:
            continue
        if here != top:
            mounted.add(here)
        for name in names:
            try:
                st = os.stat(os.path.join(dirpath, name), follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                files.add(FileId.of(st))
    by_number = {d.major_minor: d for d in devices}
    for dev in mounted:
        over = by_number.get(f"{os.major(dev)}:{os.minor(dev)}")
        if over is not None and over.backing in files:
            owned.add(dev)
    prefix = base.rstrip("/") + "/"
    return [
        d for d in devices
        if d.backing in files or d.backing.device in owned or (d.deleted and d.backing_file.startswith(prefix))
    ]


# -- attaching ---------------------------------------------------------------------------------
# LO_FLAGS_AUTOCLEAR is never set. With it the kernel detaches a device when its last opener
# closes it, and elastivol's devices spend time with no opener at all: between LOOP_CONFIGURE
# and the mount in NodeStage (so the device would vanish before mkfs), and for the whole life
# of a staged raw block volume (a bind mount of the device node does not open it). Leaks are
# handled instead by finding devices by identity (unstage, DeleteVolume, start-up recovery).
def _configure(number: int, backing_fd: int, name: str, flags: int) -> tuple[LoopStatus, str]:
    """LOOP_CONFIGURE ``loopN``; returns what the kernel took and the device's "major:minor"."""
    config = LoopConfig()
    config.fd = backing_fd
    config.block_size = SECTOR_SIZE
    config.info.lo_flags = flags
    # Only for LOOP_GET_STATUS64 readers; sysfs has the full path.
    config.info.lo_file_name = os.fsencode(name)[: LO_NAME_SIZE - 1]
    dev = os.open(f"/dev/loop{number}", os.O_RDWR | os.O_CLOEXEC)
    try:
        try:
            fcntl.ioctl(dev, LOOP_CONFIGURE, config)
        except OSError as exc:
            # Backing files on filesystems without O_DIRECT (or with a sector size the loop
            # cannot match) refuse direct I/O with EINVAL: attach buffered instead.
            if exc.errno != errno.EINVAL or not flags & LO_FLAGS_DIRECT_IO:
                raise
            log.info("loop%d: direct I/O refused for %s; attaching with buffered I/O", number, name)
            config.info.lo_flags = flags & ~LO_FLAGS_DIRECT_IO
            fcntl.ioctl(dev, LOOP_CONFIGURE, config)
        rdev = os.fstat(dev).st_rdev
        return _status_fd(dev), f"{os.major(rdev)}:{os.minor(rdev)}"
    finally:
        os.close(dev)


def _get_free() -> int:
    ctl = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        return int(fcntl.ioctl(ctl, LOOP_CTL_GET_FREE))
    finally:
        os.close(ctl)


def _attach_fd(fd: int, image: str, *, read_only: bool, direct_io: bool) -> LoopDevice:
    flags = (LO_FLAGS_READ_ONLY if read_only else 0) | (LO_FLAGS_DIRECT_IO if direct_io else 0)
    for attempt in range(_ATTACH_ATTEMPTS):
        try:
            number = _get_free()
        except FileNotFoundError:
            raise Unavailable(
                f"{LOOP_CONTROL} does not exist: load the loop module (modprobe loop)"
            ) from None
        except OSError as exc:
            raise Unavailable(f"no free loop device: {exc.strerror}") from exc
        try:
            taken, major_minor = _configure(number, fd, image, flags)
        except OSError as exc:
            # EBUSY: another process configured this number first. ENOENT: its node is not
            # in /dev yet (devtmpfs adds it as the device is created). Take the next free one.
            if exc.errno in (errno.EBUSY, errno.ENOENT) and attempt + 1 < _ATTACH_ATTEMPTS:
                time.sleep(0.001 * attempt)
                continue
            raise Internal(f"cannot attach {image} to /dev/loop{number}: {exc.strerror}") from exc
        dev = LoopDevice.from_status(number, taken, major_minor, image)
        log.debug("attached %s to %s (direct io: %s)", image, dev.path, dev.direct_io)
        return dev
    raise Unavailable(f"cannot attach {image}: every free loop device was taken by someone else; retry")


@contextlib.contextmanager
def _open_image(image: str | os.PathLike[str], read_only: bool) -> Iterator[tuple[int, str]]:
    path = os.path.realpath(image)
    try:
        fd = os.open(path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"image {os.fspath(image)} does not exist") from None
    except IsADirectoryError:
        raise InvalidArgument(f"{path} is neither a regular file nor a block device") from None
    except OSError as exc:
        raise FailedPrecondition(
            f"cannot open {path} {'read-only' if read_only else 'for writing'}: {exc.strerror}"
        ) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            raise InvalidArgument(f"{path} is neither a regular file nor a block device")
        yield fd, path
    finally:
        os.close(fd)


def attach(image: str | os.PathLike[str], *, read_only: bool = False, direct_io: bool = True) -> LoopDevice:
    """Attach ``image`` to a new loop device (even if one already serves it)."""
    with _open_image(image, read_only) as (fd, path):
        return _attach_fd(fd, path, read_only=read_only, direct_io=direct_io)


@contextlib.contextmanager
def image_lock(image: str | os.PathLike[str]) -> Iterator[FileId | None]:
    """Hold the image's attach lock; yields its identity (None when there is no image).

    An exclusive flock on the image itself: every process and every mount namespace that
    opens the file gets the same lock, so attaching, detaching and deleting an image are
    serialised wherever the pool is mounted.
    """
    try:
        fd = os.open(os.path.realpath(image), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield FileId.of(os.fstat(fd))
    finally:
        os.close(fd)


def ensure_attached(
    image: str | os.PathLike[str], *, read_only: bool = False, direct_io: bool = True
) -> LoopDevice:
    """The loop device of ``image``, attaching one only if none exists.

    An existing device (found by the file's identity, whoever attached it and from whichever
    mount namespace) is reused when it serves the image the way asked, and refused with a
    reason otherwise: one image never gets a second device. The image's flock makes
    find-then-attach atomic between processes.
    """
    # The lock lives on its own open file: the fd handed to LOOP_CONFIGURE stays referenced by
    # the loop device, so a flock on it would outlive this call and block the next caller.
    with image_lock(image) as ident, _open_image(image, read_only) as (fd, path):
        st = os.fstat(fd)
        if ident is None or FileId.of(st) != ident or st.st_nlink == 0:
            # Deleted or replaced between the two opens (a DeleteVolume won the lock first).
            raise NotFound(f"image {path} was deleted or replaced while being attached")
        devices = backed_by(ident)
        deadline = time.monotonic() + _DEPARTING_WAIT
        while devices and all(d.autoclear for d in devices) and time.monotonic() < deadline:
            # Detached while someone (a scan like ours) had it open: it goes at their close.
            time.sleep(0.02)
            devices = backed_by(ident)
        if not devices:
            return _attach_fd(fd, path, read_only=read_only, direct_io=direct_io)
        if len(devices) > 1:
            names = ", ".join(d.path for d in devices)
            raise FailedPrecondition(
                f"{path} is attached to {len(devices)} loop devices ({names}); two devices on one image can "
                "corrupt it, so none is used: unmount and detach the extra ones (elastivol doctor --fix "
                "detaches those nothing holds), then retry"
            )
        dev = devices[0]
        _check_reusable(dev, path, read_only)
        if stat.S_ISREG(st.st_mode) and _size(dev.path) != st.st_size:
            # Grown while attached and never refreshed (the plugin died before NodeExpandVolume).
            refresh_capacity(dev.path)
        log.info("%s is already attached to %s; reusing it", path, dev.path)
        return dev


def _check_reusable(dev: LoopDevice, path: str, read_only: bool) -> None:
    if dev.read_only != read_only:
        raise FailedPrecondition(
            f"{path} is already attached to {dev.path} "
            f"{'read-only' if dev.read_only else 'read-write'}, but {'read-only' if read_only else 'read-write'} "
            "was asked for: detach it first (unstage the volume)"
        )
    if dev.offset or dev.sizelimit:
        raise FailedPrecondition(
            f"{path} is already attached to {dev.path} with offset {dev.offset} and size limit {dev.sizelimit} "
            "(not by elastivol?): that device shows only part of the image; detach it (losetup -d) and retry"
        )
    if dev.autoclear:
        raise FailedPrecondition(
            f"{path} is attached to {dev.path}, which is being detached (autoclear: it goes when its last user "
            "closes it); unmount whatever still uses it, then retry"
        )


def _size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _sys.block_device_size(fd)
    finally:
        os.close(fd)


# -- status, capacity, detaching -----------------------------------------------------------------
def _check_loop(path: str) -> None:
    st = os.stat(path)
    if not stat.S_ISBLK(st.st_mode) or os.major(st.st_rdev) != LOOP_MAJOR:
        raise InvalidArgument(f"{path} is not a loop device")


def _status_fd(fd: int) -> LoopStatus:
    info = LoopInfo64()
    fcntl.ioctl(fd, LOOP_GET_STATUS64, info)
    return LoopStatus(
        number=info.lo_number,
        backing_device=info.lo_device,
        backing_inode=info.lo_inode,
        offset=info.lo_offset,
        sizelimit=info.lo_sizelimit,
        flags=info.lo_flags,
        file_name=os.fsdecode(info.lo_file_name),
    )


def backing_of_fd(fd: int) -> FileId:
    """Identity of the backing file of the loop device open at ``fd`` (OSError ENXIO when free)."""
    return _status_fd(fd).backing


@contextlib.contextmanager
def _opened_attached(path: str, doing: str, free: Exception) -> Iterator[int]:
    """The loop device ``path``, opened read-only for an ioctl that needs it attached: ENXIO (it
    has no backing file) raises ``free``; another failure, Internal "cannot <doing>"."""
    _check_loop(path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise free from None
        raise Internal(f"cannot {doing}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def status(path: str) -> LoopStatus:
    """``LOOP_GET_STATUS64`` of an attached device; NotFound when it is free."""
    with _opened_attached(path, f"read the status of {path}", NotFound(f"{path} is not attached")) as fd:
        return _status_fd(fd)


def detach(path: str, *, expect: FileId | None = None) -> bool:
    """Detach ``path``; False when it was already free (or is gone). In use → InUse.

    The device is opened exclusively first: a mounted device (or one mkfs is writing) is
    held exclusively, so we refuse instead of letting LOOP_CLR_FD quietly turn into a
    deferred "autoclear" detach. With ``expect``, a device whose backing file is no longer
    that file (freed and taken by someone else since it was looked up) is left alone (False).
    """
    try:
        _check_loop(path)
        fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise InUse(f"loop device {path} is in use ({_holders_of(path)}): unmount it before detaching") from None
        raise Internal(f"cannot open {path} to detach it: {exc.strerror}") from exc
    try:
        if expect is not None and _status_fd(fd).backing != expect:
            return False
        fcntl.ioctl(fd, LOOP_CLR_FD)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return False
        raise Internal(f"cannot detach {path}: {exc.strerror}") from exc
    finally:
        # The kernel tears the device down as its last opener closes it: this fd, or, when
        # another process had it open at that moment (a scan like list_all), that one's.
        os.close(fd)
    number = int(path.removeprefix("/dev/loop")) if path.removeprefix("/dev/loop").isdigit() else -1
    for _ in range(_GONE_POLLS):
        if number < 0 or _backing(number) is None:
            break
        time.sleep(0.002)
    log.debug("detached %s", path)
    return True


def _holders_of(path: str) -> str:
    rdev = os.stat(path).st_rdev
    users = holders.describe(f"{os.major(rdev)}:{os.minor(rdev)}", os.path.basename(path))
    return "; ".join(users) or "held by a mount in a namespace this process cannot see, or by mkfs/fsck"


def detach_all(image: str | os.PathLike[str]) -> int:
    """Detach every device of the file at ``image``; returns how many were detached."""
    with image_lock(image) as ident:
        if ident is None:
            return 0
        return sum(1 for dev in backed_by(ident) if detach(dev.path, expect=ident))


def refresh_capacity(path: str) -> int:
    """Make the device see its backing file's new size (LOOP_SET_CAPACITY); returns the size."""
    free = FailedPrecondition(f"{path} is not attached to an image")
    with _opened_attached(path, f"refresh the capacity of {path}", free) as fd:
        fcntl.ioctl(fd, LOOP_SET_CAPACITY)
        return _sys.block_device_size(fd)


@contextlib.contextmanager
def released(image: str | os.PathLike[str]) -> Iterator[None]:
    """Detach every device of ``image`` and keep it unattachable while the caller runs (to delete it).

    A device something holds (a mount in any namespace, a bound device node, device-mapper)
    is not pulled away: InUse (FAILED_PRECONDITION) names the device and its holders.
    """
    with image_lock(image) as ident:
        for dev in backed_by(ident) if ident is not None else []:
            users = holders.describe(dev.major_minor, f"loop{dev.number}")
            if not users:
                try:
                    detach(dev.path, expect=ident)
                    continue
                except InUse:
                    users = ["opened exclusively by something this process cannot see (a mount in another "
                             "mount namespace, or a running mkfs/fsck)"]
            raise InUse(
                f"{os.fspath(image)} is still attached to {dev.path}, {'; '.join(users)}: unmount it there "
                "(unstage the volume on its node), then retry"
            )
        yield
