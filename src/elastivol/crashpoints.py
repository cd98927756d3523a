"""Named crash points for fault-injection tests.

Production code calls :func:`hit` between the steps of a multi-step operation. Nothing
happens unless the test-only environment variable ``ELASTIVOL_CRASH_AT`` names that point,
in which case the process kills itself with SIGKILL at once, exactly as a node losing power
would. ``ELASTIVOL_PAUSE_AT=point=seconds,...`` makes a point sleep instead, so tests can
catch an operation in flight. The variables are read once at import, so a disabled point
costs one set lookup.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "ELASTIVOL_CRASH_AT"
PAUSE_ENV = "ELASTIVOL_PAUSE_AT"
_armed: frozenset[str] = frozenset(p for p in os.environ.get(ENV, "").split(",") if p)


def _pauses(spec: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in spec.split(","):
        name, _, seconds = item.partition("=")
        if name and seconds:
            out[name] = float(seconds)
    return out


_paused: dict[str, float] = _pauses(os.environ.get(PAUSE_ENV, ""))
_any = bool(_armed or _paused)

# Every point the code can hit, so the crash matrix can iterate over all of them.
KNOWN: set[str] = set()


def register(*names: str) -> None:
    KNOWN.update(names)


def hit(name: str) -> None:
    if not _any:
        return
    if name in _armed:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = _paused.get(name)
    if pause:
        time.sleep(pause)
