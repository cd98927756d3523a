"""What every lab control loop shares: the store, the CSI clients, backoff and events."""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from elastivol import BLOCK_DRIVER_NAME
from elastivol.client import CsiClient
from elastivol.lab.layout import DRIVERS, LabConfig, Layout
from elastivol.lab.objects import Obj, deleting
from elastivol.lab.store import Conflict, NotFoundError, Store

log = logging.getLogger("elastivol.lab")

EVENT_REPEAT_SECONDS = 15.0


def rpc_message(exc: grpc.RpcError) -> str:
    """An RPC failure as Kubernetes' sidecars print it: ``rpc error: code = InvalidArgument desc = ...``."""
    code = exc.code() if hasattr(exc, "code") else None
    name = "".join(part.capitalize() for part in code.name.split("_")) if code is not None else "Unknown"
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"rpc error: code = {name} desc = {details}"


class Backoff:
    """Per-object exponential backoff, as a workqueue's rate limiter does (1 s doubling to 30 s)."""

    def __init__(self, first: float = 1.0, cap: float = 30.0) -> None:
        self.first, self.cap = first, cap
        self._next: dict[str, tuple[float, float]] = {}

    def ready(self, key: str) -> bool:
        entry = self._next.get(key)
        return entry is None or time.monotonic() >= entry[0]

    def failed(self, key: str) -> None:
        delay = min(self.cap, self._next[key][1] * 2) if key in self._next else self.first
        self._next[key] = (time.monotonic() + delay, delay)

    def ok(self, key: str) -> None:
        self._next.pop(key, None)


@dataclass
class Context:
    layout: Layout
    config: LabConfig
    store: Store
    clients: dict[tuple[str, str | None], CsiClient] = field(default_factory=dict)
    node_topology: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    # driver -> whether its plugin has VOLUME_ACCESSIBILITY_CONSTRAINTS (external-provisioner asks once).
    accessibility: dict[str, bool] = field(default_factory=dict)
    _emitted: dict[tuple[str, str, str], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def controller(self, driver: str) -> CsiClient:
        return self.clients[(driver, None)]

    def node(self, driver: str, node: str) -> CsiClient:
        return self.clients[(driver, node)]

    @staticmethod
    def is_ours(driver: str | None) -> bool:
        return driver in DRIVERS

    @staticmethod
    def attach_required(driver: str) -> bool:
        # As the CSIDriver objects of the Helm chart say: block attaches, file does not.
        return driver == BLOCK_DRIVER_NAME

    @staticmethod
    def pod_info_on_mount(driver: str) -> bool:
        # The chart's block CSIDriver has podInfoOnMount: true (the node plugin throttles the pod's cgroup).
        return driver == BLOCK_DRIVER_NAME

    def bound_volumes(self) -> Iterator[tuple[Obj, Obj]]:
        """(claim, PersistentVolume) of every live, bound claim whose volume one of the lab's drivers serves:
        what external-resizer's controllers (lab/resizer.py, lab/modifier.py) work on."""
        for pvc in self.store.list_of("PersistentVolumeClaim"):
            if deleting(pvc) or pvc.get("status", {}).get("phase") != "Bound":
                continue
            pv = self.store.get("PersistentVolume", pvc["spec"].get("volumeName", ""))
            if pv is None or not self.is_ours(pv["spec"].get("csi", {}).get("driver")):
                continue
            yield pvc, pv

    def event(self, obj: Obj, type_: str, reason: str, message: str, component: str) -> None:
        """Record an event, repeating an identical one at most every 15 s (as controllers resync)."""
        k = (str(obj["metadata"].get("uid")), reason, message)
        now = time.monotonic()
        with self._lock:
            last = self._emitted.get(k)
            if last is not None and now - last < EVENT_REPEAT_SECONDS:
                return
            self._emitted[k] = now
        self.store.event(obj, type_, reason, message, component)

    def mutate(self, kind: str, name: str, namespace: str | None, change: Callable[[Obj], Any]) -> Obj | None:
        """Read, change and write an object, again on a conflict. ``change`` returns False for no write."""
        for _ in range(20):
            obj = self.store.get(kind, name, namespace)
            if obj is None:
                return None
            if change(obj) is False:
                return obj
            try:
                return self.store.update(obj)
            except Conflict:
                time.sleep(0.01)
            except NotFoundError:
                return None
        raise RuntimeError(f"{kind} {name} kept changing under the lab's controllers")


class Loop(abc.ABC):
    """A control loop: calls ``reconcile`` whenever the store changes, and at least every second."""

    name = "loop"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.backoff = Backoff()

    @abc.abstractmethod
    def reconcile(self) -> None:
        """One pass over the objects this loop owns."""

    def run(self, stop: threading.Event) -> None:
        rv_file = self.ctx.store.root / ".rv"
        last_rv, last_run = "", 0.0
        while not stop.is_set():
            try:
                rv = rv_file.read_text()
            except OSError:
                rv = ""
            if rv != last_rv or time.monotonic() - last_run > 1.0:
                last_rv, last_run = rv, time.monotonic()
                try:
                    self.reconcile()
                except Exception:  # one bad object must not stop the loop; it is retried
                    log.exception("%s: reconcile failed", self.name)
            stop.wait(0.1)
