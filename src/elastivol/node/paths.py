"""Keep the paths a CO hands us (staging and target paths) inside the directories we serve.

A path is judged by where it really leads: symlinks in its existing part are resolved
first, so ``/var/lib/kubelet/x -> /etc`` cannot smuggle a mount onto /etc. The roots are
resolved on every check too, so a root that is itself a symlink (or appears later) works.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from elastivol.errors import FailedPrecondition, InvalidArgument, NotFound
from elastivol.node import mount

ROOT_FLAG = "--allowed-root"
# Linux's limits (linux/limits.h): a component is at most NAME_MAX bytes, and a whole path with
# its terminating NUL at most PATH_MAX bytes. Longer ones fail in the kernel with ENAMETOOLONG.
NAME_MAX = 255
PATH_MAX = 4096


class PathGuard:
    def __init__(self, allowed_roots: Sequence[str | os.PathLike[str]]) -> None:
        self.allowed_roots = [os.path.normpath(os.fspath(r)) for r in allowed_roots]
        for root in self.allowed_roots:
            if not os.path.isabs(root):
                raise InvalidArgument(f"allowed root {root!r} is not an absolute path ({ROOT_FLAG})")

    def _roots_text(self) -> str:
        return ", ".join(self.allowed_roots) if self.allowed_roots else "(none)"

    def check(
        self, path: str, *, must_exist: bool = False, field: str = "path", directory: bool = False,
        new_mount: bool = False,
    ) -> Path:
        """``path`` with symlinks resolved, if it lies strictly inside an allowed root.

        ``field`` names the request field in messages, so the caller knows what to fix;
        ``directory``: the path, where it exists, must be a directory (a staging path);
        ``new_mount``: a mount will be made there, so it must not lie inside another mount made
        below the root (a volume published there would be written into, and could not be
        unmounted while the new mount sits inside it).
        """
        if not path:
            raise InvalidArgument(f"{field} is empty")
        if "\0" in path:
            raise InvalidArgument(f"{field} {path!r} contains a NUL character")
        if not os.path.isabs(path):
            raise InvalidArgument(f"{field} {path!r} is not absolute")
        _check_lengths(path, field)
        # realpath resolves the longest existing prefix and keeps the rest (which cannot be
        # a symlink yet: it does not exist). The mount layer guards the last step.
        resolved = os.path.realpath(path)
        _check_lengths(resolved, field)
        for root in self.allowed_roots:
            for base in {root, os.path.realpath(root)}:
                if resolved.startswith(base.rstrip("/") + "/") and resolved != base:
                    if must_exist and not os.path.lexists(resolved):
                        raise NotFound(f"{field} {path} does not exist")
                    _check_parents(resolved, base, field)
                    if directory and os.path.lexists(resolved) and not os.path.isdir(resolved):
                        raise InvalidArgument(f"{field} {path} exists and is not a directory; it must be one")
                    if new_mount:
                        _check_not_inside_a_mount(resolved, base, field)
                    return Path(resolved)
        shown = path if resolved == path else f"{path} (which resolves to {resolved})"
        raise InvalidArgument(
            f"{field} {shown} is outside the allowed roots ({self._roots_text()}); "
            f"add its directory with {ROOT_FLAG} to allow it"
        )


def _check_lengths(path: str, field: str) -> None:
    """Refuse what the kernel would refuse with ENAMETOOLONG, before any syscall sees it."""
    raw = os.fsencode(path)
    if len(raw) >= PATH_MAX:
        raise InvalidArgument(
            f"{field} is {len(raw)} bytes long; Linux paths are shorter than PATH_MAX ({PATH_MAX} bytes): "
            "use a shorter path"
        )
    for part in raw.split(b"/"):
        if len(part) > NAME_MAX:
            shown = os.fsdecode(part[:40])
            raise InvalidArgument(
                f"{field} has a component of {len(part)} bytes ({shown!r}...); Linux allows at most "
                f"NAME_MAX ({NAME_MAX}) bytes per component: use shorter names"
            )


def _check_not_inside_a_mount(resolved: str, base: str, field: str) -> None:
    inner = base.rstrip("/") + "/"
    table = mount.mounts()
    by_id = {m.mount_id: m for m in table}
    for m in table:
        if m.target.startswith(inner) and resolved.startswith(m.target + "/") and not _bound_in_place(m, by_id):
            raise FailedPrecondition(
                f"{field} {resolved} is inside {m.target}, where a volume is mounted: a mount there would "
                "write into that volume and pin it; use a path outside it"
            )


def _bound_in_place(m: mount.MountInfo, by_id: dict[int, mount.MountInfo]) -> bool:
    """``m`` shows the very directory its parent mount shows at that path (a kubelet directory
    bound onto itself to make it shared, as pods and tests do): the host's own tree, not a volume.
    A file volume is a bind too, but of another directory, so its root differs."""
    parent = by_id.get(m.parent_id)
    if parent is None or parent.major_minor != m.major_minor:
        return False
    below = os.path.relpath(m.target, parent.target)
    if below.startswith(".."):
        return False
    return os.path.normpath(os.path.join(parent.root, below)) == os.path.normpath(m.root)


def _check_parents(resolved: str, base: str, field: str) -> None:
    """The existing ancestors of ``resolved`` below ``base`` must be directories: a file in the way
    would fail later with ENOTDIR, after a mount or a record may already have been made."""
    parent = os.path.dirname(resolved)
    while len(parent) > len(base):
        if os.path.lexists(parent):
            if not os.path.isdir(parent):
                raise InvalidArgument(f"{field}: {parent} is not a directory, so nothing can be made below it")
            return
        parent = os.path.dirname(parent)


def require_directory_target(target: str, why: str) -> None:
    """A publish target may be absent (it is made) or a directory; anything else is the caller's mistake."""
    if os.path.lexists(target) and not os.path.isdir(target):
        raise InvalidArgument(f"target_path {target} is not a directory: {why}")
