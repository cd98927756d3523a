"""Keep the paths a CO hands us (staging and target paths) inside the directories we serve.

A path is judged by where it really leads: symlinks in its existing part are resolved
first, so ``/var/lib/kubelet/x -> /etc`` cannot smuggle a mount onto /etc. The roots are
resolved on every check too, so a root that is itself a symlink (or appears later) works.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from elastivol.errors import InvalidArgument, NotFound

ROOT_FLAG = "--allowed-root"


class PathGuard:
    def __init__(self, allowed_roots: Sequence[str | os.PathLike[str]]) -> None:
        self.allowed_roots = [os.path.normpath(os.fspath(r)) for r in allowed_roots]
        for root in self.allowed_roots:
            if not os.path.isabs(root):
                raise InvalidArgument(f"allowed root {root!r} is not an absolute path ({ROOT_FLAG})")

    def _roots_text(self) -> str:
        return ", ".join(self.allowed_roots) if self.allowed_roots else "(none)"

    def check(self, path: str, *, must_exist: bool = False) -> Path:
        """``path`` with symlinks resolved, if it lies strictly inside an allowed root."""
        if not path:
            raise InvalidArgument("the path is empty")
        if "\0" in path:
            raise InvalidArgument(f"path {path!r} contains a NUL character")
        if not os.path.isabs(path):
            raise InvalidArgument(f"path {path!r} is not absolute")
        # realpath resolves the longest existing prefix and keeps the rest (which cannot be
        # a symlink yet: it does not exist). The mount layer guards the last step.
        resolved = os.path.realpath(path)
        for root in self.allowed_roots:
            for base in {root, os.path.realpath(root)}:
                if resolved.startswith(base.rstrip("/") + "/") and resolved != base:
                    if must_exist and not os.path.lexists(resolved):
                        raise NotFound(f"path {path} does not exist")
                    return Path(resolved)
        shown = path if resolved == path else f"{path} (which resolves to {resolved})"
        raise InvalidArgument(
            f"path {shown} is outside the allowed roots ({self._roots_text()}); "
            f"add its directory with {ROOT_FLAG} to allow it"
        )
