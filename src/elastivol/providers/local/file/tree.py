"""Directory trees inside a file system root, handled through directory file descriptors.

Everything below the root is reached one component at a time with ``O_NOFOLLOW``, relative to
the parent's descriptor. Pods write inside access points, and a pod that swaps a directory for a
symbolic link (to ``/`` or ``/etc``) must never make the controller chown, delete or bind-mount
something outside the file system: with descriptor-relative calls there is no path to re-resolve,
so there is no window for such a swap.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from elastivol.errors import FailedPrecondition, InvalidArgument

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FICLONE = 0x40049409  # _IOW(0x94, 9, int): share the source file's extents (copy-on-write)


def components(relative: str) -> list[str]:
    """The components of a path inside the root; refuses anything that could leave it."""
    if "\x00" in relative:
        raise InvalidArgument(f"path {relative!r} contains a NUL byte")
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FailedPrecondition(f"path {relative!r} contains '..'; refusing to leave the file system root")
    return parts


def fd_path(fd: int) -> str:
    """A path that names exactly the directory behind ``fd``, for tools that only take paths.

    ``/proc/<pid>/fd/N`` is resolved by the kernel to the open directory itself, so a child
    process (btrfs, mount) acts on what we opened, even if the tree was renamed meanwhile.
    """
    return f"/proc/{os.getpid()}/fd/{fd}"


def open_root(root: str) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FailedPrecondition(
            f"file system root {root} does not exist on this host: every node must see the file system at the "
            "same path (mount the shared filesystem there, or register the right --root)"
        ) from None
    except NotADirectoryError:
        raise FailedPrecondition(f"file system root {root} is not a directory") from None


def _step(parent: int, name: str, shown: str) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        # With O_DIRECTORY the kernel reports a link as ENOTDIR: look, to say which it is.
        if exc.errno == errno.ELOOP or stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            raise FailedPrecondition(
                f"{shown} is a symbolic link; elastivol never follows links inside a file system root"
            ) from None
        raise FailedPrecondition(f"{shown} is not a directory") from None


@contextlib.contextmanager
def opened(
    root: str,
    relative: str,
    *,
    create: bool = False,
    parents_mode: int = 0o755,
) -> Iterator[int]:
    """A descriptor of ``root/relative``, every component checked not to be a link.

    With ``create``, missing components are made (root-owned, ``parents_mode``). Raises
    FileNotFoundError (with the missing path) when a component is missing and ``create`` is off.
    """
    parts = components(relative)
    fd = open_root(root)
    try:
        walked = root.rstrip("/")
        for name in parts:
            walked = f"{walked}/{name}"
            try:
                child = _step(fd, name, walked)
            except FileNotFoundError:
                if not create:
                    raise FileNotFoundError(errno.ENOENT, "no such directory", walked) from None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, parents_mode, dir_fd=fd)
                child = _step(fd, name, walked)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def exists(root: str, relative: str) -> bool:
    try:
        with opened(root, relative):
            return True
    except FileNotFoundError:
        return False


def set_owner_mode(fd: int, uid: int, gid: int, mode: int) -> None:
    # chown first: it clears set-id bits, which the requested mode may want (e.g. 2770).
    os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)


def remove_entry(parent: int, name: str) -> None:
    """Remove ``name`` under ``parent`` and everything below it, without following links.

    ``shutil.rmtree`` with ``dir_fd`` uses descriptor-relative calls throughout (and removes
    nested btrfs subvolumes, which root may rmdir like directories).
    """
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)


@dataclass
class CopyStats:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    full_copies: int = 0  # files that could not be reflinked and were copied byte by byte


def _clone_data(src: int, dst: int, size: int, stats: CopyStats) -> None:
    try:
        fcntl.ioctl(dst, FICLONE, src)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
            raise
    # Not cloneable (another filesystem, an inline extent...): copy, still in the kernel.
    stats.full_copies += 1
    offset = 0
    while offset < size:
        done = os.copy_file_range(src, dst, size - offset, offset, offset)
        if done == 0:
            break
        offset += done


def _copy_xattrs(name: str, src_dir: int, dst_dir: int, *, is_link: bool) -> None:
    # ACLs and capabilities live in xattrs; best effort, as not every filesystem has them.
    src = f"{fd_path(src_dir)}/{name}"
    dst = f"{fd_path(dst_dir)}/{name}"
    try:
        keys = os.listxattr(src, follow_symlinks=not is_link)
    except OSError:
        return
    for key in keys:
        with contextlib.suppress(OSError):
            os.setxattr(dst, key, os.getxattr(src, key, follow_symlinks=not is_link), follow_symlinks=not is_link)


def _meta(st: os.stat_result, name: str, dst_dir: int, *, is_link: bool = False) -> None:
    os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_dir, follow_symlinks=False)
    if not is_link:
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dst_dir)
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_dir, follow_symlinks=False)


def _open_parts(root: int, parts: tuple[str, ...]) -> int:
    fd = os.dup(root)
    try:
        for name in parts:
            child = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def clone_tree(src_root: int, dst_root: int) -> CopyStats:
    """Copy the contents of ``src_root`` into the (empty) directory ``dst_root``.

    File data is reflinked (O(1) per file on btrfs and XFS), and owners, modes, times, xattrs,
    symlinks, device nodes, FIFOs and hard links are kept, as are the top directory's own owner,
    mode and times. The walk keeps paths, not descriptors, on its stack (a wide tree must not
    exhaust the descriptor limit) and re-opens each directory component by component without
    following links, as the source may be changing under a running pod.
    """
    stats = CopyStats()
    links: dict[tuple[int, int], str] = {}
    stack: list[tuple[str, ...]] = [()]
    finish: list[tuple[str, os.stat_result]] = []
    while stack:
        parts = stack.pop()
        sfd = _open_parts(src_root, parts)
        try:
            dfd = _open_parts(dst_root, parts)
            try:
                _copy_entries(sfd, dfd, parts, dst_root, stats, links, stack, finish)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)
    # Directories last, deepest first: adding entries to them changed their times again.
    for rel, st in reversed(finish):
        _meta(st, rel, dst_root)
    top = os.fstat(src_root)
    os.fchown(dst_root, top.st_uid, top.st_gid)
    os.fchmod(dst_root, stat.S_IMODE(top.st_mode))
    os.utime(dst_root, ns=(top.st_atime_ns, top.st_mtime_ns))
    return stats


def _copy_entries(
    sfd: int,
    dfd: int,
    parts: tuple[str, ...],
    dst_root: int,
    stats: CopyStats,
    links: dict[tuple[int, int], str],
    stack: list[tuple[str, ...]],
    finish: list[tuple[str, os.stat_result]],
) -> None:
    prefix = "".join(f"{p}/" for p in parts)
    with os.scandir(sfd) as entries:
        names = [e.name for e in entries]
    for name in names:
        try:
            st = os.stat(name, dir_fd=sfd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed by the pod while we copied: the copy is per file, not atomic
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=dfd)
            _copy_xattrs(name, sfd, dfd, is_link=False)
            stats.dirs += 1
            stack.append((*parts, name))
            finish.append((prefix + name, st))
        elif stat.S_ISREG(mode) and st.st_nlink > 1 and (st.st_dev, st.st_ino) in links:
            os.link(links[(st.st_dev, st.st_ino)], prefix + name, src_dir_fd=dst_root, dst_dir_fd=dst_root,
                    follow_symlinks=False)
        elif stat.S_ISREG(mode):
            _copy_file(name, sfd, dfd, st, stats)
            if st.st_nlink > 1:
                links[(st.st_dev, st.st_ino)] = prefix + name
            _copy_xattrs(name, sfd, dfd, is_link=False)
            _meta(st, name, dfd)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=sfd), name, dir_fd=dfd)
            _meta(st, name, dfd, is_link=True)
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(name, mode, st.st_rdev, dir_fd=dfd)
            _meta(st, name, dfd)
        # Sockets belong to a running process; a copy of one means nothing, so they are skipped.


def _copy_file(name: str, sfd: int, dfd: int, st: os.stat_result, stats: CopyStats) -> None:
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
    try:
        dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            _clone_data(src, dst, os.fstat(src).st_size, stats)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    stats.files += 1
    stats.bytes += st.st_size
