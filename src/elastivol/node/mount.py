"""Mounts through mount(2)/umount2(2), and the mount table from /proc/self/mountinfo.

Targets are opened with ``O_PATH|O_NOFOLLOW`` and mounted on as ``/proc/self/fd/N``: the
kernel then mounts onto exactly the inode we checked, so a symlink swapped in at the target
after the caller's checks cannot redirect the mount elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from elastivol.errors import (
    ElastivolError,
    FailedPrecondition,
    Internal,
    InUse,
    InvalidArgument,
    NotFound,
)
from elastivol.node import _sys

log = logging.getLogger("elastivol.node.mount")

MOUNTINFO = "/proc/self/mountinfo"

# <linux/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

# word -> (flags it sets, flags it clears); the last word about a flag wins, as in mount(8).
# Most flags come as a pair of words, one setting it and one clearing it: (sets, clears, flag).
_FLAG_PAIRS = (
    ("ro", "rw", MS_RDONLY),
    ("nosuid", "suid", MS_NOSUID),
    ("nodev", "dev", MS_NODEV),
    ("noexec", "exec", MS_NOEXEC),
    ("sync", "async", MS_SYNCHRONOUS),
    ("noatime", "atime", MS_NOATIME),
    ("nodiratime", "diratime", MS_NODIRATIME),
    ("lazytime", "nolazytime", MS_LAZYTIME),
    ("mand", "nomand", MS_MANDLOCK),
)
_FLAG_WORDS: dict[str, tuple[int, int]] = {
    **{on: (flag, 0) for on, _off, flag in _FLAG_PAIRS},
    **{off: (0, flag) for _on, off, flag in _FLAG_PAIRS},
    # relatime and strictatime exclude each other: choosing one clears the other.
    "relatime": (MS_RELATIME, MS_STRICTATIME),
    "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, MS_RELATIME),
    "nostrictatime": (0, MS_STRICTATIME),
    "dirsync": (MS_DIRSYNC, 0),
    "remount": (MS_REMOUNT, 0),
}
# Words that widen what a volume's content can do to the host (setuid binaries, device
# nodes, executables on a mount that the defaults made noexec): a policy of the caller.
PRIVILEGED_WORDS = frozenset({"suid", "dev", "exec"})
# What every volume mount gets unless its own options say otherwise (they come after these, and
# the last word about a flag wins): a volume's content must not carry setuid programs or device
# nodes onto the host. Only a node started with --allow-privileged-mount-options admits "suid"
# or "dev" in a volume's options at all.
SAFE_DEFAULTS = ("nosuid", "nodev")


def volume_options(options: Sequence[str], *, device_node: bool = False) -> list[str]:
    """``options`` with the safe defaults in front. A raw block volume's publication is a bind of
    the device node itself, which ``nodev`` would make unusable, so it gets ``nosuid`` only."""
    defaults = ("nosuid",) if device_node else SAFE_DEFAULTS
    return [*defaults, *options]


# The per-mount flags a bind remount can set (others belong to the superblock).
_BIND_FLAGS = (
    MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME
)
# statvfs f_flag bits that keep their MS_* meaning, to carry over locked flags on remount.
_ST_TO_MS = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME


@dataclass(frozen=True)
class MountInfo:
    """One line of /proc/self/mountinfo (see proc(5))."""

    mount_id: int
    parent_id: int
    major_minor: str
    root: str
    target: str
    options: str  # per-mount options (ro/rw, nosuid, ...)
    optional: tuple[str, ...]  # shared:N, master:N, ...
    fstype: str
    source: str
    super_options: str  # the filesystem's own options

    @property
    def read_only(self) -> bool:
        return "ro" in self.options.split(",")


_OCTAL = re.compile(rb"\\([0-7]{3})")


def _unescape(field: bytes) -> str:
    # The kernel writes space, tab, newline and backslash as \ooo.
    if b"\\" in field:
        field = _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), field)
    return os.fsdecode(field)


def _parse_line(line: bytes) -> MountInfo:
    fields = line.split(b" ")
    sep = fields.index(b"-", 6)
    return MountInfo(
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        major_minor=fields[2].decode(),
        root=_unescape(fields[3]),
        target=_unescape(fields[4]),
        options=fields[5].decode(),
        optional=tuple(f.decode() for f in fields[6:sep]),
        fstype=_unescape(fields[sep + 1]),
        source=_unescape(fields[sep + 2]),
        super_options=_unescape(fields[sep + 3]) if len(fields) > sep + 3 else "",
    )


def parse_mountinfo(data: bytes) -> list[MountInfo]:
    # Only "\n" ends a line: the kernel escapes it in paths but not "\r", which splitlines()
    # would also split on, so one path with a carriage return would break every read.
    return [_parse_line(line) for line in data.split(b"\n") if line]


def mounts() -> list[MountInfo]:
    """The mount table of this process's namespace, in kernel order (parents first)."""
    with open(MOUNTINFO, "rb") as fh:
        return parse_mountinfo(fh.read())


