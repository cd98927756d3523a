"""external-resizer: ControllerExpandVolume when a bound claim asks for more than its volume has."""

from __future__ import annotations

import grpc

from elastivol.csi import csi_pb2
from elastivol.lab.attacher import pv_capability
from elastivol.lab.context import Loop, rpc_message
from elastivol.lab.objects import (
    Obj,
    drop_condition,
    format_quantity,
    parse_quantity,
    pvc_request,
    set_condition,
)

RESIZE_PENDING = "FileSystemResizePending"
RESIZE_PENDING_MESSAGE = "Waiting for user to (re-)start a pod to finish file system resize of volume on node."


class Resizer(Loop):
    name = "external-resizer"

    def reconcile(self) -> None:
        for pvc, pv in self.ctx.bound_volumes():
            want = pvc_request(pvc)
            have = parse_quantity(pv["spec"].get("capacity", {}).get("storage", "0"))
            key = f"{pvc['metadata']['uid']}/{want}"
            if want > have and self.backoff.ready(key):
                self._expand(pvc, pv, want, key)

    def _expand(self, pvc: Obj, pv: Obj, want: int, key: str) -> None:
        meta = pvc["metadata"]
        driver = pv["spec"]["csi"]["driver"]
        component = f"{self.name} {driver}"
        pv_name = pv["metadata"]["name"]

        def resizing(o: Obj) -> None:
            set_condition(o, "Resizing", "True")
            o["status"]["allocatedResources"] = {"storage": format_quantity(want)}
        self.ctx.mutate("PersistentVolumeClaim", meta["name"], meta["namespace"], resizing)
        self.ctx.event(pvc, "Normal", "Resizing", f"External resizer is resizing volume {pv_name}", component)
        try:
            reply = self.ctx.controller(driver).controller.ControllerExpandVolume(
                csi_pb2.ControllerExpandVolumeRequest(
                    volume_id=pv["spec"]["csi"]["volumeHandle"], capacity_range=csi_pb2.CapacityRange(required_bytes=want),
                    volume_capability=pv_capability(pv)), timeout=300)
        except grpc.RpcError as exc:
            self.ctx.mutate("PersistentVolumeClaim", meta["name"], meta["namespace"],
                            lambda o: drop_condition(o, "Resizing"))
            self.ctx.event(pvc, "Warning", "VolumeResizeFailed",
                           f'resize volume "{pv_name}" by resizer "{driver}" failed: {rpc_message(exc)}', component)
            self.backoff.failed(key)
            return
        self.backoff.ok(key)
        new_size = format_quantity(max(reply.capacity_bytes, want))

        def grow_pv(o: Obj) -> None:
            o["spec"]["capacity"] = {"storage": new_size}
        self.ctx.mutate("PersistentVolume", pv_name, None, grow_pv)
        node_step = reply.node_expansion_required

        def done(o: Obj) -> None:
            drop_condition(o, "Resizing")
            if node_step:
                set_condition(o, RESIZE_PENDING, "True", "", RESIZE_PENDING_MESSAGE)
            else:
                o["status"]["capacity"] = {"storage": new_size}
                o["status"].pop("allocatedResources", None)
        self.ctx.mutate("PersistentVolumeClaim", meta["name"], meta["namespace"], done)
        if node_step:
            self.ctx.event(pvc, "Normal", "FileSystemResizeRequired", "Require file system resize of volume on node",
                           component)
        else:
            self.ctx.event(pvc, "Normal", "VolumeResizeSuccessful", "Resize volume succeeded", component)
