"""Crashes and pauses at elastivol's named crash points, for the crash matrices.

A test server started through ``python -m tests.support.serve`` reads two variables and installs
the matching hook with :func:`elastivol.crashpoints.install`:

* ``ELASTIVOL_CRASH_AT=point,...``: the process kills itself with SIGKILL at once when it reaches
  one of the points, exactly as a node losing power would;
* ``ELASTIVOL_PAUSE_AT=point=seconds,...``: the point sleeps instead, so that a test can catch an
  operation in flight.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping

from elastivol import crashpoints

ENV = "ELASTIVOL_CRASH_AT"
PAUSE_ENV = "ELASTIVOL_PAUSE_AT"


def _pauses(spec: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in spec.split(","):
        name, _, seconds = item.partition("=")
        if name and seconds:
            out[name] = float(seconds)
    return out


def hook_from(env: Mapping[str, str]) -> Callable[[str], None] | None:
    """The hook the variables in ``env`` ask for; None when they ask for nothing."""
    armed = frozenset(p for p in env.get(ENV, "").split(",") if p)
    paused = _pauses(env.get(PAUSE_ENV, ""))
    if not armed and not paused:
        return None

    def at(name: str) -> None:
        if name in armed:
            os.kill(os.getpid(), signal.SIGKILL)
        pause = paused.get(name)
        if pause:
            time.sleep(pause)

    return at


def install_from_env() -> None:
    crashpoints.install(hook_from(os.environ))
