"""Thin ctypes bindings for the few syscalls Python's ``os`` lacks, and shared ioctl numbers.

Each wrapper raises :class:`OSError` with the errno, like ``os`` does, so callers map errno
values to domain errors in one place each. Numbers are for x86_64 and arm64 (same values).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

# The C library by its soname (glibc), else the process's own symbols, which include libc's.
# Not ctypes.util.find_library: it runs ldconfig in a subprocess and imports tempfile and shutil,
# which a node plugin pays for at every start.
try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _libc = ctypes.CDLL(None, use_errno=True)

_mount = _libc.mount
_mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_mount.restype = ctypes.c_int
_umount2 = _libc.umount2
_umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_umount2.restype = ctypes.c_int
_statx = getattr(_libc, "statx", None)
if _statx is not None:
    _statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    _statx.restype = ctypes.c_int
_sync_file_range = _libc.sync_file_range
_sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_sync_file_range.restype = ctypes.c_int

# <linux/fs.h>
BLKGETSIZE64 = 0x80081272  # _IOR(0x12, 114, size_t)
FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)
FITHAW = 0xC0045878  # _IOWR('X', 120, int)
FICLONE = 0x40049409  # _IOW(0x94, 9, int)
# <xfs/xfs_fs.h>: the v1 geometry is understood by every kernel and has what we read.
XFS_IOC_FSGEOMETRY_V1 = 0x80705864  # _IOR('X', 100, struct xfs_fsop_geom_v1) (112 bytes)

# <linux/stat.h>: struct statx is 256 bytes; stx_mask is its first u32, stx_mnt_id the u64 at 144.
AT_FDCWD = -100
STATX_MNT_ID = 0x1000
_STATX_SIZE = 256
_STX_MNT_ID_OFFSET = 144
SYNC_FILE_RANGE_ALL = 1 | 2 | 4  # WAIT_BEFORE | WRITE | WAIT_AFTER
UMOUNT_NOFOLLOW = 8
MNT_DETACH = 2


def _raise(path: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, os.strerror(err), path)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    rc = _mount(
        os.fsencode(source) if source is not None else None,
        os.fsencode(target),
        os.fsencode(fstype) if fstype is not None else None,
        flags,
        os.fsencode(data) if data else None,
    )
    if rc != 0:
        _raise(target)


def umount2(target: str, flags: int) -> None:
    if _umount2(os.fsencode(target), flags) != 0:
        _raise(target)


def sync_file_range(fd: int) -> None:
    """Write back the whole page cache of ``fd`` (no device flush, unlike fsync)."""
    if _sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_ALL) != 0:
        _raise(f"fd {fd}")


def block_device_size(fd: int) -> int:
    buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
    return int(struct.unpack("=Q", buf)[0])


def mount_id(path: str) -> int | None:
    """The id (as in /proc/self/mountinfo) of the mount ``path`` is on, symlinks followed.

    None when the kernel or libc cannot say (statx without STATX_MNT_ID: before Linux 5.8).
    """
    if _statx is None:
        return None
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    if _statx(AT_FDCWD, os.fsencode(path), 0, STATX_MNT_ID, buf) != 0:
        _raise(path)
    mask = struct.unpack_from("=I", buf.raw, 0)[0]
    if not mask & STATX_MNT_ID:
        return None
    return int(struct.unpack_from("=Q", buf.raw, _STX_MNT_ID_OFFSET)[0])
