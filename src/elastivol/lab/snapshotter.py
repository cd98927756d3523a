"""snapshot-controller and csi-snapshotter: VolumeSnapshot ↔ VolumeSnapshotContent ↔ CreateSnapshot."""

from __future__ import annotations

import grpc

from elastivol.csi import csi_pb2
from elastivol.lab.objects import Obj, deleting, format_quantity
from elastivol.lab.snapshotloop import SnapshotKinds, SnapshotLoop, nanos, rfc3339

VS_BOUND = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"
VS_SOURCE = "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection"
VSC_BOUND = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"
DEFAULT_CLASS = "snapshot.storage.kubernetes.io/is-default-class"
KINDS = SnapshotKinds(obj="VolumeSnapshot", api_group="snapshot.storage.k8s.io", finalizers=(VS_BOUND, VS_SOURCE),
                      content_finalizer=VSC_BOUND, content_prefix="snapcontent", default_class=DEFAULT_CLASS,
                      noun="Snapshot", what="snapshot")


class Snapshotter(SnapshotLoop):
    kinds = KINDS

    # -- VolumeSnapshot --------------------------------------------------------------------------
    def _bind(self, vs: Obj) -> None:
        source = vs.get("spec", {}).get("source") or {}
        if source.get("volumeSnapshotContentName"):
            self._bind_preprovisioned(vs, source["volumeSnapshotContentName"])
        else:
            self._create_snapshot_content(vs, source.get("persistentVolumeClaimName", ""))

    def _follow_content(self, vs: Obj, content: Obj, new: Obj) -> None:
        cstatus = content.get("status") or {}
        if cstatus.get("restoreSize") is not None:
            new["restoreSize"] = format_quantity(int(cstatus["restoreSize"]))
        if cstatus.get("creationTime"):
            new["creationTime"] = rfc3339(int(cstatus["creationTime"]))
        if cstatus.get("error"):
            new["error"] = cstatus["error"]
        status = vs.get("status") or {}
        if status.get("volumeGroupSnapshotName"):  # a member of a group (lab/groupsnapshotter.py)
            new["volumeGroupSnapshotName"] = status["volumeGroupSnapshotName"]

    def _create_snapshot_content(self, vs: Obj, claim: str) -> None:
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
        vsclass = self._pick_class(vs, driver, f"claim {claim} lives",
                                   f"cannot find a default snapshot class for driver {driver}: name one in "
                                   "spec.volumeSnapshotClassName or mark one with the annotation "
                                   f'{DEFAULT_CLASS}: "true"')
        if vsclass is None:
            return
        self._create_content(vs, vsclass, vsclass.get("deletionPolicy", "Delete"), driver,
                             {"volumeHandle": pv["spec"]["csi"]["volumeHandle"]},
                             sourceVolumeMode=pv["spec"].get("volumeMode") or "Filesystem")
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

        self._bind_to(vs, content_name)

    def _delete_object(self, vs: Obj) -> None:
        meta = vs["metadata"]
        for pvc in self.ctx.store.list_of("PersistentVolumeClaim", meta["namespace"]):
            src = pvc["spec"].get("dataSourceRef") or pvc["spec"].get("dataSource") or {}
            if src.get("kind") == "VolumeSnapshot" and src.get("name") == meta["name"] and \
                    pvc.get("status", {}).get("phase") != "Bound" and not deleting(pvc):
                return  # volumesnapshot-as-source-protection: a restore from it is still being provisioned
        if not self._content_first(vs):
            self._release(vs)

    # -- VolumeSnapshotContent (csi-snapshotter) -------------------------------------------------
    @staticmethod
    def _handle(content: Obj) -> str | None:
        handle = (content.get("status") or {}).get("snapshotHandle") or \
            (content["spec"].get("source") or {}).get("snapshotHandle")
        return None if handle is None else str(handle)

    def _delete_on_driver(self, content: Obj, driver: str) -> None:
        handle = self._handle(content)
        if handle:
            self.ctx.controller(driver).controller.DeleteSnapshot(
                csi_pb2.DeleteSnapshotRequest(snapshot_id=handle), timeout=120)

    def _take(self, content: Obj, key: str, driver: str) -> None:
        name = content["metadata"]["name"]
        spec = content["spec"]
        status = content.get("status") or {}
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
                handle = self._handle(content)
                listed = self.ctx.controller(driver).controller.ListSnapshots(
                    csi_pb2.ListSnapshotsRequest(snapshot_id=handle or ""), timeout=60)
                if not listed.entries:
                    self._content_error(content, f"snapshot {handle} does not exist on {driver}")
                    self.backoff.failed(key)
                    return
                snap = listed.entries[0].snapshot
        except grpc.RpcError as exc:
            self._take_failed(content, vs, driver, key, exc)
            return
        self._taken(content, key, {"snapshotHandle": snap.snapshot_id, "readyToUse": bool(snap.ready_to_use),
                                   "restoreSize": int(snap.size_bytes),
                                   "creationTime": nanos(snap.creation_time)})
