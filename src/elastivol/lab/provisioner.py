"""external-provisioner: CreateVolume for pending claims, DeleteVolume for released volumes."""

from __future__ import annotations

import zlib

import grpc

from elastivol import BLOCK_DRIVER_NAME
from elastivol.client import BLOCK, MOUNT, CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.lab.binding import PROVISIONED_BY, PV_PROTECTION, SELECTED_NODE, STORAGE_PROVISIONER
from elastivol.lab.context import Loop, rpc_message
from elastivol.lab.modifier import UnusableClass, creation_class
from elastivol.lab.objects import (
    ACCESS_MODES,
    Obj,
    annots,
    deleting,
    format_quantity,
    pvc_request,
    remove_finalizer,
)
from elastivol.lab.store import AlreadyExistsError

PROVISIONER_FINALIZER = "external-provisioner.volume.kubernetes.io/finalizer"
FSTYPE_KEY = "csi.storage.k8s.io/fstype"
DEFAULT_FSTYPE = "ext4"  # the Helm chart's --default-fstype for the block driver


class ProvisioningError(Exception):
    pass


def capabilities(access_modes: list[str], volume_mode: str, fs_type: str,
                 mount_options: list[str]) -> list[csi_pb2.VolumeCapability]:
    access = BLOCK if volume_mode == "Block" else MOUNT
    return [volume_capability(access, ACCESS_MODES.get(m, m), fs_type=fs_type, mount_flags=tuple(mount_options))
            for m in access_modes]


def has_accessibility(client: CsiClient) -> bool:
    """Whether the plugin behind ``client`` advertises VOLUME_ACCESSIBILITY_CONSTRAINTS."""
    service = csi_pb2.PluginCapability.Service
    caps = client.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest(), timeout=30).capabilities
    return any(c.HasField("service") and c.service.type == service.VOLUME_ACCESSIBILITY_CONSTRAINTS for c in caps)


