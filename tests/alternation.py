"""Two volumes written in strict alternation, and the cross-volume invariant a consistent cut keeps.

The writer puts n in A (fsync), then n in B (fsync), for n = 1, 2, ... So at every instant
B <= A <= B + 1. A snapshot of both taken at one instant keeps that; two snapshots taken one
after the other (A first) let B run ahead of A.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

COUNTER = "counter"


def write_counter(path: Path, n: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, f"{n:>20}\n".encode(), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_counter(directory: Path) -> int:
    path = directory / COUNTER
    return int(path.read_text().strip()) if path.exists() else 0


def invariant_holds(a: int, b: int) -> bool:
    return b <= a <= b + 1


class AlternatingWriter:
    """A thread writing the counters into two mounted volumes until stopped."""

    def __init__(self, a: Path, b: Path, pause: float = 0.0) -> None:
        self.a, self.b = a / COUNTER, b / COUNTER
        self.pause = pause
        self.n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alternating-writer", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.n += 1
                write_counter(self.a, self.n)
                write_counter(self.b, self.n)
                if self.pause:
                    time.sleep(self.pause)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def __enter__(self) -> AlternatingWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the writer is stuck (a filesystem left frozen?)"
        if self.error is not None:
            raise self.error
