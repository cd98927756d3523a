"""Filesystems on devices: what is there (read from the superblock), make, size, grow, freeze.

Detection reads the superblocks itself, since it runs on every stage and blkid costs as much
as a whole mkfs.ext4. blkid is asked only when none of ours matches, so that any other
signature (swap, LUKS, a partition table...) still makes the device "not blank": a device
that is not blank is never formatted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import stat
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from elastivol.domain import EXT_FS_TYPES, VOLUME_FS_TYPES
from elastivol.errors import FailedPrecondition, Internal, InvalidArgument, NotFound, Unimplemented
from elastivol.node import _sys, loop
from elastivol.node.run import HostCommandError, run

log = logging.getLogger("elastivol.node.fs")

EXT_TYPES = EXT_FS_TYPES
MAKE_TYPES = (*VOLUME_FS_TYPES, "btrfs")  # btrfs: a pool's own filesystem (`pool init --fs btrfs`)
_MKFS_TIMEOUT = 600.0
_GROW_TIMEOUT = 600.0

# ext2/3/4 superblock: 1024 bytes in, little-endian (<linux/ext4.h>, e2fsprogs).
_EXT_SB = 1024
_EXT_MAGIC = 0xEF53
_EXT_COMPAT_HAS_JOURNAL = 0x4
_EXT_INCOMPAT_JOURNAL_DEV = 0x8
_EXT_INCOMPAT_64BIT = 0x80
_EXT_INCOMPAT_RECOVER = 0x4  # the journal needs replaying
_EXT_STATE_VALID = 0x1  # cleanly unmounted
_EXT_STATE_ERROR = 0x2
# The features each older generation understands (as blkid decides ext2 vs ext3 vs ext4):
# anything beyond them (extents, flex_bg, 64bit, metadata_csum, huge_file...) means ext4.
_EXT2_INCOMPAT = 0x2 | 0x10  # filetype, meta_bg
_EXT3_INCOMPAT = 0x2 | 0x4 | 0x10  # filetype, recover, meta_bg
_EXT23_RO_COMPAT = 0x1 | 0x2 | 0x4  # sparse_super, large_file, btree_dir
# btrfs: primary superblock at 64 KiB, magic at 0x40 in it, total_bytes at 0x70.
_BTRFS_SB = 0x10000
_BTRFS_MAGIC = b"_BHRfS_M"
# blkid -p exit codes (blkid(8)).
_BLKID_NOTHING = 2
_BLKID_AMBIVALENT = 8


def _pread(fd: int, length: int, offset: int) -> bytes:
    # Page-aligned memory, so the same call serves an O_DIRECT descriptor.
    with mmap.mmap(-1, length) as buf:
        got = os.preadv(fd, [buf], offset)
        return bytes(buf[:got])


def _superblocks(fd: int) -> tuple[bytes, bytes]:
    return _pread(fd, 4096, 0), _pread(fd, 4096, _BTRFS_SB)


def _ext_kind(sb: bytes) -> str:
    compat, incompat, ro_compat = struct.unpack_from("<III", sb, _EXT_SB + 92)
    if incompat & _EXT_INCOMPAT_JOURNAL_DEV:
        return "jbd"  # an external journal: not a mountable filesystem, but not blank
    journal = bool(compat & _EXT_COMPAT_HAS_JOURNAL)
    if not ro_compat & ~_EXT23_RO_COMPAT:
        if not journal and not incompat & ~_EXT2_INCOMPAT:
            return "ext2"
        if journal and not incompat & ~_EXT3_INCOMPAT:
            return "ext3"
    return "ext4"


def _is_ext(head: bytes) -> bool:
    return len(head) >= _EXT_SB + 1024 and struct.unpack_from("<H", head, _EXT_SB + 56)[0] == _EXT_MAGIC


def _is_xfs(head: bytes) -> bool:
    if len(head) < 16 or head[:4] != b"XFSB":
        return False
    blocksize: int = struct.unpack_from(">I", head, 4)[0]
    return 512 <= blocksize <= 65536 and blocksize & (blocksize - 1) == 0


def _is_btrfs(btrfs: bytes) -> bool:
    return btrfs[0x40:0x48] == _BTRFS_MAGIC


def _ours(head: bytes, btrfs: bytes) -> str | None:
    if _is_xfs(head):
        return "xfs"
    if _is_btrfs(btrfs):
        return "btrfs"
    if _is_ext(head):
        return _ext_kind(head)
    return None


def _open_read(device: str, *, direct: bool = False) -> int:
    """Open for reading; ``direct`` (O_DIRECT) reads the medium, not the page cache.

    Read an unmounted filesystem directly: a mounted one may have written its superblock
    around the device's page cache (xfs does), leaving stale pages there. Read a mounted ext
    through the cache instead: its live superblock is a page of that cache.
    """
    if direct:
        # A failure (EINVAL: no O_DIRECT on this filesystem) falls through to a plain open,
        # which also reports a missing device properly.
        with contextlib.suppress(OSError):
            return os.open(device, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
    try:
        return os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"device {device} does not exist") from None
    except OSError as exc:
        raise Internal(f"cannot open {device}: {exc.strerror}") from exc


def _all_holes(fd: int, device: str) -> bool:
    """True when ``device`` provably holds only zeros: a loop device over a file with no data.

    This spares the blkid run for the common case, a fresh sparse image. Writes still in the
    device's page cache are pushed to the file first, so none can hide from SEEK_DATA.
    """
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        backing = device
    elif stat.S_ISBLK(st.st_mode) and os.major(st.st_rdev) == loop.LOOP_MAJOR:
        try:
            with open(f"/sys/dev/block/7:{os.minor(st.st_rdev)}/loop/backing_file", "rb") as fh:
                backing = os.fsdecode(fh.read()).removesuffix("\n")
            expected: loop.FileId | None = loop.backing_of_fd(fd)
        except OSError:
            return False
        if backing.endswith(" (deleted)"):
            return False
        _sys.sync_file_range(fd)
    else:
        return False
    try:
        bfd = os.open(backing, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        # sysfs prints the path as the namespace that attached the device saw it: here it may
        # name another file, or none. Only the device's own file may vouch for its blankness.
        if stat.S_ISBLK(st.st_mode) and loop.FileId.of(os.fstat(bfd)) != expected:
            return False
        os.lseek(bfd, 0, os.SEEK_DATA)
    except OSError as exc:
        return exc.errno == errno.ENXIO  # no data from offset 0 to the end
    finally:
        os.close(bfd)
    return False


def _blkid(device: str) -> str | None:
    result = run(["blkid", "-p", "-o", "export", device], timeout=60, check=False)
    if result.returncode == _BLKID_NOTHING:
        return None
    if result.returncode == _BLKID_AMBIVALENT:
        return "ambivalent"  # several signatures: certainly not blank
    if result.returncode != 0:
        raise HostCommandError(["blkid", "-p", "-o", "export", device], result.returncode, result.stderr)
    values: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values.get("TYPE") or values.get("PTTYPE") or "unknown"


def detect(device: str) -> str | None:
    """The filesystem (or other signature) type on ``device``; None when it is blank."""
    fd = _open_read(device, direct=True)
    try:
        found = _ours(*_superblocks(fd))
        if found is not None or _all_holes(fd, device):
            return found
    finally:
        os.close(fd)
    return _blkid(device)


def make(device: str, fs_type: str, extra_args: Sequence[str] = ()) -> None:
    """Format ``device`` (the caller has checked it is blank)."""
    if fs_type in EXT_TYPES:
        # Lazy init leaves zeroing inode tables and journal to the kernel (or skips it on
        # zeroed space): mkfs then takes milliseconds whatever the size. nodiscard: a fresh
        # sparse image has nothing to discard, and discarding costs time.
        argv = [f"mkfs.{fs_type}", "-F", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"]
    elif fs_type == "xfs":
        argv = ["mkfs.xfs", "-f", "-q", "-K"]
    elif fs_type == "btrfs":
        argv = ["mkfs.btrfs", "-f", "-q", "-K"]
    else:
        raise InvalidArgument(f"cannot format {fs_type!r}: elastivol formats {', '.join(MAKE_TYPES)}")
    run([*argv, *extra_args, device], timeout=_MKFS_TIMEOUT)
    log.debug("formatted %s as %s", device, fs_type)


def _xfs_geometry_size(mountpoint: str) -> int:
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        buf = fcntl.ioctl(fd, _sys.XFS_IOC_FSGEOMETRY_V1, b"\0" * 112)
    finally:
        os.close(fd)
    blocksize = struct.unpack_from("=I", buf, 0)[0]
    datablocks = struct.unpack_from("=Q", buf, 32)[0]
    return int(blocksize * datablocks)


def fs_size_bytes(device: str, fs_type: str, *, mountpoint: str | None = None) -> int:
    """The size the filesystem on ``device`` spans, from its superblock.

    Pass ``mountpoint`` when it is mounted: xfs then answers with its live geometry (it
    keeps its superblock in its own buffer cache), and others are read through the cache.
    """
    if fs_type == "xfs" and mountpoint:
        return _xfs_geometry_size(mountpoint)
    fd = _open_read(device, direct=not mountpoint)
    try:
        head, btrfs = _superblocks(fd)
    finally:
        os.close(fd)
    if fs_type in EXT_TYPES and _is_ext(head):
        lo = struct.unpack_from("<I", head, _EXT_SB + 4)[0]
        log_block = struct.unpack_from("<I", head, _EXT_SB + 24)[0]
        incompat = struct.unpack_from("<I", head, _EXT_SB + 96)[0]
        hi = struct.unpack_from("<I", head, _EXT_SB + 0x150)[0] if incompat & _EXT_INCOMPAT_64BIT else 0
        return int(((hi << 32) | lo) * (1024 << log_block))
    if fs_type == "xfs" and _is_xfs(head):
        blocksize, dblocks = struct.unpack_from(">IQ", head, 4)
        return int(blocksize * dblocks)
    if fs_type == "btrfs" and _is_btrfs(btrfs):
        return int(struct.unpack_from("<Q", btrfs, 0x70)[0])
    raise FailedPrecondition(f"{device} does not hold a {fs_type} filesystem")


def grow(device: str, mountpoint: str, fs_type: str) -> None:
    """Grow the mounted filesystem to fill its device."""
    if fs_type in EXT_TYPES:
        try:
            run(["resize2fs", device], timeout=_GROW_TIMEOUT)
        except HostCommandError as exc:
            # ext4's online resize ioctl demands CAP_SYS_RESOURCE, which some containers drop.
            if "Permission denied" in exc.stderr:
                raise FailedPrecondition(
                    f"cannot grow the mounted {fs_type} filesystem on {device}: online resize needs "
                    "CAP_SYS_RESOURCE, which the node plugin lacks; give it that capability, or unstage "
                    "and stage the volume again to grow it offline"
                ) from exc
            raise
    elif fs_type == "xfs":
        run(["xfs_growfs", "-d", mountpoint], timeout=_GROW_TIMEOUT)
    elif fs_type == "btrfs":
        run(["btrfs", "filesystem", "resize", "max", mountpoint], timeout=_GROW_TIMEOUT)
    else:
        raise InvalidArgument(
            f"cannot grow a {fs_type!r} filesystem: elastivol grows {', '.join(MAKE_TYPES)}"
        )
    log.debug("grew %s (%s) at %s", device, fs_type, mountpoint)


def ext_clean(device: str) -> bool:
    """Whether the ext filesystem on ``device`` was cleanly unmounted and has no known errors."""
    fd = _open_read(device, direct=True)
    try:
        head = _pread(fd, 4096, 0)
    finally:
        os.close(fd)
    if not _is_ext(head):
        return False
    state = struct.unpack_from("<H", head, _EXT_SB + 58)[0]
    incompat = struct.unpack_from("<I", head, _EXT_SB + 96)[0]
    return (
        bool(state & _EXT_STATE_VALID)
        and not state & _EXT_STATE_ERROR
        and not incompat & _EXT_INCOMPAT_RECOVER
    )


def grow_offline(device: str, fs_type: str) -> None:
    """Grow an unmounted ext filesystem to fill its device (xfs and btrfs grow only mounted).

    resize2fs wants an ``e2fsck -f`` after every mount; ``-f`` skips that wait once we have
    seen that the filesystem was cleanly unmounted, has no recorded errors and no journal to
    replay (resize2fs itself still refuses an unclean or erroneous one).
    """
    if fs_type not in EXT_TYPES:
        raise InvalidArgument(f"a {fs_type} filesystem can only be grown while mounted")
    if not ext_clean(device):
        raise FailedPrecondition(f"the {fs_type} filesystem on {device} is not clean; mount it to grow it")
    run(["resize2fs", "-f", device], timeout=_GROW_TIMEOUT)
    log.debug("grew %s (%s) offline", device, fs_type)


def stat_existing(path: str, label: str = "") -> os.stat_result:
    """``os.stat(path)``; NotFound "<label> does not exist" (label: the path itself by default)."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"{label or path} does not exist") from None


