"""snapshot-controller and csi-snapshotter for volume group snapshots (groupsnapshot.storage.k8s.io/v1).

VolumeGroupSnapshot (a PVC label selector) -> VolumeGroupSnapshotContent (the volume handles)
-> CreateVolumeGroupSnapshot; then one VolumeSnapshotContent (with the member's snapshot handle)
and one VolumeSnapshot (owned by the group, bound to that content) per member, so that any
member restores into a new PVC through ``dataSource`` like any VolumeSnapshot. The single
snapshot loop (lab/snapshotter.py) binds and reports the members like pre-provisioned snapshots.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from elastivol.csi import csi_pb2
from elastivol.lab.context import Loop, rpc_message
from elastivol.lab.objects import Obj, add_finalizer, deleting, remove_finalizer
from elastivol.lab.store import AlreadyExistsError, now_rfc3339

GROUP_API = "groupsnapshot.storage.k8s.io/v1"
VGS_BOUND = "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-bound-protection"
VGSC_BOUND = "groupsnapshot.storage.kubernetes.io/volumegroupsnapshotcontent-bound-protection"
DEFAULT_CLASS = "groupsnapshot.storage.kubernetes.io/is-default-class"


def _rfc3339(nanos: int) -> str:
    return datetime.fromtimestamp(nanos / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _nanos(ts: Timestamp) -> int:
    return int(ts.seconds) * 10**9 + int(ts.nanos)


def member_names(content_uid: str, volume_handle: str) -> tuple[str, str]:
    """(VolumeSnapshot, VolumeSnapshotContent) names of one member: stable across retries."""
    digest = hashlib.sha256(f"{content_uid}/{volume_handle}".encode()).hexdigest()[:32]
    return f"snapshot-{digest}", f"snapcontent-{digest}"


def selects(selector: Obj, labels: Obj) -> bool:
    match = selector.get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


class GroupSnapshotter(Loop):
    name = "snapshot-controller"

    def reconcile(self) -> None:
        store = self.ctx.store
        for vgs in store.list_of("VolumeGroupSnapshot"):
            if deleting(vgs):
                self._delete_group(vgs)
            else:
                self._sync_group(vgs)
        for content in store.list_of("VolumeGroupSnapshotContent"):
            key = content["metadata"]["uid"]
            if self.backoff.ready(key):
                self._sync_content(content, key)

    # -- VolumeGroupSnapshot (snapshot-controller) -------------------------------------------------
    def _sync_group(self, vgs: Obj) -> None:
        meta = vgs["metadata"]
        ns = meta["namespace"]
        if VGS_BOUND not in (meta.get("finalizers") or []):
            self.ctx.mutate("VolumeGroupSnapshot", meta["name"], ns, lambda o: add_finalizer(o, VGS_BOUND))
        status = vgs.get("status") or {}
        bound = status.get("boundVolumeGroupSnapshotContentName")
        if not bound:
            self._create_content(vgs)
            return
        content = self.ctx.store.get("VolumeGroupSnapshotContent", bound)
        if content is None:
            return
        cstatus = content.get("status") or {}
        members = cstatus.get("volumeSnapshotInfoList") or []
        for info in members:
            self._ensure_member(vgs, content, info)
        new: Obj = {"boundVolumeGroupSnapshotContentName": bound, "readyToUse": bool(cstatus.get("readyToUse"))}
        if cstatus.get("creationTime"):
            new["creationTime"] = cstatus["creationTime"]
        if cstatus.get("error"):
            new["error"] = cstatus["error"]
        if new == {k: status.get(k) for k in new} and ("error" in new) == ("error" in status):
            return
        was_ready = bool(status.get("readyToUse"))

        def change(o: Obj) -> None:
            o["status"] = new
        self.ctx.mutate("VolumeGroupSnapshot", meta["name"], ns, change)
        if new["readyToUse"] and not was_ready:
            self.ctx.event(vgs, "Normal", "GroupSnapshotCreated",
                           f"GroupSnapshot {ns}/{meta['name']} was successfully created by the CSI driver.", self.name)
            self.ctx.event(vgs, "Normal", "GroupSnapshotReady",
                           f"GroupSnapshot {ns}/{meta['name']} is ready to use.", self.name)

    def _group_class(self, vgs: Obj, driver: str | None) -> Obj | None:
        name = (vgs.get("spec") or {}).get("volumeGroupSnapshotClassName")
        if name:
            return self.ctx.store.get("VolumeGroupSnapshotClass", name)
        defaults = [c for c in self.ctx.store.list_of("VolumeGroupSnapshotClass")
                    if (driver is None or c.get("driver") == driver)
                    and (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS) == "true"]
        return defaults[0] if len(defaults) == 1 else None

    def _create_content(self, vgs: Obj) -> None:
        meta, spec = vgs["metadata"], vgs.get("spec") or {}
        ns = meta["namespace"]
        selector = (spec.get("source") or {}).get("selector") or {}
        claims = sorted((p for p in self.ctx.store.list_of("PersistentVolumeClaim", ns)
                         if selects(selector, p["metadata"].get("labels") or {})), key=lambda p: p["metadata"]["name"])
        if not claims:
            wanted = ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()) or "(empty)"
            self._fail(vgs, f"no PersistentVolumeClaim in namespace {ns} matches the selector {wanted}: "
                       "label the claims to snapshot together (an empty selector selects nothing)")
            return
        unbound = [p["metadata"]["name"] for p in claims if (p.get("status") or {}).get("phase") != "Bound"]
        if unbound:
            self._fail(vgs, f"the PersistentVolumeClaims {', '.join(unbound)} are not bound yet")
            return
        pvs = [self.ctx.store.get("PersistentVolume", p["spec"]["volumeName"]) for p in claims]
        if any(pv is None or not (pv.get("spec") or {}).get("csi") for pv in pvs):
            return
        drivers = sorted({pv["spec"]["csi"]["driver"] for pv in pvs if pv is not None})
        if len(drivers) != 1:
            self._fail(vgs, f"the selected claims live on different drivers ({', '.join(drivers)}); a group snapshot "
                       "is taken by one driver")
            return
        driver = drivers[0]
        vgsclass = self._group_class(vgs, driver)
        if vgsclass is None:
            wanted_class = spec.get("volumeGroupSnapshotClassName")
            self._fail(vgs, f'volumegroupsnapshotclass.groupsnapshot.storage.k8s.io "{wanted_class}" not found' if wanted_class
                       else f"cannot find a default group snapshot class for driver {driver}: name one in "
                       f'spec.volumeGroupSnapshotClassName or annotate one with {DEFAULT_CLASS}: "true"')
            return
        if vgsclass.get("driver") != driver:
            self._fail(vgs, f"VolumeGroupSnapshotClass {vgsclass['metadata']['name']} is for driver "
                       f"{vgsclass.get('driver')}, but the selected claims live on {driver}")
            return
        content_name = f"groupsnapcontent-{meta['uid']}"
        content: Obj = {
            "apiVersion": GROUP_API,
            "kind": "VolumeGroupSnapshotContent",
            "metadata": {"name": content_name, "finalizers": [VGSC_BOUND]},
            "spec": {
                "deletionPolicy": vgsclass.get("deletionPolicy") or "Delete",
                "driver": driver,
                "source": {"volumeHandles": [pv["spec"]["csi"]["volumeHandle"] for pv in pvs if pv is not None]},
                "volumeGroupSnapshotClassName": vgsclass["metadata"]["name"],
                "volumeGroupSnapshotRef": {"apiVersion": GROUP_API, "kind": "VolumeGroupSnapshot",
                                           "name": meta["name"], "namespace": ns, "uid": meta["uid"]},
            },
        }
        try:
            self.ctx.store.create(content)
        except AlreadyExistsError:
            pass

        def bind(o: Obj) -> None:
            o["status"] = {"boundVolumeGroupSnapshotContentName": content_name, "readyToUse": False}
        self.ctx.mutate("VolumeGroupSnapshot", meta["name"], ns, bind)
        self.ctx.event(vgs, "Normal", "CreatingGroupSnapshot",
                       f"Waiting for a group snapshot {ns}/{meta['name']} of {len(claims)} claims "
                       f"({', '.join(p['metadata']['name'] for p in claims)}) to be created by the CSI driver.",
                       self.name)

    def _ensure_member(self, vgs: Obj, content: Obj, info: Obj) -> None:
        """The VolumeSnapshotContent and VolumeSnapshot of one member (made once, then left to the snapshotter)."""
        meta = vgs["metadata"]
        ns = meta["namespace"]
        vs_name, vsc_name = member_names(content["metadata"]["uid"], str(info.get("volumeHandle")))
        existing = self.ctx.store.get("VolumeSnapshot", vs_name, ns)
        if existing is not None:
            if (existing.get("status") or {}).get("volumeGroupSnapshotName") != meta["name"] and not deleting(existing):
                # The snapshot loop's first binding writes a fresh status; say again which group it is of.
                def mark(o: Obj) -> None:
                    o.setdefault("status", {})["volumeGroupSnapshotName"] = meta["name"]
                self.ctx.mutate("VolumeSnapshot", vs_name, ns, mark)
            return
        pv = next((p for p in self.ctx.store.list_of("PersistentVolume")
                   if ((p.get("spec") or {}).get("csi") or {}).get("volumeHandle") == info.get("volumeHandle")), None)
        member_content: Obj = {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": vsc_name, "finalizers": ["snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"]},
            "spec": {
                "deletionPolicy": content["spec"].get("deletionPolicy", "Delete"),
                "driver": content["spec"]["driver"],
                "source": {"snapshotHandle": info.get("snapshotHandle")},
                "sourceVolumeMode": ((pv or {}).get("spec") or {}).get("volumeMode") or "Filesystem",
                "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                                      "name": vs_name, "namespace": ns},
            },
            "status": {"snapshotHandle": info.get("snapshotHandle"), "readyToUse": bool(info.get("readyToUse")),
                       "restoreSize": int(info.get("restoreSize") or 0), "creationTime": int(info.get("creationTime") or 0),
                       "volumeGroupSnapshotHandle": (content.get("status") or {}).get("volumeGroupSnapshotHandle")},
        }
        member: Obj = {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": vs_name, "namespace": ns,
                         "ownerReferences": [{"apiVersion": GROUP_API, "kind": "VolumeGroupSnapshot",
                                              "name": meta["name"], "uid": meta["uid"], "controller": True}]},
            "spec": {"source": {"volumeSnapshotContentName": vsc_name}},
            "status": {"volumeGroupSnapshotName": meta["name"], "readyToUse": False},
        }
        for obj in (member_content, member):
            try:
                self.ctx.store.create(obj)
            except AlreadyExistsError:
                pass

    def members_of(self, vgs: Obj) -> list[Obj]:
        uid = vgs["metadata"]["uid"]
        return [vs for vs in self.ctx.store.list_of("VolumeSnapshot", vgs["metadata"]["namespace"])
                if any(r.get("uid") == uid for r in vs["metadata"].get("ownerReferences") or [])]

    def _fail(self, vgs: Obj, message: str) -> None:
        meta = vgs["metadata"]

        def change(o: Obj) -> bool:
            status = o.setdefault("status", {})
            if (status.get("error") or {}).get("message") == message:
                return False
            status["readyToUse"] = False
            status["error"] = {"message": message, "time": now_rfc3339()}
            return True
        self.ctx.mutate("VolumeGroupSnapshot", meta["name"], meta["namespace"], change)
        self.ctx.event(vgs, "Warning", "GroupSnapshotContentCreationFailed", message, self.name)

    def _delete_group(self, vgs: Obj) -> None:
        """The content first (its deletion deletes the group on the driver), then the members' objects."""
        meta = vgs["metadata"]
        bound = (vgs.get("status") or {}).get("boundVolumeGroupSnapshotContentName")
        if bound:
            content = self.ctx.store.get("VolumeGroupSnapshotContent", bound)
            if content is not None and content["spec"].get("deletionPolicy", "Delete") == "Delete":
                if not deleting(content):
                    self.ctx.store.delete("VolumeGroupSnapshotContent", bound)
                return  # the content's deletion finishes first
        members = self.members_of(vgs)
        for vs in members:
            if not deleting(vs):
                self.ctx.store.delete("VolumeSnapshot", vs["metadata"]["name"], meta["namespace"])
        if members:
            return  # gone once the snapshot loop has released them
        self.ctx.mutate("VolumeGroupSnapshot", meta["name"], meta["namespace"], lambda o: remove_finalizer(o, VGS_BOUND))

    # -- VolumeGroupSnapshotContent (csi-snapshotter --enable-volume-group-snapshots) --------------
    def _sync_content(self, content: Obj, key: str) -> None:
        name = content["metadata"]["name"]
        spec = content["spec"]
        driver = spec.get("driver", "")
        if not self.ctx.is_ours(driver):
            return
        status = content.get("status") or {}
        handle = status.get("volumeGroupSnapshotHandle")
        snapshot_ids = [str(i.get("snapshotHandle")) for i in status.get("volumeSnapshotInfoList") or []]
        group = self.ctx.controller(driver).group
        if deleting(content):
            if spec.get("deletionPolicy", "Delete") == "Delete" and handle:
                try:
                    group.DeleteVolumeGroupSnapshot(csi_pb2.DeleteVolumeGroupSnapshotRequest(
                        group_snapshot_id=handle, snapshot_ids=snapshot_ids), timeout=120)
                except grpc.RpcError as exc:
                    self._content_error(content, rpc_message(exc))
                    self.backoff.failed(key)
                    return
            self.ctx.mutate("VolumeGroupSnapshotContent", name, None, lambda o: remove_finalizer(o, VGSC_BOUND))
            return
        if status.get("readyToUse"):
            return
        ref = spec.get("volumeGroupSnapshotRef") or {}
        vgs = self.ctx.store.get("VolumeGroupSnapshot", ref.get("name", ""), ref.get("namespace", "default"))
        try:
            if handle:
                reply = group.GetVolumeGroupSnapshot(csi_pb2.GetVolumeGroupSnapshotRequest(
                    group_snapshot_id=handle, snapshot_ids=snapshot_ids), timeout=120).group_snapshot
            else:
                vgsclass = self.ctx.store.get("VolumeGroupSnapshotClass",
                                              spec.get("volumeGroupSnapshotClassName", "")) or {}
                reply = group.CreateVolumeGroupSnapshot(csi_pb2.CreateVolumeGroupSnapshotRequest(
                    name=f"groupsnapshot-{ref.get('uid', name)}",
                    source_volume_ids=list((spec.get("source") or {}).get("volumeHandles") or []),
                    parameters={str(k): str(v) for k, v in (vgsclass.get("parameters") or {}).items()}),
                    timeout=600).group_snapshot
        except grpc.RpcError as exc:
            message = rpc_message(exc)
            self._content_error(content, message)
            if vgs is not None:
                self.ctx.event(vgs, "Warning", "GroupSnapshotCreationFailed",
                               f"Failed to create group snapshot: {message}", f"csi-snapshotter {driver}")
            self.backoff.failed(key)
            return
        self.backoff.ok(key)
        infos = [{"volumeHandle": s.source_volume_id, "snapshotHandle": s.snapshot_id, "readyToUse": s.ready_to_use,
                  "restoreSize": int(s.size_bytes), "creationTime": _nanos(s.creation_time)} for s in reply.snapshots]

        def ready(o: Obj) -> None:
            o["status"] = {"volumeGroupSnapshotHandle": reply.group_snapshot_id, "readyToUse": reply.ready_to_use,
                           "creationTime": _rfc3339(_nanos(reply.creation_time)),
                           "volumeSnapshotInfoList": sorted(infos, key=lambda i: str(i["volumeHandle"]))}
        self.ctx.mutate("VolumeGroupSnapshotContent", name, None, ready)

    def _content_error(self, content: Obj, message: str) -> None:
        def change(o: Obj) -> None:
            o.setdefault("status", {})["error"] = {"message": message, "time": now_rfc3339()}
            o["status"]["readyToUse"] = False
        self.ctx.mutate("VolumeGroupSnapshotContent", content["metadata"]["name"], None, change)
