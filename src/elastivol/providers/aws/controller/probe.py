"""The controller's Probe on aws: one cheap API call whose answer is kept for a while, so that a
liveness probe every few seconds does not become a stream of AWS calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from elastivol.domain import Health
from elastivol.errors import ElastivolError, PermissionDenied, Unauthenticated

FAILURE_TTL = 5.0  # a failed check is retried sooner than a good one is repeated


class CachedProbe:
    def __init__(self, ttl: float, what: str, *, fatal: tuple[type[ElastivolError], ...] = ()) -> None:
        """``what`` completes "the controller cannot manage ..."; ``fatal`` adds error kinds that, like
        credential and permission problems, fail the Probe with their message instead of "not ready"."""
        self.ttl = ttl
        self.prefix = f"the controller cannot manage {what}: "
        self.fatal: tuple[type[ElastivolError], ...] = (Unauthenticated, PermissionDenied, *fatal)
        self._lock = threading.Lock()
        self._cached: tuple[float, Health | ElastivolError] | None = None

    def __call__(self, check: Callable[[], Health | ElastivolError]) -> Health:
        now = time.monotonic()
        with self._lock:
            cached = self._cached
        if cached is not None and now < cached[0]:
            return self._answer(cached[1])
        result = check()
        ttl = self.ttl if isinstance(result, Health) else min(FAILURE_TTL, self.ttl)
        with self._lock:
            self._cached = (now + ttl, result)
        return self._answer(result)

    def _answer(self, result: Health | ElastivolError) -> Health:
        if isinstance(result, Health):
            return result
        for kind in self.fatal:
            if isinstance(result, kind):
                raise kind(self.prefix + result.message)
        return Health(False, result.message)
