"""Loop devices through their ioctls (no losetup).

A device is set up in one ``LOOP_CONFIGURE`` (Linux 5.8+): file, flags and direct I/O
together, so no one ever sees a half-configured device. What is attached to what is read
from ``/sys/block/loopN/loop``, which costs no process and no open of the device.
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
from elastivol.node import _sys

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
class LoopDevice:
    path: str
    number: int
    backing_file: str
    read_only: bool
    direct_io: bool
    # The backing file was unlinked (or renamed over) while attached.
    deleted: bool = False


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


# -- reading state from sysfs ------------------------------------------------------------------
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
    """(backing file, deleted) of ``loopN``, or None when it is free."""
    text = _read_sys(f"{_SYS_BLOCK}/loop{number}/loop/backing_file")
    if not text:
        return None
    if text.endswith(_DELETED):
        return text[: -len(_DELETED)], True
    return text, False


def _device(number: int, backing: str, deleted: bool) -> LoopDevice | None:
    """``loopN`` as attached to ``backing``, or None when it was detached since that was read."""
    base = f"{_SYS_BLOCK}/loop{number}"
    ro = _read_sys(f"{base}/ro")
    # loop/ (and its dio) exists exactly while a file is attached.
    dio = _read_sys(f"{base}/loop/dio")
    if ro is None or dio is None:
        return None
    return LoopDevice(
        path=f"/dev/loop{number}",
        number=number,
        backing_file=backing,
        read_only=ro == "1",
        direct_io=dio == "1",
        deleted=deleted,
    )


def list_all() -> list[LoopDevice]:
    """Every attached loop device on the host, by number (one detached mid-scan is left out)."""
    out = []
    for number in sorted(_numbers()):
        found = _backing(number)
        if found is None:
            continue
        dev = _device(number, *found)
        if dev is not None:
            out.append(dev)
    return out


def find(image: str | os.PathLike[str]) -> list[LoopDevice]:
    """The devices whose backing file is ``image``.

    A device whose backing file was deleted only counts when nothing exists at that path any
    more: then it is the leftover of this image (worth detaching), while a file that now
    exists there is a different inode the device has never seen.
    """
    wanted = os.path.realpath(image)
    exists: bool | None = None
    out = []
    for number in sorted(_numbers()):
        found = _backing(number)
        if found is None:
            continue
        backing, deleted = found
        # sysfs prints the path the file was opened by, already free of symlinks.
        if backing != wanted:
            continue
        if deleted:
            if exists is None:
                exists = os.path.lexists(wanted)
            if exists:
                continue
        dev = _device(number, backing, deleted)
        if dev is not None:
            out.append(dev)
    return out


# -- attaching ---------------------------------------------------------------------------------
def _configure(number: int, backing_fd: int, name: str, flags: int) -> int:
    """LOOP_CONFIGURE ``loopN``; returns the flags the kernel took. Raises OSError."""
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
        return _status_fd(dev).flags
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
            taken = _configure(number, fd, image, flags)
        except OSError as exc:
            # EBUSY: another process configured this number first. ENOENT: its node is not
            # in /dev yet (devtmpfs adds it as the device is created). Take the next free one.
            if exc.errno in (errno.EBUSY, errno.ENOENT) and attempt + 1 < _ATTACH_ATTEMPTS:
                time.sleep(0.001 * attempt)
                continue
            raise Internal(f"cannot attach {image} to /dev/loop{number}: {exc.strerror}") from exc
        dev = LoopDevice(
            path=f"/dev/loop{number}",
            number=number,
            backing_file=image,
            read_only=bool(taken & LO_FLAGS_READ_ONLY),
            direct_io=bool(taken & LO_FLAGS_DIRECT_IO),
        )
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


def ensure_attached(
    image: str | os.PathLike[str], *, read_only: bool = False, direct_io: bool = True
) -> LoopDevice:
    """The loop device of ``image``, attaching one only if none exists.

    An exclusive flock on the image makes find-then-attach atomic between processes, so two
    racing callers cannot give one image two devices.
    """
    # The lock lives on its own open file: the fd handed to LOOP_CONFIGURE stays referenced by
    # the loop device, so a flock on it would outlive this call and block the next caller.
    with _open_image(image, True) as (lock_fd, _), _open_image(image, read_only) as (fd, path):
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        for dev in find(path):
            if dev.deleted:
                continue
            if dev.read_only != read_only:
                raise FailedPrecondition(
                    f"{path} is already attached to {dev.path} "
                    f"{'read-only' if dev.read_only else 'read-write'}, but {'read-only' if read_only else 'read-write'} "
                    "was asked for: detach it first (unstage the volume)"
                )
            return dev
        return _attach_fd(fd, path, read_only=read_only, direct_io=direct_io)


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


def status(path: str) -> LoopStatus:
    """``LOOP_GET_STATUS64`` of an attached device; NotFound when it is free."""
    _check_loop(path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _status_fd(fd)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise NotFound(f"{path} is not attached") from None
        raise Internal(f"cannot read the status of {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def detach(path: str) -> bool:
    """Detach ``path``; False when it was already free (or is gone). In use → InUse.

    The device is opened exclusively first: a mounted device (or one mkfs is writing) is
    held exclusively, so we refuse instead of letting LOOP_CLR_FD quietly turn into a
    deferred "autoclear" detach.
    """
    try:
        _check_loop(path)
        fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise InUse(f"loop device {path} is in use (mounted?): unmount it before detaching") from None
        raise Internal(f"cannot open {path} to detach it: {exc.strerror}") from exc
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return False
        raise Internal(f"cannot detach {path}: {exc.strerror}") from exc
    finally:
        # The kernel tears the device down as this last opener closes it.
        os.close(fd)
    log.debug("detached %s", path)
    return True


def detach_all(image: str | os.PathLike[str]) -> int:
    """Detach every device of ``image``; returns how many were detached."""
    return sum(1 for dev in find(image) if detach(dev.path))


def refresh_capacity(path: str) -> int:
    """Make the device see its backing file's new size (LOOP_SET_CAPACITY); returns the size."""
    _check_loop(path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, LOOP_SET_CAPACITY)
        return _sys.block_device_size(fd)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise FailedPrecondition(f"{path} is not attached to an image") from None
        raise Internal(f"cannot refresh the capacity of {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
