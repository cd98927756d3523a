"""The one place that holds per-object in-flight locks.

A CO retries every call, and sidecars run several workers, so two calls on one volume can
arrive together. The second one gets ABORTED at once instead of racing the first. Within a
process the registry is a set; between processes that share a pool (a controller and a node
plugin on one host) it is a non-blocking ``flock`` on a file in the pool. A process that
dies releases its flocks with it, so no stale marker can outlive a crash.

The keys belong to the *work*, not to the call that started it. A CO's deadline ends the
caller's wait: grpc.aio cancels the handler, but a thread running mkfs or a provider call
cannot be cancelled. So ``InFlight.run`` starts the work as a task of its own, shields it
from the caller's cancellation, and releases the keys only when the work has really ended.
A retry that arrives meanwhile gets ABORTED; one that arrives after it finds the result
(every provider call is idempotent), never a second volume or a second mkfs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from elastivol.errors import Aborted

T = TypeVar("T")
log = logging.getLogger("elastivol.locks")


def lock_key(value: str) -> str:
    """A file-name-safe key for any string (names come from users)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class Work:
    """One piece of owned work still running, for shutdown and diagnostics."""

    what: str
    keys: tuple[str, ...]
    started: float


class InFlight:
    def __init__(self, lock_dir: Path | None = None) -> None:
        self._held: set[str] = set()
        self._mutex = threading.Lock()
        self._lock_dir = lock_dir
        self._running: dict[asyncio.Task[Any], Work] = {}
        if lock_dir is not None:
            lock_dir.mkdir(parents=True, exist_ok=True)

    # -- the async owner used by every mutating RPC -----------------------------------------
    async def run(self, keys: Iterable[str], work: Callable[[], Awaitable[T]], *, what: str = "") -> T:
        """Run ``work`` owning ``keys`` until it has finished, whatever happens to the caller.

        Raises Aborted at once when a key is busy. If the caller is cancelled (its deadline
        expired), the work goes on to its end and only then gives the keys back.
        """
        wanted = _keys(keys)
        self._claim(wanted)  # in-process check: instant, on the loop, so a busy key answers at once
        task: asyncio.Task[T] = asyncio.get_running_loop().create_task(self._own(wanted, work))
        self._running[task] = Work(what or "operation", tuple(wanted), time.monotonic())
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    async def run_in_thread(self, keys: Iterable[str], fn: Callable[..., T], *args: Any, what: str = "") -> T:
        """``run`` for one blocking call: ``fn(*args)`` in a worker thread, owning ``keys``."""
        return await self.run(keys, lambda: asyncio.to_thread(fn, *args), what=what)

    async def _own(self, keys: list[str], work: Callable[[], Awaitable[T]]) -> T:
        try:
            # Opening lock files touches the pool, which may be slow or hung: off the loop.
            fds = await asyncio.to_thread(self._lock_files, keys)
        except BaseException:
            self._unclaim(keys)
            raise
        try:
            return await work()
        finally:
            for fd in fds:
                os.close(fd)
            self._unclaim(keys)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        work = self._running.pop(task, None)
        if task.cancelled() or work is None:
            return
        exc = task.exception()  # retrieved here so a caller that left does not leave it unread
        if exc is not None:
            log.debug("%s on %s ended with %s", work.what, ", ".join(_show(k) for k in work.keys), type(exc).__name__)

    def running(self) -> list[Work]:
        return sorted(self._running.values(), key=lambda w: w.started)

    async def drain(self, timeout: float) -> list[Work]:
        """Wait up to ``timeout`` seconds for owned work to end; return what is still running."""
        tasks = list(self._running)
        if tasks:
            await asyncio.wait(tasks, timeout=max(timeout, 0.0))
        return self.running()

    # -- the synchronous form, for threads and tools ------------------------------------------
    @contextlib.contextmanager
    def hold(self, *objects: str) -> Iterator[None]:
        """Hold every object in ``objects`` (ids or names) or raise Aborted naming the busy one."""
        keys = _keys(objects)
        self._claim(keys)
        try:
            fds = self._lock_files(keys)
        except BaseException:
            self._unclaim(keys)
            raise
        try:
            yield
        finally:
            for fd in fds:
                os.close(fd)
            self._unclaim(keys)

    def busy(self) -> list[str]:
        with self._mutex:
            return sorted(self._held)

    # -- internals ---------------------------------------------------------------------------
    def _claim(self, keys: list[str]) -> None:
        with self._mutex:
            for key in keys:
                if key in self._held:
                    raise Aborted(f"an operation on {_show(key)} is already in progress; retry later")
            self._held.update(keys)

    def _unclaim(self, keys: list[str]) -> None:
        with self._mutex:
            self._held.difference_update(keys)

    def _lock_files(self, keys: list[str]) -> list[int]:
        fds: list[int] = []
        if self._lock_dir is None:
            return fds
        try:
            for key in keys:
                fds.append(_flock(self._lock_dir, key))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds


def _keys(objects: Iterable[str]) -> list[str]:
    # Sorted, so two calls wanting the same pair always take them in one order.
    return sorted({o for o in objects if o})


def _flock(lock_dir: Path, key: str) -> int:
    fd = os.open(lock_dir / f"{lock_key(key)}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Aborted(
            f"an operation on {_show(key)} is already in progress in another elastivol process "
            "sharing this pool; retry later"
        ) from None
    return fd


def _show(key: str) -> str:
    return key if len(key) <= 80 else key[:77] + "..."