class Provisioner(Loop):
    name = "external-provisioner"

    def reconcile(self) -> None:
        store = self.ctx.store
        for pvc in store.list_of("PersistentVolumeClaim"):
            provisioner = annots(pvc).get(STORAGE_PROVISIONER)
            if deleting(pvc) or not self.ctx.is_ours(provisioner) or pvc.get("status", {}).get("phase") == "Bound" \
                    or pvc["spec"].get("volumeName"):
                continue
            if store.get("PersistentVolume", f"pvc-{pvc['metadata']['uid']}") is not None:
                continue  # made already; the PV controller binds it
            key = f"create/{pvc['metadata']['uid']}"
            if self.backoff.ready(key):
                self._provision(pvc, str(provisioner), key)
        for pv in store.list_of("PersistentVolume"):
            if self._wants_delete(pv):
                key = f"delete/{pv['metadata']['uid']}"
                if self.backoff.ready(key):
                    self._delete(pv, key)

    # -- create ----------------------------------------------------------------------------------
    def _provision(self, pvc: Obj, driver: str, key: str) -> None:
        meta, spec = pvc["metadata"], pvc["spec"]
        component = f"{driver}_{self.name}"
        sc = self.ctx.store.get("StorageClass", spec.get("storageClassName") or "")
        if sc is None:
            return
        class_name = sc["metadata"]["name"]
        pv_name = f"pvc-{meta['uid']}"
        self.ctx.event(pvc, "Normal", "Provisioning",
                       f'External provisioner is provisioning volume for claim "{meta["namespace"]}/{meta["name"]}"',
                       component)
        params = {str(k): str(v) for k, v in (sc.get("parameters") or {}).items()}
        fs_type = params.pop(FSTYPE_KEY, "") or (DEFAULT_FSTYPE if driver == BLOCK_DRIVER_NAME else "")
        volume_mode = spec.get("volumeMode") or "Filesystem"
        params.update({"csi.storage.k8s.io/pvc/name": meta["name"], "csi.storage.k8s.io/pvc/namespace": meta["namespace"],
                       "csi.storage.k8s.io/pv/name": pv_name})
        request = csi_pb2.CreateVolumeRequest(
            name=pv_name,
            capacity_range=csi_pb2.CapacityRange(required_bytes=pvc_request(pvc)),
            volume_capabilities=capabilities(spec.get("accessModes") or [], volume_mode,
                                             "" if volume_mode == "Block" else fs_type, sc.get("mountOptions") or []),
            parameters=params,
        )
        try:
            self._topology(request, pvc, sc, driver)
            self._content_source(request, pvc, driver)
            attributes_class, mutable = creation_class(self.ctx.store, pvc, driver)  # lab/modifier.py
            request.mutable_parameters.update(mutable)
            volume = self.ctx.controller(driver).controller.CreateVolume(request, timeout=300).volume
        except (grpc.RpcError, ProvisioningError, UnusableClass) as exc:
            message = rpc_message(exc) if isinstance(exc, grpc.RpcError) else str(exc)
            self.ctx.event(pvc, "Warning", "ProvisioningFailed",
                           f'failed to provision volume with StorageClass "{class_name}": {message}', component)
            self.backoff.failed(key)
            return
        self.backoff.ok(key)
        reclaim = sc.get("reclaimPolicy") or "Delete"
        finalizers = [PV_PROTECTION] + ([PROVISIONER_FINALIZER] if reclaim == "Delete" else [])
        pv: Obj = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {PROVISIONED_BY: driver,
                                                          "volume.kubernetes.io/provisioner-deletion-secret-name": "",
                                                          "volume.kubernetes.io/provisioner-deletion-secret-namespace": ""},
                         "finalizers": finalizers},
            "spec": {
                "accessModes": list(spec.get("accessModes") or []),
                "capacity": {"storage": format_quantity(volume.capacity_bytes or pvc_request(pvc))},
                "csi": {"driver": driver, "volumeHandle": volume.volume_id,
                        "volumeAttributes": {**dict(volume.volume_context),
                                             "storage.kubernetes.io/csiProvisionerIdentity": f"lab-{driver}"}},
                "persistentVolumeReclaimPolicy": reclaim,
                "storageClassName": class_name,
                "volumeMode": volume_mode,
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": meta["name"],
                             "namespace": meta["namespace"], "uid": meta["uid"]},
            },
            "status": {"phase": "Pending"},
        }
        if fs_type and volume_mode != "Block":
            pv["spec"]["csi"]["fsType"] = fs_type
        if attributes_class:
            pv["spec"]["volumeAttributesClassName"] = attributes_class
        if sc.get("mountOptions"):
            pv["spec"]["mountOptions"] = list(sc["mountOptions"])
        terms = [{"matchExpressions": [{"key": k, "operator": "In", "values": [v]}
                                       for k, v in sorted(t.segments.items())]}
                 for t in volume.accessible_topology]
        if terms:
            pv["spec"]["nodeAffinity"] = {"required": {"nodeSelectorTerms": terms}}
        try:
            self.ctx.store.create(pv)
        except AlreadyExistsError:
            pass
        self.ctx.event(pvc, "Normal", "ProvisioningSucceeded", f"Successfully provisioned volume {pv_name}", component)

    def _topology(self, request: csi_pb2.CreateVolumeRequest, pvc: Obj, sc: Obj, driver: str) -> None:
        if not self.ctx.accessibility.get(driver, True):
            # As external-provisioner: a plugin without VOLUME_ACCESSIBILITY_CONSTRAINTS gets no
            # topology, so its claims need no node (an Immediate efs-ap claim binds at once).
            return
        selected = annots(pvc).get(SELECTED_NODE)
        segments: list[dict[str, str]] = []
        if selected:
            topo = self.ctx.node_topology.get((driver, selected))
            if topo is None:
                raise ProvisioningError(f'selected node "{selected}" has no {driver} node plugin registered')
            segments = [topo]
        else:
            allowed = [{e["key"]: v for e in t.get("matchLabelExpressions") or [] for v in e.get("values") or []}
                       for t in sc.get("allowedTopologies") or []]
            for (drv, _node), topo in sorted(self.ctx.node_topology.items()):
                if drv != driver or topo in segments:
                    continue
                if allowed and not any(all(topo.get(k) == v for k, v in a.items()) for a in allowed):
                    continue
                segments.append(topo)
            if not segments and not allowed:
                raise ProvisioningError(f"no available topology found: no node has registered {driver} yet")
            if not segments:
                raise ProvisioningError("no node's topology satisfies the StorageClass's allowedTopologies")
            # Like external-provisioner, start the preferred list at a place that depends on the claim,
            # so claims spread over zones.
            start = zlib.crc32(pvc["metadata"]["name"].encode()) % len(segments)
            segments = segments[start:] + segments[:start]
        for seg in segments:
            request.accessibility_requirements.requisite.add(segments=seg)
            request.accessibility_requirements.preferred.add(segments=seg)

    def _content_source(self, request: csi_pb2.CreateVolumeRequest, pvc: Obj, driver: str) -> None:
        source = pvc["spec"].get("dataSourceRef") or pvc["spec"].get("dataSource")
        if not source:
            return
        ns = pvc["metadata"]["namespace"]
        kind, name = source.get("kind"), source.get("name", "")
        if kind == "VolumeSnapshot":
            vs = self.ctx.store.get("VolumeSnapshot", name, ns)
            if vs is None:
                raise ProvisioningError(f"error getting handle for DataSource Type VolumeSnapshot by Name {name}: "
                                        f'volumesnapshots.snapshot.storage.k8s.io "{name}" not found')
            status = vs.get("status") or {}
            if not status.get("readyToUse"):
                raise ProvisioningError(f"error getting handle for DataSource Type VolumeSnapshot by Name {name}: "
                                        f"snapshot {name} is not Ready")
            content = self.ctx.store.get("VolumeSnapshotContent", status.get("boundVolumeSnapshotContentName", ""))
            handle = ((content or {}).get("status") or {}).get("snapshotHandle")
            if content is None or not handle:
                raise ProvisioningError(f"snapshot {name} has no bound VolumeSnapshotContent with a snapshot handle")
            if content["spec"].get("driver") != driver:
                raise ProvisioningError(f"snapshot {name} was taken by {content['spec'].get('driver')}, "
                                        f"not by {driver}: restore it with a StorageClass of that driver")
            request.volume_content_source.snapshot.snapshot_id = handle
        elif kind == "PersistentVolumeClaim":
            src = self.ctx.store.get("PersistentVolumeClaim", name, ns)
            if src is None or src.get("status", {}).get("phase") != "Bound":
                raise ProvisioningError(f'error getting handle for DataSource Type PersistentVolumeClaim by Name '
                                        f'{name}: claim "{name}" is not bound (or does not exist)')
            if (src["spec"].get("storageClassName") or "") != (pvc["spec"].get("storageClassName") or ""):
                raise ProvisioningError(f'the source PVC and destination PVCs must be in the same storage class for '
                                        f'cloning. Source is in "{src["spec"].get("storageClassName")}", but new PVC '
                                        f'is in "{pvc["spec"].get("storageClassName")}"')
            pv = self.ctx.store.get("PersistentVolume", src["spec"]["volumeName"])
            if pv is None:
                raise ProvisioningError(f"the PV of claim {name} is gone")
            request.volume_content_source.volume.volume_id = pv["spec"]["csi"]["volumeHandle"]
        else:
            raise ProvisioningError(f"dataSource kind {kind!r} is not supported: use a VolumeSnapshot or a "
                                    "PersistentVolumeClaim")

    # -- delete ----------------------------------------------------------------------------------
    def _wants_delete(self, pv: Obj) -> bool:
        if pv["metadata"].get("annotations", {}).get(PROVISIONED_BY) not in (None, "") and \
                not self.ctx.is_ours(pv["metadata"]["annotations"][PROVISIONED_BY]):
            return False
        if not self.ctx.is_ours(pv.get("spec", {}).get("csi", {}).get("driver")):
            return False
        if (pv["spec"].get("persistentVolumeReclaimPolicy") or "Retain") != "Delete":
            return False
        if PROVISIONED_BY not in (pv["metadata"].get("annotations") or {}):
            return False
        phase = pv.get("status", {}).get("phase")
        return phase == "Released" or (deleting(pv) and phase in ("Available", "Failed", "Released"))

    def _delete(self, pv: Obj, key: str) -> None:
        name = pv["metadata"]["name"]
        driver = pv["spec"]["csi"]["driver"]
        try:
            self.ctx.controller(driver).controller.DeleteVolume(
                csi_pb2.DeleteVolumeRequest(volume_id=pv["spec"]["csi"]["volumeHandle"]), timeout=120)
        except grpc.RpcError as exc:
            self.ctx.event(pv, "Warning", "VolumeFailedDelete", rpc_message(exc), f"{driver}_{self.name}")
            self.backoff.failed(key)
            return
        self.backoff.ok(key)
        self.ctx.mutate("PersistentVolume", name, None, lambda o: remove_finalizer(o, PROVISIONER_FINALIZER))
        self.ctx.store.delete("PersistentVolume", name)
