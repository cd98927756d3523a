"""Polling with backoff and a deadline, for the states AWS reaches asynchronously."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from elastivol.errors import ElastivolError, Unavailable
from elastivol.providers.aws.settings import AwsSettings

T = TypeVar("T")


def poll(
    check: Callable[[], T | None],
    settings: AwsSettings,
    *,
    timeout: float,
    on_timeout: Callable[[], ElastivolError],
) -> T:
    """Call ``check`` until it returns a value; back off 1.5x with jitter from ``settings.poll_initial``
    up to ``settings.poll_max``; give up at ``timeout``.

    ``check`` raises to stop at once. An ``Unavailable`` from it (a throttled or unreachable API)
    does not stop the wait: the state is asked again at the next poll, until the deadline.
    """
    deadline = time.monotonic() + timeout
    delay = settings.poll_initial
    while True:
        try:
            found = check()
        except Unavailable:
            if time.monotonic() >= deadline:
                raise
            found = None
        if found is not None:
            return found
        now = time.monotonic()
        if now >= deadline:
            raise on_timeout()
        time.sleep(min(delay * random.uniform(0.8, 1.2), max(deadline - now, 0.0)))
        delay = min(delay * 1.5, settings.poll_max)
