"""Named points between the steps of multi-step operations.

Code calls :func:`hit` where a crash would leave a distinct shape on disk or in AWS (an image
without its record, a record still ``creating``...), and :func:`register` names every such point,
so that recovery can be checked against each of them. A fault-injection harness installs a hook
(the test support package's kills or pauses the process there); without one, a point costs one
comparison and nothing here reads the environment.
"""

from __future__ import annotations

from collections.abc import Callable

# Every point the code can hit, so a crash matrix can iterate over all of them.
KNOWN: set[str] = set()

_hook: Callable[[str], None] | None = None


def register(*names: str) -> None:
    KNOWN.update(names)


def install(hook: Callable[[str], None] | None) -> None:
    """Call ``hook(name)`` at every point from now on (None: nothing happens at a point)."""
    global _hook
    _hook = hook


def hit(name: str) -> None:
    if _hook is not None:
        _hook(name)
