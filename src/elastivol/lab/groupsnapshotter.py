"""snapshot-controller and csi-snapshotter for volume group snapshots (groupsnapshot.storage.k8s.io/v1).

VolumeGroupSnapshot (a PVC label selector) -> VolumeGroupSnapshotContent (the volume handles)
-> CreateVolumeGroupSnapshot; then one VolumeSnapshotContent (with the member's snapshot handle)
and one VolumeSnapshot (owned by the group, bound to that content) per member, so that any
member restores into a new PVC through ``dataSource`` like any VolumeSnapshot. The single
snapshot loop (lab/snapshotter.py) binds and reports the members like pre-provisioned snapshots.
"""

from __future__ import annotations

import hashlib

import grpc

from elastivol.csi import csi_pb2
from elastivol.lab.objects import Obj, deleting
from elastivol.lab.snapshotloop import SnapshotKinds, SnapshotLoop, nanos, rfc3339
from elastivol.lab.snapshotter import VSC_BOUND
from elastivol.lab.store import AlreadyExistsError

GROUP_API = "groupsnapshot.storage.k8s.io/v1"
VGS_BOUND = "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-bound-protection"
VGSC_BOUND = "groupsnapshot.storage.kubernetes.io/volumegroupsnapshotcontent-bound-protection"
DEFAULT_CLASS = "groupsnapshot.storage.kubernetes.io/is-default-class"
KINDS = SnapshotKinds(obj="VolumeGroupSnapshot", api_group="groupsnapshot.storage.k8s.io", finalizers=(VGS_BOUND,),
                      content_finalizer=VGSC_BOUND, content_prefix="groupsnapcontent", default_class=DEFAULT_CLASS,
                      noun="GroupSnapshot", what="group snapshot")


def member_names(content_uid: str, volume_handle: str) -> tuple[str, str]:
    """(VolumeSnapshot, VolumeSnapshotContent) names of one member: stable across retries."""
    digest = hashlib.sha256(f"{content_uid}/{volume_handle}".encode()).hexdigest()[:32]
    return f"snapshot-{digest}", f"snapcontent-{digest}"


def selects(selector: Obj, labels: Obj) -> bool:
    match = selector.get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


class GroupSnapshotter(SnapshotLoop):
    kinds = KINDS

    # -- VolumeGroupSnapshot (snapshot-controller) -------------------------------------------------
    def _follow_content(self, vgs: Obj, content: Obj, new: Obj) -> None:
        cstatus = content.get("status") or {}
        for info in cstatus.get("volumeSnapshotInfoList") or []:
            self._ensure_member(vgs, content, info)
        if cstatus.get("creationTime"):
            new["creationTime"] = cstatus["creationTime"]
        if cstatus.get("error"):
            new["error"] = cstatus["error"]

    def _bind(self, vgs: Obj) -> None:
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
        vgsclass = self._pick_class(vgs, driver, "the selected claims live",
                                    f"cannot find a default group snapshot class for driver {driver}: name one in "
                                    f'spec.volumeGroupSnapshotClassName or annotate one with {DEFAULT_CLASS}: "true"')
        if vgsclass is None:
            return
        self._create_content(vgs, vgsclass, vgsclass.get("deletionPolicy") or "Delete", driver,
                             {"volumeHandles": [pv["spec"]["csi"]["volumeHandle"] for pv in pvs if pv is not None]})
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
            "metadata": {"name": vsc_name, "finalizers": [VSC_BOUND]},
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

    def _delete_object(self, vgs: Obj) -> None:
        """The content first (its deletion deletes the group on the driver), then the members' objects."""
        if self._content_first(vgs):
            return
        members = self.members_of(vgs)
        for vs in members:
            if not deleting(vs):
                self.ctx.store.delete("VolumeSnapshot", vs["metadata"]["name"], vgs["metadata"]["namespace"])
        if members:
            return  # gone once the snapshot loop has released them
        self._release(vgs)

    # -- VolumeGroupSnapshotContent (csi-snapshotter --enable-volume-group-snapshots) --------------
    def _delete_on_driver(self, content: Obj, driver: str) -> None:
        status = content.get("status") or {}
        handle = status.get("volumeGroupSnapshotHandle")
        if handle:
            self.ctx.controller(driver).group.DeleteVolumeGroupSnapshot(csi_pb2.DeleteVolumeGroupSnapshotRequest(
                group_snapshot_id=handle, snapshot_ids=_snapshot_ids(status)), timeout=120)

    def _take(self, content: Obj, key: str, driver: str) -> None:
        name = content["metadata"]["name"]
        spec = content["spec"]
        status = content.get("status") or {}
        if status.get("readyToUse"):
            return
        handle = status.get("volumeGroupSnapshotHandle")
        group = self.ctx.controller(driver).group
        ref = spec.get("volumeGroupSnapshotRef") or {}
        vgs = self.ctx.store.get("VolumeGroupSnapshot", ref.get("name", ""), ref.get("namespace", "default"))
        try:
            if handle:
                reply = group.GetVolumeGroupSnapshot(csi_pb2.GetVolumeGroupSnapshotRequest(
                    group_snapshot_id=handle, snapshot_ids=_snapshot_ids(status)), timeout=120).group_snapshot
            else:
                vgsclass = self.ctx.store.get("VolumeGroupSnapshotClass",
                                              spec.get("volumeGroupSnapshotClassName", "")) or {}
                reply = group.CreateVolumeGroupSnapshot(csi_pb2.CreateVolumeGroupSnapshotRequest(
                    name=f"groupsnapshot-{ref.get('uid', name)}",
                    source_volume_ids=list((spec.get("source") or {}).get("volumeHandles") or []),
                    parameters={str(k): str(v) for k, v in (vgsclass.get("parameters") or {}).items()}),
                    timeout=600).group_snapshot
        except grpc.RpcError as exc:
            self._take_failed(content, vgs, driver, key, exc)
            return
        infos = [{"volumeHandle": s.source_volume_id, "snapshotHandle": s.snapshot_id, "readyToUse": s.ready_to_use,
                  "restoreSize": int(s.size_bytes), "creationTime": nanos(s.creation_time)} for s in reply.snapshots]
        self._taken(content, key, {"volumeGroupSnapshotHandle": reply.group_snapshot_id,
                                   "readyToUse": reply.ready_to_use,
                                   "creationTime": rfc3339(nanos(reply.creation_time)),
                                   "volumeSnapshotInfoList": sorted(infos, key=lambda i: str(i["volumeHandle"]))})


def _snapshot_ids(status: Obj) -> list[str]:
    """The members' snapshot handles a content's status records (Get/DeleteVolumeGroupSnapshot want them)."""
    return [str(i.get("snapshotHandle")) for i in status.get("volumeSnapshotInfoList") or []]