def device_size(path: str) -> int:
    """Bytes of a block device (BLKGETSIZE64) or a regular file."""
    st = stat_existing(path)
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if not stat.S_ISBLK(st.st_mode):
        raise InvalidArgument(f"{path} is neither a block device nor a regular file")
    fd = _open_read(path)
    try:
        return _sys.block_device_size(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class FsStats:
    total_bytes: int
    available_bytes: int  # for unprivileged users (reserved blocks excluded)
    used_bytes: int
    inodes_total: int
    inodes_free: int
    inodes_used: int


def statfs(path: str) -> FsStats:
    try:
        st = os.statvfs(path)
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist") from None
    return FsStats(
        total_bytes=st.f_blocks * st.f_frsize,
        available_bytes=st.f_bavail * st.f_frsize,
        used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize,
        inodes_total=st.f_files,
        inodes_free=st.f_ffree,
        inodes_used=st.f_files - st.f_ffree,
    )


def _freeze_ioctl(mountpoint: str, request: int) -> None:
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, request, 0)
    finally:
        os.close(fd)


def freeze(mountpoint: str) -> None:
    """Flush and block writes to the filesystem at ``mountpoint`` (FIFREEZE)."""
    try:
        _freeze_ioctl(mountpoint, _sys.FIFREEZE)
    except FileNotFoundError:
        raise NotFound(f"{mountpoint} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise FailedPrecondition(f"{mountpoint} is already frozen") from None
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
            raise Unimplemented(f"the filesystem at {mountpoint} cannot be frozen") from None
        raise Internal(f"cannot freeze {mountpoint}: {exc.strerror}") from exc


def thaw(mountpoint: str) -> bool:
    """Thaw ``mountpoint`` (FITHAW); False when it was not frozen."""
    try:
        _freeze_ioctl(mountpoint, _sys.FITHAW)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise Internal(f"cannot thaw {mountpoint}: {exc.strerror}") from exc
    return True


@contextlib.contextmanager
def frozen(mountpoint: str) -> Iterator[None]:
    """Frozen for the block's duration; thawed on the way out, whatever happens inside."""
    freeze(mountpoint)
    try:
        yield
    finally:
        thaw(mountpoint)