def _top(candidates: list[MountInfo]) -> MountInfo | None:
    if not candidates:
        return None
    # A mount stacked on the same target has the one below as its parent.
    parents = {m.parent_id for m in candidates}
    tops = [m for m in candidates if m.mount_id not in parents]
    return (tops or candidates)[-1]


def refuse_covering(target: str, table: Sequence[MountInfo] | None = None) -> None:
    """Refuse a new mount at ``target`` while mounts exist below it: it would hide them, and
    unmounting it later fails with EBUSY, so the volume could never be unpublished cleanly."""
    prefix = target.rstrip("/") + "/"
    below = sorted(m.target for m in (mounts() if table is None else table) if m.target.startswith(prefix))
    if below:
        shown = ", ".join(below[:3]) + (f" and {len(below) - 3} more" if len(below) > 3 else "")
        raise FailedPrecondition(
            f"target_path {target} has mounts below it ({shown}): publish somewhere else, or unpublish those first"
        )


def find_by_target(
    path: str | os.PathLike[str], table: Sequence[MountInfo] | None = None
) -> MountInfo | None:
    """The top-most mount at ``path`` (tried as given, then with symlinks resolved).

    ``table`` lets a caller answer several questions from one read of the mount table.
    """
    if table is None:
        table = mounts()
    plain = os.path.normpath(os.path.abspath(path))
    by_id = _by_mount_id(plain, table)
    if by_id is not _UNKNOWN:
        return by_id
    found = _top([m for m in table if m.target == plain])
    if found is None:
        real = os.path.realpath(plain)
        if real != plain:
            found = _top([m for m in table if m.target == real])
    return found


_UNKNOWN = MountInfo(-1, -1, "", "", "", "", (), "", "", "")


def _by_mount_id(path: str, table: Sequence[MountInfo]) -> MountInfo | None:
    """The top mount at ``path`` found by mount id (statx), not by the target text mountinfo prints
    (escaped, and relative to this process's root); ``_UNKNOWN`` when the kernel cannot tell.

    A path is a mount's root exactly when its mount differs from its parent directory's.
    """
    real = os.path.realpath(path)
    try:
        here = _sys.mount_id(real)
        above = _sys.mount_id(os.path.dirname(real)) if real != "/" else None
    except OSError:
        return _UNKNOWN  # no such path (the text may still name a mount), or not ours to stat
    if here is None:
        return _UNKNOWN
    if here == above:
        return None
    return next((m for m in table if m.mount_id == here), _UNKNOWN)


def find_by_source(device: str) -> list[MountInfo]:
    """Mounts of the filesystem on ``device`` (by device number, so any alias of it matches)."""
    try:
        st = os.stat(device)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISBLK(st.st_mode):
        wanted = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        return [m for m in mounts() if m.major_minor == wanted]
    return [m for m in mounts() if m.source == device]


def is_mountpoint(path: str | os.PathLike[str]) -> bool:
    return find_by_target(path) is not None


