"""Copying volume images: reflink when the filesystem can, a sparse copy when it cannot.

Every write lands under a temporary name and is renamed into place only after an fsync
(then the directory is fsynced), so a crash leaves either no file or a whole one under the
final name, never half an image.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable

from elastivol.errors import FailedPrecondition, Internal, NotFound
from elastivol.node import _sys

PARTIAL_SUFFIX = ".partial"
# Errors meaning "this filesystem (pair) cannot reflink", as opposed to a real failure.
_NO_REFLINK = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS})
_PROGRESS_EVERY = 0.5  # seconds
_CHUNK = 64 << 20  # bytes per copy_file_range call: progress and signals stay responsive

Progress = Callable[[int, int], None]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, making a rename or create in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def allocated_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes the file really occupies (holes and shared extents aside)."""
    return os.stat(path).st_blocks * 512


def scratch_file(directory: str | os.PathLike[str], prefix: str, suffix: str = "") -> tuple[int, str]:
    """A new file of a name nobody else has in ``directory``, opened for reading and writing (mode 0600).

    What tempfile.mkstemp does, without tempfile: it brings shutil, random and the compression
    modules with it (~0.7 MiB resident in every node plugin) for the one call made here.
    """
    for _ in range(100):
        path = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused scratch name in {directory} after 100 tries")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` all at once, durably."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = scratch_file(directory, f".{os.path.basename(path)}.", ".tmp")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def _reflink(src_fd: int, dst_fd: int) -> bool:
    try:
        fcntl.ioctl(dst_fd, _sys.FICLONE, src_fd)
    except OSError as exc:
        if exc.errno in _NO_REFLINK:
            return False
        raise
    return True


def reflink_supported(directory: str | os.PathLike[str]) -> bool:
    """Whether files in ``directory`` can be cloned (FICLONE), tried on two scratch files."""
    src_fd, src = scratch_file(directory, ".reflink-probe-")
    dst_fd, dst = scratch_file(directory, ".reflink-probe-")
    try:
        # A whole block of data: cloning an empty file proves nothing on some filesystems.
        os.write(src_fd, b"\xa5" * 4096)
        return _reflink(src_fd, dst_fd)
    finally:
        for fd, name in ((src_fd, src), (dst_fd, dst)):
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)


def _sparse_copy(src_fd: int, dst_fd: int, size: int, progress: Progress | None) -> None:
    """Copy the data extents only (SEEK_DATA/SEEK_HOLE), so holes stay holes."""
    os.ftruncate(dst_fd, size)
    last_report = time.monotonic()
    pos = 0
    while pos < size:
        try:
            start = os.lseek(src_fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from pos to the end
                break
            raise
        end = min(os.lseek(src_fd, start, os.SEEK_HOLE), size)
        offset = start
        while offset < end:
            copied = os.copy_file_range(src_fd, dst_fd, min(_CHUNK, end - offset), offset, offset)
            if copied == 0:
                # The source shrank under us: the copy would not be the file it claims to be.
                raise Internal(f"the source changed size while being copied (at offset {offset})")
            offset += copied
            if progress is not None and time.monotonic() - last_report >= _PROGRESS_EVERY:
                progress(offset, size)
                last_report = time.monotonic()
        pos = end
    if progress is not None:
        progress(size, size)


def clone_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    allow_fallback: bool = True,
    progress: Progress | None = None,
    durable: bool = True,
) -> str:
    """Copy ``src`` to ``dst``; returns "reflink" or "copy" (the sparse fallback).

    ``durable=False`` leaves out the fsyncs of ``dst`` and its directory: the caller makes the copy
    durable later (:func:`make_durable`), outside a window that must stay short (a freeze).
    """
    src, dst = os.fspath(src), os.fspath(dst)
    partial = dst + PARTIAL_SUFFIX
    try:
        src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"{src} does not exist") from None
    try:
        st = os.fstat(src_fd)
        # O_TRUNC: a .partial left by a crash is ours to overwrite.
        dst_fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if _reflink(src_fd, dst_fd):
                method = "reflink"
                if progress is not None:
                    progress(st.st_size, st.st_size)
            elif allow_fallback:
                method = "copy"
                _sparse_copy(src_fd, dst_fd, st.st_size, progress)
            else:
                raise FailedPrecondition(
                    f"cannot reflink {src} to {dst}: the filesystem has no reflink (or they are on different "
                    "filesystems), and a full copy was not allowed"
                )
            os.fchmod(dst_fd, st.st_mode & 0o7777)
            if durable:
                os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
        os.replace(partial, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    finally:
        os.close(src_fd)
    if durable:
        fsync_dir(os.path.dirname(os.path.abspath(dst)))
    return method


def make_durable(paths: list[str]) -> None:
    """fsync files copied with ``clone_file(durable=False)``, then their directories."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for directory in sorted({os.path.dirname(os.path.abspath(p)) for p in paths}):
        fsync_dir(directory)
