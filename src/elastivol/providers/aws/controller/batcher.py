"""Coalesces concurrent "describe one object" requests into one API call per interval.

A hundred CreateVolume calls that each wait for their volume to become ``available`` would
otherwise make a hundred DescribeVolumes calls per poll and trip EC2's request limits. Here a
waiter registers the id it wants and blocks; one flusher thread sends at most one call per
``interval`` (split in chunks of ``max_batch`` ids, EC2 takes 500 ids at most per call) and hands
each waiter its own object, or ``None`` when the object does not exist.

With batching disabled every request is its own call, which the benchmark compares against.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

from elastivol.errors import Unavailable

V = TypeVar("V")
Fetch = Callable[[list[str]], Mapping[str, V]]


class Batcher(Generic[V]):
    def __init__(self, name: str, fetch: Fetch[V], *, interval: float, max_batch: int = 500,
                 enabled: bool = True) -> None:
        self.name = name
        self.fetch = fetch
        self.interval = interval
        self.max_batch = max_batch
        self.enabled = enabled
        self._cond = threading.Condition()
        self._pending: dict[str, list[Future[V | None]]] = {}
        self._last_flush = float("-inf")
        self._thread: threading.Thread | None = None
        self.calls = 0  # fetch calls made, for tests

    def get(self, key: str, timeout: float = 120.0) -> V | None:
        """The object named ``key``, or ``None`` if it does not exist. Raises what the fetch raised."""
        if not self.enabled:
            self.calls += 1
            return self.fetch([key]).get(key)
        future: Future[V | None] = Future()
        with self._cond:
            self._pending.setdefault(key, []).append(future)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"batch-{self.name}", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise Unavailable(f"{self.name}: no answer from AWS within {timeout:.0f}s; retry") from None

    def _run(self) -> None:
        while True:
            with self._cond:
                # Exit when idle for a while; the next get() starts a new flusher.
                if not self._pending and not self._cond.wait_for(lambda: bool(self._pending), timeout=30.0):
                    self._thread = None
                    return
                delay = self._last_flush + self.interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # leading edge: a lone request is sent at once, a burst shares a call
            with self._cond:
                batch, self._pending = self._pending, {}
                self._last_flush = time.monotonic()
            keys = list(batch)
            for start in range(0, len(keys), self.max_batch):
                chunk = keys[start : start + self.max_batch]
                try:
                    self.calls += 1
                    found = self.fetch(chunk)
                except BaseException as exc:  # hand the failure to every waiter of this chunk
                    for key in chunk:
                        for fut in batch[key]:
                            fut.set_exception(exc)
                    continue
                for key in chunk:
                    for fut in batch[key]:
                        fut.set_result(found.get(key))
