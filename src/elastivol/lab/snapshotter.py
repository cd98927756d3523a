"""snapshot-controller and csi-snapshotter: VolumeSnapshot ↔ VolumeSnapshotContent ↔ CreateSnapshot."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from elastivol.csi import csi_pb2
from elastivol.lab.context import Loop, rpc_message
from elastivol.lab.objects import Obj, add_finalizer, deleting, format_quantity, remove_finalizer
from elastivol.lab.store import AlreadyExistsError, now_rfc3339

VS_BOUND = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"
VS_SOURCE = "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection"
VSC_BOUND = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"
DEFAULT_CLASS = "snapshot.storage.kubernetes.io/is-default-class"


class Snapshotter(Loop):
    name = "snapshot-controller"

    def reconcile(self) -> None:
        store = self.ctx.store
        for vs in store.list_of("VolumeSnapshot"):
            if deleting(vs):
                self._delete_snapshot(vs)
            else:
                self._sync_snapshot(vs)
        for content in store.list_of("VolumeSnapshotContent"):
            key = content["metadata"]["uid"]
            if self.backoff.ready(key):
                self._sync_content(content, key)

    # -- VolumeSnapshot --------------------------------------------------------------------------
    def _sync_snapshot(self, vs: Obj) -> None:
        meta, spec = vs["metadata"], vs.get("spec", {})
        ns = meta["namespace"]
        if VS_BOUND not in (meta.get("finalizers") or []):
            self.ctx.mutate("VolumeSnapshot", meta["name"], ns,
                            lambda o: add_finalizer(o, VS_BOUND) | add_finalizer(o, VS_SOURCE))
        status = vs.get("status") or {}
        bound = status.get("boundVolumeSnapshotContentName")
        source = spec.get("source") or {}
        if not bound:
            if source.get("volumeSnapshotContentName"):
                self._bind_preprovisioned(vs, source["volumeSnapshotContentName"])
            else:
                self._create_content(vs, source.get("persistentVolumeClaimName", ""))
            return
        content = self.ctx.store.get("VolumeSnapshotContent", bound)
        if content is None:
            return
        cstatus = content.get("status") or {}
        new: Obj = {"boundVolumeSnapshotContentName": bound, "readyToUse": bool(cstatus.get("readyToUse"))}
        if cstatus.get("restoreSize") is not None:
            new["restoreSize"] = format_quantity(int(cstatus["restoreSize"]))
        if cstatus.get("creationTime"):
            new["creationTime"] = datetime.fromtimestamp(int(cstatus["creationTime"]) / 1e9, UTC) \
                .strftime("%Y-%m-%dT%H:%M:%SZ")
        if cstatus.get("error"):
            new["error"] = cstatus["error"]
        if status.get("volumeGroupSnapshotName"):  # a member of a group (lab/groupsnapshotter.py)
            new["volumeGroupSnapshotName"] = status["volumeGroupSnapshotName"]
        if new == {k: status.get(k) for k in new} and ("error" in new) == ("error" in status):
            return
        was_ready = bool(status.get("readyToUse"))

        def change(o: Obj) -> None:
            o["status"] = new
        self.ctx.mutate("VolumeSnapshot", meta["name"], ns, change)
        if new["readyToUse"] and not was_ready:
            self.ctx.event(vs, "Normal", "SnapshotCreated",
                           f"Snapshot {ns}/{meta['name']} was successfully created by the CSI driver.", self.name)
            self.ctx.event(vs, "Normal", "SnapshotReady", f"Snapshot {ns}/{meta['name']} is ready to use.", self.name)

    def _snapshot_class(self, vs: Obj, driver: str) -> Obj | None:
        name = vs["spec"].get("volumeSnapshotClassName")
        if name:
            return self.ctx.store.get("VolumeSnapshotClass", name)
        defaults = [c for c in self.ctx.store.list_of("VolumeSnapshotClass")
                    if c.get("driver") == driver and (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS) == "true"]
        return defaults[0] if len(defaults) == 1 else None

    def _create_content(self, vs: Obj, claim: str) -> None:
        meta = vs["metadata"]
        ns = meta["namespace"]
        pvc = self.ctx.store.get("PersistentVolumeClaim", claim, ns)
        if pvc is None or pvc.get("status", {}).get("phase") != "Bound":
            self._fail(vs, f'the source PersistentVolumeClaim "{claim}" is not bound yet (or does not exist)')
            return
        pv = self.ctx.store.get("PersistentVolume", pvc["spec"]["volumeName"])
        if pv is None:
            return
        driver = pv["spec"]["csi"]["driver"]
        vsclass = self._snapshot_class(vs, driver)
        if vsclass is None:
            wanted = vs["spec"].get("volumeSnapshotClassName")
            self._fail(vs, f'volumesnapshotclass.snapshot.storage.k8s.io "{wanted}" not found' if wanted else
                       f"cannot find a default snapshot class for driver {driver}: name one in "
                       "spec.volumeSnapshotClassName or mark one with the annotation "
                       f"{DEFAULT_CLASS}: \"true\"")
            return
        if vsclass.get("driver") != driver:
            self._fail(vs, f"VolumeSnapshotClass {vsclass['metadata']['name']} is for driver {vsclass.get('driver')}, "
                       f"but claim {claim} lives on {driver}")
            return
        content_name = f"snapcontent-{meta['uid']}"
        content: Obj = {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": content_name, "finalizers": [VSC_BOUND]},
            "spec": {
                "deletionPolicy": vsclass.get("deletionPolicy", "Delete"),
                "driver": driver,
                "source": {"volumeHandle": pv["spec"]["csi"]["volumeHandle"]},
                "sourceVolumeMode": pv["spec"].get("volumeMode") or "Filesystem",
                "volumeSnapshotClassName": vsclass["metadata"]["name"],
                "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                                      "name": meta["name"], "namespace": ns, "uid": meta["uid"]},
            },
        }
        try:
            self.ctx.store.create(content)
        except AlreadyExistsError:
            pass

        def bind(o: Obj) -> None:
            o["status"] = {"boundVolumeSnapshotContentName": content_name, "readyToUse": False}
        self.ctx.mutate("VolumeSnapshot", meta["name"], ns, bind)
        self.ctx.event(vs, "Normal", "CreatingSnapshot",
                       f"Waiting for a snapshot {ns}/{meta['name']} to be created by the CSI driver.", self.name)

    def _bind_preprovisioned(self, vs: Obj, content_name: str) -> None:
        meta = vs["metadata"]
        content = self.ctx.store.get("VolumeSnapshotContent", content_name)
        if content is None:
            self._fail(vs, f'volumesnapshotcontent.snapshot.storage.k8s.io "{content_name}" not found')
            return
        ref = content["spec"].get("volumeSnapshotRef") or {}
        if ref.get("name") != meta["name"] or ref.get("namespace") != meta["namespace"]:
            self._fail(vs, f"VolumeSnapshotContent {content_name} is for VolumeSnapshot "
                       f"{ref.get('namespace')}/{ref.get('name')}, not for {meta['namespace']}/{meta['name']}")
            return

        def bind(o: Obj) -> None:
            o["status"] = {"boundVolumeSnapshotContentName": content_name, "readyToUse": False}
        self.ctx.mutate("VolumeSnapshot", meta["name"], meta["namespace"], bind)

    def _fail(self, vs: Obj, message: str) -> None:
        meta = vs["metadata"]

        def change(o: Obj) -> bool:
            status = o.setdefault("status", {})
            if (status.get("error") or {}).get("message") == message:
                return False
            status["readyToUse"] = False
            status["error"] = {"message": message, "time": now_rfc3339()}
            return True
        self.ctx.mutate("VolumeSnapshot", meta["name"], meta["namespace"], change)
        self.ctx.event(vs, "Warning", "SnapshotContentCreationFailed", message, self.name)

    def _delete_snapshot(self, vs: Obj) -> None:
        meta = vs["metadata"]
        for pvc in self.ctx.store.list_of("PersistentVolumeClaim", meta["namespace"]):
            src = pvc["spec"].get("dataSourceRef") or pvc["spec"].get("dataSource") or {}
            if src.get("kind") == "VolumeSnapshot" and src.get("name") == meta["name"] and \
                    pvc.get("status", {}).get("phase") != "Bound" and not deleting(pvc):
                return  # volumesnapshot-as-source-protection: a restore from it is still being provisioned
        bound = (vs.get("status") or {}).get("boundVolumeSnapshotContentName")
        if bound:
            content = self.ctx.store.get("VolumeSnapshotContent", bound)
            if content is not None and content["spec"].get("deletionPolicy", "Delete") == "Delete":
                self.ctx.store.delete("VolumeSnapshotContent", bound)
                return  # the content's deletion finishes first
        self.ctx.mutate("VolumeSnapshot", meta["name"], meta["namespace"],
                        lambda o: remove_finalizer(o, VS_BOUND) | remove_finalizer(o, VS_SOURCE))

    # -- VolumeSnapshotContent (csi-snapshotter) -------------------------------------------------
    def _sync_content(self, content: Obj, key: str) -> None:
        name = content["metadata"]["name"]
        spec = content["spec"]
        driver = spec.get("driver", "")
        if not self.ctx.is_ours(driver):
            return
        status = content.get("status") or {}
        handle = status.get("snapshotHandle") or (spec.get("source") or {}).get("snapshotHandle")
        if deleting(content):
            if spec.get("deletionPolicy", "Delete") == "Delete" and handle:
                try:
                    self.ctx.controller(driver).controller.DeleteSnapshot(
                        csi_pb2.DeleteSnapshotRequest(snapshot_id=handle), timeout=120)
                except grpc.RpcError as exc:
                    self._content_error(content, rpc_message(exc))
                    self.backoff.failed(key)
                    return
            self.ctx.mutate("VolumeSnapshotContent", name, None, lambda o: remove_finalizer(o, VSC_BOUND))
            return
        ref = spec.get("volumeSnapshotRef") or {}
        vs = self.ctx.store.get("VolumeSnapshot", ref.get("name", ""), ref.get("namespace", "default"))
        if (vs is None or vs["metadata"]["uid"] != ref.get("uid", vs["metadata"]["uid"])) and status.get("readyToUse"):
            if spec.get("deletionPolicy", "Delete") == "Delete":
                self.ctx.store.delete("VolumeSnapshotContent", name)
            return
        if status.get("readyToUse"):
            return
        try:
            if (spec.get("source") or {}).get("volumeHandle"):
                vsclass = self.ctx.store.get("VolumeSnapshotClass", spec.get("volumeSnapshotClassName", "")) or {}
                reply = self.ctx.controller(driver).controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
                    source_volume_id=spec["source"]["volumeHandle"], name=f"snapshot-{ref.get('uid', name)}",
                    parameters={str(k): str(v) for k, v in (vsclass.get("parameters") or {}).items()}), timeout=600)
                snap = reply.snapshot
            else:
                listed = self.ctx.controller(driver).controller.ListSnapshots(
                    csi_pb2.ListSnapshotsRequest(snapshot_id=handle or ""), timeout=60)
                if not listed.entries:
                    self._content_error(content, f"snapshot {handle} does not exist on {driver}")
                    self.backoff.failed(key)
                    return
                snap = listed.entries[0].snapshot
        except grpc.RpcError as exc:
            message = rpc_message(exc)
            self._content_error(content, message)
            if vs is not None:
                self.ctx.event(vs, "Warning", "SnapshotCreationFailed", f"Failed to create snapshot: {message}",
                               f"csi-snapshotter {driver}")
            self.backoff.failed(key)
            return
        self.backoff.ok(key)
        created = snap.creation_time.seconds * 10**9 + snap.creation_time.nanos

        def ready(o: Obj) -> None:
            o["status"] = {"snapshotHandle": snap.snapshot_id, "readyToUse": bool(snap.ready_to_use),
                           "restoreSize": int(snap.size_bytes), "creationTime": created}
        self.ctx.mutate("VolumeSnapshotContent", name, None, ready)

    def _content_error(self, content: Obj, message: str) -> None:
        def change(o: Obj) -> None:
            o.setdefault("status", {})["error"] = {"message": message, "time": now_rfc3339()}
            o["status"]["readyToUse"] = False
        self.ctx.mutate("VolumeSnapshotContent", content["metadata"]["name"], None, change)