# -- options -----------------------------------------------------------------------------------
def _check_word(word: str, allow_privileged: bool) -> None:
    if not word:
        raise InvalidArgument("mount options must not contain an empty option")
    bad = next((c for c in word if c == "," or c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        # A ',' would smuggle further options into the data string; NUL or control
        # characters would cut or disguise it.
        raise InvalidArgument(f"mount option {word!r} contains {bad!r}; give each option as its own word")
    if not allow_privileged and word.lower() in PRIVILEGED_WORDS:
        raise InvalidArgument(
            f"mount option {word!r} is not allowed: it lets the volume's content act on the host; "
            "start the node plugin with --allow-privileged-mount-options to permit it"
        )


def parse_options(options: Sequence[str], *, allow_privileged: bool = False) -> tuple[int, str]:
    """Map option words to (MS_* flags, data string for the filesystem)."""
    if isinstance(options, str):
        raise InvalidArgument("mount options must be a list of words, not one string")
    flags = 0
    data: list[str] = []
    for word in options:
        _check_word(word, allow_privileged)
        change = _FLAG_WORDS.get(word)
        if change is None:
            data.append(word)
        else:
            flags = (flags | change[0]) & ~change[1]
    return flags, ",".join(data)


# -- mounting ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _open_target(target: str) -> Iterator[str]:
    """``target`` opened O_PATH|O_NOFOLLOW, as the /proc/self/fd path to mount on."""
    try:
        fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"mount target {target} does not exist") from None
    except OSError as exc:
        raise Internal(f"cannot open mount target {target}: {exc.strerror}") from exc
    try:
        # O_PATH|O_NOFOLLOW opens a symlink itself instead of failing, so look.
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise InvalidArgument(f"mount target {target} is a symbolic link; give the real path")
        # The fd keeps the target busy: it must be closed before any unmount of it.
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


@contextlib.contextmanager
def _open_source(source: str) -> Iterator[str]:
    try:
        fd = os.open(source, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"bind source {source} does not exist") from None
    except OSError as exc:
        raise Internal(f"cannot open bind source {source}: {exc.strerror}") from exc
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _mount_error(exc: OSError, what: str) -> ElastivolError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFound(f"{what} failed: {reason}")
    if exc.errno == errno.EBUSY:
        return FailedPrecondition(f"{what} failed: {reason} (already mounted, or the device is in use)")
    if exc.errno in (errno.EACCES, errno.EROFS):
        return FailedPrecondition(f"{what} failed: {reason} (the device is read-only: mount it with ro)")
    if exc.errno == errno.ENODEV:
        return FailedPrecondition(f"{what} failed: the kernel does not support this filesystem type")
    if exc.errno == errno.EINVAL:
        return InvalidArgument(
            f"{what} failed: {reason} (wrong fs type, bad option or bad superblock; see dmesg)"
        )
    return Internal(f"{what} failed: {reason}")


def mount(
    source: str,
    target: str,
    fstype: str,
    options: Sequence[str] = (),
    *,
    allow_privileged: bool = True,
) -> None:
    """mount(2) ``source`` (a device, or a name like "tmpfs") on the directory ``target``.

    Privileged words are allowed by default here: the policy belongs to whoever accepted the
    options from a user (see :func:`parse_options`); the syntax checks always apply.
    """
    flags, data = parse_options(options, allow_privileged=allow_privileged)
    what = f"mount {source} on {target} ({fstype}{', ' + ','.join(options) if options else ''})"
    with _open_target(target) as fd_path:
        try:
            _sys.mount(source, fd_path, fstype, flags, data)
        except OSError as exc:
            raise _mount_error(exc, what) from None
    log.debug("%s", what)


def _remount_bind(target: str, flags: int, what: str) -> None:
    # Opened again: the fd used for the bind still points at the directory *under* the new
    # mount, and a remount needs the mount's own root.
    with _open_target(target) as fd_path:
        # A remount replaces all per-mount flags; keep those the source had (nosuid, ...).
        kept = os.statvfs(fd_path).f_flag & _ST_TO_MS
        try:
            _sys.mount(None, fd_path, None, MS_REMOUNT | MS_BIND | kept | flags, None)
        except OSError as exc:
            raise _mount_error(exc, what) from None


def bind(source: str, target: str, *, readonly: bool = False, options: Sequence[str] = ()) -> None:
    """Bind ``source`` (a directory, or a device node onto a file) at ``target``.

    Only per-mount words of ``options`` apply (ro, nosuid, nodev, noexec, atime words); a
    bind has no filesystem data options. Read-only takes a second step (bind, then remount
    read-only); if that step fails the bind is undone so no writable mount stays behind.
    """
    flags, _data = parse_options(options, allow_privileged=True)
    flags &= _BIND_FLAGS
    if readonly:
        flags |= MS_RDONLY
    what = f"bind {source} on {target}{' read-only' if readonly else ''}"
    with _open_source(source) as src, _open_target(target) as dst:
        try:
            _sys.mount(src, dst, None, MS_BIND, None)
        except OSError as exc:
            raise _mount_error(exc, what) from None
    if flags:
        try:
            _remount_bind(target, flags, what)
        except ElastivolError:
            with contextlib.suppress(OSError):
                _sys.umount2(target, _sys.MNT_DETACH | _sys.UMOUNT_NOFOLLOW)
            raise
    log.debug("%s", what)


def unmount(target: str) -> bool:
    """Unmount the top-most mount at ``target``; False when nothing is mounted there."""
    try:
        _sys.umount2(target, _sys.UMOUNT_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
            return False
        if exc.errno == errno.EBUSY:
            raise InUse(f"cannot unmount {target}: it is busy (a process still uses files on it)") from None
        raise Internal(f"cannot unmount {target}: {exc.strerror}") from exc
    log.debug("unmounted %s", target)
    return True


_MAX_STACK = 64


def unmount_all(target: str) -> int:
    """Unmount every mount stacked at ``target``; returns how many there were."""
    count = 0
    while count < _MAX_STACK and unmount(target):
        count += 1
    return count
