"""What the snapshot loop and the group snapshot loop share (lab/snapshotter.py, lab/groupsnapshotter.py).

Both play snapshot-controller and csi-snapshotter over three kinds: an object a user makes
(VolumeSnapshot, VolumeGroupSnapshot), the content it is bound to (…Content) and a class
(…Class). The watch, the protection finalizers, the binding, the class choice, the status the
object reports from its content and the content's release on the driver are the same for
both; :class:`SnapshotKinds` names what differs, and each loop writes only its own flow.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from elastivol.lab.context import Loop, rpc_message
from elastivol.lab.objects import Obj, add_finalizer, deleting, remove_finalizer
from elastivol.lab.store import AlreadyExistsError, now_rfc3339


def nanos(ts: Timestamp) -> int:
    """A CSI creation time as the nanoseconds a content's status records."""
    return int(ts.seconds) * 10**9 + int(ts.nanos)


def rfc3339(since_epoch: int) -> str:
    """Nanoseconds since the epoch as an object's status shows a time."""
    return datetime.fromtimestamp(since_epoch / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SnapshotKinds:
    """The names one snapshot loop works with."""

    obj: str  # VolumeSnapshot, VolumeGroupSnapshot
    api_group: str  # of all three kinds
    finalizers: tuple[str, ...]  # on the object; the first one says the loop has seen it
    content_finalizer: str
    content_prefix: str  # a dynamically made content is named <prefix>-<object uid>
    default_class: str  # the annotation that marks a class as its driver's default
    noun: str  # in event reasons and messages: "Snapshot", "GroupSnapshot"
    what: str  # in event messages: "snapshot", "group snapshot"

    @property
    def content(self) -> str:
        return f"{self.obj}Content"

    @property
    def klass(self) -> str:
        return f"{self.obj}Class"

    @property
    def api_version(self) -> str:
        return f"{self.api_group}/v1"

    @property
    def bound_field(self) -> str:  # in the object's status
        return f"bound{self.content}Name"

    @property
    def class_field(self) -> str:  # in the object's and the content's spec
        return f"{self.field}ClassName"

    @property
    def field(self) -> str:  # the object's kind as a field name: volumeSnapshot
        return f"{self.obj[0].lower()}{self.obj[1:]}"


class SnapshotLoop(Loop):
    """One pass: every object (synced, or released when deleted), then every content (with backoff)."""

    name = "snapshot-controller"
    kinds: ClassVar[SnapshotKinds]

    def reconcile(self) -> None:
        store = self.ctx.store
        for obj in store.list_of(self.kinds.obj):
            if deleting(obj):
                self._delete_object(obj)
            else:
                self._sync_object(obj)
        for content in store.list_of(self.kinds.content):
            key = content["metadata"]["uid"]
            if self.backoff.ready(key):
                self._sync_content(content, key)

    # -- what each loop writes for itself ------------------------------------------------------------
    @abc.abstractmethod
    def _bind(self, obj: Obj) -> None:
        """An object bound to no content yet: make its content (or find the pre-provisioned one) and bind."""

    @abc.abstractmethod
    def _follow_content(self, obj: Obj, content: Obj, new: Obj) -> None:
        """Complete ``new``, the status ``obj`` should have now that ``content`` is bound to it."""

    @abc.abstractmethod
    def _delete_object(self, obj: Obj) -> None:
        """A deleted object: release what it holds, then its finalizers (:meth:`_release`)."""

    @abc.abstractmethod
    def _take(self, content: Obj, key: str, driver: str) -> None:
        """A live content of ours: have the driver take (or report) the snapshot, and record it."""

    @abc.abstractmethod
    def _delete_on_driver(self, content: Obj, driver: str) -> None:
        """Delete the content's snapshot on the driver, if the driver has made one; raises grpc.RpcError."""

    # -- the object (snapshot-controller) -----------------------------------------------------------
    def _sync_object(self, obj: Obj) -> None:
        meta = obj["metadata"]
        kinds = self.kinds
        if kinds.finalizers[0] not in (meta.get("finalizers") or []):
            self.ctx.mutate(kinds.obj, meta["name"], meta["namespace"],
                            lambda o: any([add_finalizer(o, f) for f in kinds.finalizers]))
        status = obj.get("status") or {}
        bound = status.get(kinds.bound_field)
        if not bound:
            self._bind(obj)
            return
        content = self.ctx.store.get(kinds.content, bound)
        if content is None:
            return
        new: Obj = {kinds.bound_field: bound, "readyToUse": bool((content.get("status") or {}).get("readyToUse"))}
        self._follow_content(obj, content, new)
        if new == {k: status.get(k) for k in new} and ("error" in new) == ("error" in status):
            return
        was_ready = bool(status.get("readyToUse"))

        def change(o: Obj) -> None:
            o["status"] = new
        self.ctx.mutate(kinds.obj, meta["name"], meta["namespace"], change)
        if new["readyToUse"] and not was_ready:
            said = f"{kinds.noun} {meta['namespace']}/{meta['name']}"
            self.ctx.event(obj, "Normal", f"{kinds.noun}Created", f"{said} was successfully created by the CSI driver.",
                           self.name)
            self.ctx.event(obj, "Normal", f"{kinds.noun}Ready", f"{said} is ready to use.", self.name)

    def _pick_class(self, obj: Obj, driver: str, whose: str, no_default: str) -> Obj | None:
        """The class ``obj`` names, or else the one default class of ``driver``; None once :meth:`_fail` said why.

        ``whose`` ends the message of a class of another driver ("but <whose> on <driver>");
        ``no_default`` is the message when there is no (single) default class.
        """
        kinds = self.kinds
        wanted = (obj.get("spec") or {}).get(kinds.class_field)
        if wanted:
            found = self.ctx.store.get(kinds.klass, wanted)
        else:
            defaults = [c for c in self.ctx.store.list_of(kinds.klass)
                        if c.get("driver") == driver
                        and (c["metadata"].get("annotations") or {}).get(kinds.default_class) == "true"]
            found = defaults[0] if len(defaults) == 1 else None
        if found is None:
            self._fail(obj, f'{kinds.klass.lower()}.{kinds.api_group} "{wanted}" not found' if wanted else no_default)
            return None
        if found.get("driver") != driver:
            self._fail(obj, f"{kinds.klass} {found['metadata']['name']} is for driver {found.get('driver')}, "
                       f"but {whose} on {driver}")
            return None
        return found

    def _create_content(self, obj: Obj, cls: Obj, deletion_policy: str, driver: str, source: Obj,
                        **more_spec: Any) -> None:
        """Make the content of a dynamically taken ``obj`` (once: a retry finds it) and bind ``obj`` to it."""
        meta = obj["metadata"]
        kinds = self.kinds
        content_name = f"{kinds.content_prefix}-{meta['uid']}"
        content: Obj = {
            "apiVersion": kinds.api_version,
            "kind": kinds.content,
            "metadata": {"name": content_name, "finalizers": [kinds.content_finalizer]},
            "spec": {
                "deletionPolicy": deletion_policy,
                "driver": driver,
                "source": source,
                **more_spec,
                kinds.class_field: cls["metadata"]["name"],
                f"{kinds.field}Ref": {
                    "apiVersion": kinds.api_version, "kind": kinds.obj,
                    "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            },
        }
        try:
            self.ctx.store.create(content)
        except AlreadyExistsError:
            pass
        self._bind_to(obj, content_name)

    def _bind_to(self, obj: Obj, content_name: str) -> None:
        def bind(o: Obj) -> None:
            o["status"] = {self.kinds.bound_field: content_name, "readyToUse": False}
        self.ctx.mutate(self.kinds.obj, obj["metadata"]["name"], obj["metadata"]["namespace"], bind)

    def _fail(self, obj: Obj, message: str) -> None:
        meta = obj["metadata"]

        def change(o: Obj) -> bool:
            status = o.setdefault("status", {})
            if (status.get("error") or {}).get("message") == message:
                return False
            status["readyToUse"] = False
            status["error"] = {"message": message, "time": now_rfc3339()}
            return True
        self.ctx.mutate(self.kinds.obj, meta["name"], meta["namespace"], change)
        self.ctx.event(obj, "Warning", f"{self.kinds.noun}ContentCreationFailed", message, self.name)

    def _content_first(self, obj: Obj) -> bool:
        """True while the bound content, to be deleted with ``obj``, is still being deleted (it goes first)."""
        bound = (obj.get("status") or {}).get(self.kinds.bound_field)
        if not bound:
            return False
        content = self.ctx.store.get(self.kinds.content, bound)
        if content is None or content["spec"].get("deletionPolicy", "Delete") != "Delete":
            return False
        if not deleting(content):
            self.ctx.store.delete(self.kinds.content, bound)
        return True

    def _release(self, obj: Obj) -> None:
        meta = obj["metadata"]
        self.ctx.mutate(self.kinds.obj, meta["name"], meta["namespace"],
                        lambda o: any([remove_finalizer(o, f) for f in self.kinds.finalizers]))

    # -- the content (csi-snapshotter) ----------------------------------------------------------------
    def _sync_content(self, content: Obj, key: str) -> None:
        driver = content["spec"].get("driver", "")
        if not self.ctx.is_ours(driver):
            return
        if not deleting(content):
            self._take(content, key, driver)
            return
        if content["spec"].get("deletionPolicy", "Delete") == "Delete":
            try:
                self._delete_on_driver(content, driver)
            except grpc.RpcError as exc:
                self._content_error(content, rpc_message(exc))
                self.backoff.failed(key)
                return
        self.ctx.mutate(self.kinds.content, content["metadata"]["name"], None,
                        lambda o: remove_finalizer(o, self.kinds.content_finalizer))

    def _take_failed(self, content: Obj, obj: Obj | None, driver: str, key: str, exc: grpc.RpcError) -> None:
        message = rpc_message(exc)
        self._content_error(content, message)
        if obj is not None:
            self.ctx.event(obj, "Warning", f"{self.kinds.noun}CreationFailed",
                           f"Failed to create {self.kinds.what}: {message}", f"csi-snapshotter {driver}")
        self.backoff.failed(key)

    def _taken(self, content: Obj, key: str, status: Obj) -> None:
        self.backoff.ok(key)

        def ready(o: Obj) -> None:
            o["status"] = status
        self.ctx.mutate(self.kinds.content, content["metadata"]["name"], None, ready)

    def _content_error(self, content: Obj, message: str) -> None:
        def change(o: Obj) -> None:
            o.setdefault("status", {})["error"] = {"message": message, "time": now_rfc3339()}
            o["status"]["readyToUse"] = False
        self.ctx.mutate(self.kinds.content, content["metadata"]["name"], None, change)

