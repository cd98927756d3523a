"""The attach/detach controller (VolumeAttachment objects) and external-attacher (ControllerPublish)."""

from __future__ import annotations

import grpc

from elastivol.csi import csi_pb2
from elastivol.lab.binding import claim_names
from elastivol.lab.context import Loop, rpc_message
from elastivol.lab.objects import Obj, add_finalizer, deleting, remove_finalizer, volume_attachment_name
from elastivol.lab.provisioner import capabilities
from elastivol.lab.store import AlreadyExistsError, now_rfc3339


def attacher_finalizer(driver: str) -> str:
    return "external-attacher/" + driver.replace(".", "-")


def pv_capability(pv: Obj) -> csi_pb2.VolumeCapability:
    spec = pv["spec"]
    return capabilities((spec.get("accessModes") or ["ReadWriteOnce"])[:1], spec.get("volumeMode") or "Filesystem",
                        spec.get("csi", {}).get("fsType", ""), spec.get("mountOptions") or [])[0]


class Attacher(Loop):
    name = "attachdetach-controller"

    def reconcile(self) -> None:
        store = self.ctx.store
        desired: dict[tuple[str, str], list[Obj]] = {}
        for pod in store.list_of("Pod"):
            node = pod["spec"].get("nodeName")
            if not node or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                continue
            for claim in claim_names(pod):
                pvc = store.get("PersistentVolumeClaim", claim, pod["metadata"]["namespace"])
                pv_name = (pvc or {}).get("spec", {}).get("volumeName")
                if not pvc or pvc.get("status", {}).get("phase") != "Bound" or not pv_name:
                    continue
                pv = store.get("PersistentVolume", pv_name)
                if pv and self.ctx.attach_required(pv["spec"].get("csi", {}).get("driver", "")):
                    desired.setdefault((pv_name, node), []).append(pod)
        attachments = store.list_of("VolumeAttachment")
        existing = {(va["spec"]["source"]["persistentVolumeName"], va["spec"]["nodeName"]): va for va in attachments}
        for (pv_name, node), pods in desired.items():
            if (pv_name, node) not in existing:
                self._create(pv_name, node, pods, attachments)
        in_use = {n["metadata"]["name"]: set(n.get("status", {}).get("volumesInUse") or [])
                  for n in store.list_of("Node")}
        for (pv_name, node), va in existing.items():
            if (pv_name, node) in desired or deleting(va):
                continue
            pv = store.get("PersistentVolume", pv_name)
            handle = (pv or {}).get("spec", {}).get("csi", {}).get("volumeHandle", "")
            if handle and handle in in_use.get(node, set()):
                continue  # the kubelet has not unmounted it yet
            store.delete("VolumeAttachment", va["metadata"]["name"])
        for va in store.list_of("VolumeAttachment"):
            key = va["metadata"]["uid"]
            if self.backoff.ready(key):
                self._sync(va, desired.get((va["spec"]["source"]["persistentVolumeName"], va["spec"]["nodeName"]), []))

    def _create(self, pv_name: str, node: str, pods: list[Obj], attachments: list[Obj]) -> None:
        pv = self.ctx.store.get("PersistentVolume", pv_name)
        if pv is None:
            return
        modes = set(pv["spec"].get("accessModes") or [])
        elsewhere = [va for va in attachments
                     if va["spec"]["source"]["persistentVolumeName"] == pv_name and va["spec"]["nodeName"] != node]
        if elsewhere and not modes & {"ReadWriteMany", "ReadOnlyMany"}:
            for pod in pods:
                self.ctx.event(pod, "Warning", "FailedAttachVolume",
                               f'Multi-Attach error for volume "{pv_name}" Volume is already exclusively attached to '
                               f"node {elsewhere[0]['spec']['nodeName']} and can't be attached to another", self.name)
            return
        driver = pv["spec"]["csi"]["driver"]
        va: Obj = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "VolumeAttachment",
            "metadata": {"name": volume_attachment_name(driver, pv_name, node)},
            "spec": {"attacher": driver, "nodeName": node, "source": {"persistentVolumeName": pv_name}},
            "status": {"attached": False},
        }
        try:
            self.ctx.store.create(va)
        except AlreadyExistsError:
            pass

    def _sync(self, va: Obj, pods: list[Obj]) -> None:
        """external-attacher's part."""
        name = va["metadata"]["name"]
        driver = va["spec"]["attacher"]
        node = va["spec"]["nodeName"]
        pv_name = va["spec"]["source"]["persistentVolumeName"]
        finalizer = attacher_finalizer(driver)
        pv = self.ctx.store.get("PersistentVolume", pv_name)
        if deleting(va):
            if pv is not None and (va.get("status") or {}).get("attached"):
                try:
                    self.ctx.controller(driver).controller.ControllerUnpublishVolume(
                        csi_pb2.ControllerUnpublishVolumeRequest(volume_id=pv["spec"]["csi"]["volumeHandle"],
                                                                 node_id=node), timeout=120)
                except grpc.RpcError as exc:
                    def detach_error(o: Obj, m: str = rpc_message(exc)) -> None:
                        o.setdefault("status", {})["detachError"] = {"message": m, "time": now_rfc3339()}
                    self.ctx.mutate("VolumeAttachment", name, None, detach_error)
                    self.backoff.failed(va["metadata"]["uid"])
                    return
            self.backoff.ok(va["metadata"]["uid"])
            self.ctx.mutate("VolumeAttachment", name, None, lambda o: remove_finalizer(o, finalizer))
            others = [o for o in self.ctx.store.list_of("VolumeAttachment")
                      if o["spec"]["source"]["persistentVolumeName"] == pv_name and o["metadata"]["name"] != name]
            if pv is not None and not others:
                self.ctx.mutate("PersistentVolume", pv_name, None, lambda o: remove_finalizer(o, finalizer))
            return
        if (va.get("status") or {}).get("attached") or pv is None:
            return
        self.ctx.mutate("VolumeAttachment", name, None, lambda o: add_finalizer(o, finalizer))
        self.ctx.mutate("PersistentVolume", pv_name, None, lambda o: add_finalizer(o, finalizer))
        csi = pv["spec"]["csi"]
        request = csi_pb2.ControllerPublishVolumeRequest(
            volume_id=csi["volumeHandle"], node_id=node, volume_capability=pv_capability(pv),
            readonly=bool(csi.get("readOnly")), volume_context=dict(csi.get("volumeAttributes") or {}))
        try:
            reply = self.ctx.controller(driver).controller.ControllerPublishVolume(request, timeout=120)
        except grpc.RpcError as exc:
            message = rpc_message(exc)

            def attach_error(o: Obj) -> None:
                o.setdefault("status", {})["attachError"] = {"message": message, "time": now_rfc3339()}
            self.ctx.mutate("VolumeAttachment", name, None, attach_error)
            for pod in pods:
                self.ctx.event(pod, "Warning", "FailedAttachVolume",
                               f'AttachVolume.Attach failed for volume "{pv_name}" : {message}', self.name)
            self.backoff.failed(va["metadata"]["uid"])
            return
        self.backoff.ok(va["metadata"]["uid"])

        def attached(o: Obj) -> None:
            o["status"] = {"attached": True, "attachmentMetadata": dict(reply.publish_context)}
        self.ctx.mutate("VolumeAttachment", name, None, attached)
        for pod in pods:
            self.ctx.event(pod, "Normal", "SuccessfulAttachVolume",
                           f'AttachVolume.Attach succeeded for volume "{pv_name}"', self.name)
