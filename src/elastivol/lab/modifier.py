"""external-resizer's modify controller: ControllerModifyVolume when a claim names a new VolumeAttributesClass.

As on a cluster (KEP 3751, external-resizer's modifycontroller):

* a bound claim whose ``spec.volumeAttributesClassName`` differs from
  ``status.currentVolumeAttributesClassName`` is worked on: ``status.modifyVolumeStatus`` names the
  target and says ``InProgress``; the VolumeAttributesClass's ``parameters`` go to the driver as
  ``mutable_parameters``;
* success: the PV's ``spec.volumeAttributesClassName`` and the claim's current class become the
  target, ``modifyVolumeStatus`` goes away;
* INVALID_ARGUMENT or OUT_OF_RANGE is final (``Infeasible``, the driver's message in the
  ``ModifyingVolume`` condition and a ``VolumeModifyFailed`` event): nothing is retried until the user
  points the claim at another class (or back at the current one, which ends the attempt);
  any other code is retried with backoff while the status stays ``InProgress``;
* a class that does not exist (yet) leaves the claim ``Pending``;
* while a non-final attempt is under way, a newer class waits: the controller keeps working towards
  the recorded target, as external-resizer does.

At provisioning, the claim's class is handed to CreateVolume as ``mutable_parameters``
(:func:`creation_class`), and the class a claim starts with is its current class once bound.
"""

from __future__ import annotations

import grpc

from elastivol.csi import csi_pb2
from elastivol.lab.context import Loop, rpc_message
from elastivol.lab.objects import Obj, drop_condition, set_condition
from elastivol.lab.store import Store

KIND = "VolumeAttributesClass"
MODIFYING = "ModifyingVolume"
# Codes after which external-resizer marks the modification Infeasible and stops retrying.
INFEASIBLE = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE)


class UnusableClass(Exception):
    """The claim's VolumeAttributesClass cannot be used to create its volume."""


def creation_class(store: Store, pvc: Obj, driver: str) -> tuple[str, dict[str, str]]:
    """(class name, mutable_parameters) for CreateVolume of ``pvc``; ("", {}) when it names none."""
    name = str(pvc["spec"].get("volumeAttributesClassName") or "")
    if not name:
        return "", {}
    vac = store.get(KIND, name)
    if vac is None:
        raise UnusableClass(f'volumeattributesclass.storage.k8s.io "{name}" not found')
    if vac.get("driverName") != driver:
        raise UnusableClass(f'VolumeAttributesClass "{name}" is for driver {vac.get("driverName")}, not {driver}')
    return name, {str(k): str(v) for k, v in (vac.get("parameters") or {}).items()}


class Modifier(Loop):
    name = "external-resizer"

    def reconcile(self) -> None:
        for pvc, pv in self.ctx.bound_volumes():
            self._one(pvc, pv)

    def _one(self, pvc: Obj, pv: Obj) -> None:
        meta, status = pvc["metadata"], pvc.get("status") or {}
        wanted = str(pvc["spec"].get("volumeAttributesClassName") or "")
        if "currentVolumeAttributesClassName" not in status and pv["spec"].get("volumeAttributesClassName"):
            # A claim provisioned with a class: that class is what the volume has.
            self._set_current(pvc, str(pv["spec"]["volumeAttributesClassName"]))
            return
        current = str(status.get("currentVolumeAttributesClassName") or "")
        mvs = status.get("modifyVolumeStatus") or {}
        target = wanted
        if mvs.get("status") == "InProgress" and mvs.get("targetVolumeAttributesClassName"):
            target = str(mvs["targetVolumeAttributesClassName"])  # finish (or fail finally) before a newer class
        if target == current or not target:
            if mvs:  # the user went back to the current class (or none): the attempt ends
                self.ctx.mutate("PersistentVolumeClaim", meta["name"], meta["namespace"], _clear_attempt)
            return
        if mvs.get("status") == "Infeasible" and mvs.get("targetVolumeAttributesClassName") == target:
            return  # final: retried only when the claim names another class
        driver = pv["spec"]["csi"]["driver"]
        component = f"{self.name} {driver}"
        vac = self.ctx.store.get(KIND, target)
        if vac is None or vac.get("driverName") != driver:
            why = (f"VAC {target} does not exist." if vac is None else
                   f"VAC {target} is for driver {vac.get('driverName')}, not {driver}.")
            self._status(pvc, target, "Pending")
            self.ctx.event(pvc, "Warning", "VolumeModifyFailed", why, component)
            return
        key = f"{meta['uid']}/{target}"
        if not self.backoff.ready(key):
            return
        self._status(pvc, target, "InProgress")
        self.ctx.event(pvc, "Normal", "VolumeModify",
                       f"external resizer is modifying volume {meta['name']} with vac {target}", component)
        try:
            self.ctx.controller(driver).controller.ControllerModifyVolume(
                csi_pb2.ControllerModifyVolumeRequest(
                    volume_id=pv["spec"]["csi"]["volumeHandle"],
                    mutable_parameters={str(k): str(v) for k, v in (vac.get("parameters") or {}).items()}),
                timeout=600)
        except grpc.RpcError as exc:
            final = exc.code() in INFEASIBLE
            message = f"ModifyVolume failed with error {rpc_message(exc)}. Waiting for retry."

            def failed(o: Obj) -> None:
                o.setdefault("status", {})["modifyVolumeStatus"] = {
                    "targetVolumeAttributesClassName": target, "status": "Infeasible" if final else "InProgress"}
                set_condition(o, MODIFYING, "True", "", message)
            self.ctx.mutate("PersistentVolumeClaim", meta["name"], meta["namespace"], failed)
            self.ctx.event(pvc, "Warning", "VolumeModifyFailed", rpc_message(exc), component)
            self.backoff.failed(key)
            return
        self.backoff.ok(key)

        def pv_done(o: Obj) -> None:
            o["spec"]["volumeAttributesClassName"] = target
        self.ctx.mutate("PersistentVolume", pv["metadata"]["name"], None, pv_done)
        self._set_current(pvc, target)
        self.ctx.event(pvc, "Normal", "VolumeModifySuccessful",
                       f"external resizer modified volume {meta['name']} with vac {target} successfully", component)

    def _status(self, pvc: Obj, target: str, state: str) -> None:
        def change(o: Obj) -> bool:
            mvs = {"targetVolumeAttributesClassName": target, "status": state}
            if o.get("status", {}).get("modifyVolumeStatus") == mvs:
                return False
            o.setdefault("status", {})["modifyVolumeStatus"] = mvs
            if state == "InProgress":
                set_condition(o, MODIFYING, "True", "", f"ModifyVolume operation in progress towards {target}")
            return True
        self.ctx.mutate("PersistentVolumeClaim", pvc["metadata"]["name"], pvc["metadata"]["namespace"], change)

    def _set_current(self, pvc: Obj, name: str) -> None:
        def change(o: Obj) -> None:
            o.setdefault("status", {})["currentVolumeAttributesClassName"] = name
            _clear_attempt(o)
        self.ctx.mutate("PersistentVolumeClaim", pvc["metadata"]["name"], pvc["metadata"]["namespace"], change)


def _clear_attempt(o: Obj) -> None:
    o.get("status", {}).pop("modifyVolumeStatus", None)
    drop_condition(o, MODIFYING)
