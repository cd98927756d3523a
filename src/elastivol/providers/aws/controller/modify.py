"""ModifyVolume, coalesced: expand and modify requests for one volume within a window become one call.

EBS accepts one modification per volume and then refuses the next for hours, so an expansion
(ControllerExpandVolume) and a performance change (IOPS, throughput, type) that arrive together
must travel in the same ModifyVolume. The first request for a volume opens a group and waits
``window`` seconds; later requests join it; one call carries the union (the largest size, the
latest value of each other field). Every member then waits for the state it needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from elastivol.errors import ElastivolError, Internal, Unavailable


@dataclass
class _Group:
    changes: dict[str, Any] = field(default_factory=dict)
    closed: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    members: int = 0


def merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if key == "Size" and key in into:
            into[key] = max(into[key], value)  # never shrink another caller's expansion
        else:
            into[key] = value


class ModifyCoalescer:
    def __init__(self, send: Callable[[str, dict[str, Any]], None], window: float) -> None:
        self.send = send
        self.window = window
        self._lock = threading.Lock()
        self._open: dict[str, _Group] = {}
        self.calls = 0

    def submit(self, volume_id: str, changes: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        """Block until a ModifyVolume carrying ``changes`` was sent; return what that call carried."""
        with self._lock:
            group = self._open.get(volume_id)
            leader = group is None or group.closed
            if leader:
                group = self._open[volume_id] = _Group()
            if group is None:  # narrows the type; cannot happen on this path
                raise Internal("group is missing where it was just set")
            merge(group.changes, changes)
            group.members += 1
        if leader:
            time.sleep(self.window)
            with self._lock:
                group.closed = True
                if self._open.get(volume_id) is group:
                    del self._open[volume_id]
                sent = dict(group.changes)
            try:
                self.calls += 1
                self.send(volume_id, sent)
            except BaseException as exc:
                group.error = exc
            finally:
                group.done.set()
        if not group.done.wait(timeout):
            raise Unavailable(f"ModifyVolume for {volume_id} did not return within {timeout:.0f}s; retry")
        if group.error is not None:
            if isinstance(group.error, ElastivolError):
                raise group.error
            raise Unavailable(f"ModifyVolume for {volume_id} failed: {group.error}") from group.error
        return dict(group.changes)
