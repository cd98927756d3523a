"""The PV controller (binding, release, protection) and the scheduler's volume-aware part."""

from __future__ import annotations

from typing import Any

from elastivol.lab.context import Loop
from elastivol.lab.objects import (
    HOSTNAME_LABEL,
    Obj,
    annots,
    deleting,
    node_selector_matches,
    parse_quantity,
    pvc_request,
    remove_finalizer,
    set_condition,
)

PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
WFFC = "WaitForFirstConsumer"


def pods_using(pods: list[Obj], namespace: str, claim: str) -> list[Obj]:
    return [p for p in pods if p["metadata"].get("namespace") == namespace
            and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            and any((v.get("persistentVolumeClaim") or {}).get("claimName") == claim
                    for v in p.get("spec", {}).get("volumes") or [])]


def claim_names(pod: Obj) -> list[str]:
    return [v["persistentVolumeClaim"]["claimName"] for v in pod.get("spec", {}).get("volumes") or []
            if v.get("persistentVolumeClaim")]


def binding_mode(sc: Obj | None) -> str:
    return str((sc or {}).get("volumeBindingMode") or "Immediate")


class PVController(Loop):
    name = "persistentvolume-controller"

    def reconcile(self) -> None:
        store = self.ctx.store
        pvs = store.list_of("PersistentVolume")
        pods = store.list_of("Pod")
        for pvc in store.list_of("PersistentVolumeClaim"):
            if deleting(pvc):
                self._protect_claim(pvc, pods)
            else:
                self._sync_claim(pvc, pvs)
        for pv in store.list_of("PersistentVolume"):
            self._sync_volume(pv)

    # -- claims ----------------------------------------------------------------------------------
    def _protect_claim(self, pvc: Obj, pods: list[Obj]) -> None:
        meta = pvc["metadata"]
        users = pods_using(pods, meta["namespace"], meta["name"])
        if users:
            names = ", ".join(p["metadata"]["name"] for p in users)
            self.ctx.event(pvc, "Normal", "Terminating",
                           f"waiting for {PVC_PROTECTION}: the claim is in use by pod(s) {names}; "
                           "it is deleted when they are gone", self.name)
            return
        self.ctx.mutate("PersistentVolumeClaim", meta["name"], meta["namespace"],
                        lambda o: remove_finalizer(o, PVC_PROTECTION))

    def _sync_claim(self, pvc: Obj, pvs: list[Obj]) -> None:
        meta, spec = pvc["metadata"], pvc.get("spec", {})
        phase = pvc.get("status", {}).get("phase")
        if phase == "Bound":
            pv = self.ctx.store.get("PersistentVolume", spec.get("volumeName", ""))
            if pv is None:
                self._set_claim_phase(pvc, "Lost")
                self.ctx.event(pvc, "Warning", "ClaimLost",
                               f"Bound claim has lost its PersistentVolume {spec.get('volumeName')}. "
                               "Data on the volume is lost!", self.name)
            return
        if phase == "Lost":
            return
        pv = self._find_volume(pvc, pvs)
        if pv is not None:
            self._bind(pv, pvc)
            return
        if spec.get("volumeName"):
            return  # waits for that PV to appear (or to be released by its claim)
        class_name = spec.get("storageClassName")
        if not class_name:
            self.ctx.event(pvc, "Normal", "FailedBinding",
                           "no persistent volumes available for this claim and no storage class is set", self.name)
            return
        sc = self.ctx.store.get("StorageClass", class_name)
        if sc is None:
            self.ctx.event(pvc, "Warning", "ProvisioningFailed",
                           f'storageclass.storage.k8s.io "{class_name}" not found', self.name)
            return
        if binding_mode(sc) == WFFC and not annots(pvc).get(SELECTED_NODE):
            self.ctx.event(pvc, "Normal", "WaitForFirstConsumer",
                           "waiting for first consumer to be created before binding", self.name)
            return
        provisioner = sc.get("provisioner", "")
        if annots(pvc).get(STORAGE_PROVISIONER) != provisioner:
            def mark(o: Obj) -> None:
                annots(o)[STORAGE_PROVISIONER] = provisioner
                annots(o)[BETA_STORAGE_PROVISIONER] = provisioner
            self.ctx.mutate("PersistentVolumeClaim", meta["name"], meta["namespace"], mark)
        suffix = "" if self.ctx.is_ours(provisioner) else \
            " (the lab runs only block.csi.elastivol.io and file.csi.elastivol.io, so nothing will)"
        self.ctx.event(pvc, "Normal", "ExternalProvisioning",
                       f"Waiting for a volume to be created either by the external provisioner '{provisioner}' or "
                       f"manually by the system administrator{suffix}.", self.name)

    def _find_volume(self, pvc: Obj, pvs: list[Obj]) -> Obj | None:
        meta, spec = pvc["metadata"], pvc.get("spec", {})
        want = spec.get("volumeName")
        for pv in pvs:
            ref = pv.get("spec", {}).get("claimRef") or {}
            if ref.get("name") == meta["name"] and ref.get("namespace", "default") == meta["namespace"] \
                    and ref.get("uid", meta["uid"]) == meta["uid"] and (not want or want == pv["metadata"]["name"]):
                return pv if not deleting(pv) else None
        if want:
            found = [p for p in pvs if p["metadata"]["name"] == want and not deleting(p)]
            if not found:
                return None
            pv = found[0]
            if pv.get("spec", {}).get("claimRef"):
                self.ctx.event(pvc, "Warning", "FailedBinding",
                               f'volume "{want}" already bound to a different claim.', self.name)
                return None
            return pv if self._fits(pv, pvc, check_class=False) else None
        fits = [pv for pv in pvs if not deleting(pv) and not pv.get("spec", {}).get("claimRef")
                and pv.get("status", {}).get("phase") in (None, "Available") and self._fits(pv, pvc)]
        fits.sort(key=lambda pv: parse_quantity(pv["spec"].get("capacity", {}).get("storage", "0")))
        return fits[0] if fits else None

    def _fits(self, pv: Obj, pvc: Obj, check_class: bool = True) -> bool:
        pv_spec, spec = pv.get("spec", {}), pvc.get("spec", {})
        if check_class and (pv_spec.get("storageClassName") or "") != (spec.get("storageClassName") or ""):
            return False
        if not set(spec.get("accessModes") or []) <= set(pv_spec.get("accessModes") or []):
            return False
        if (pv_spec.get("volumeMode") or "Filesystem") != (spec.get("volumeMode") or "Filesystem"):
            return False
        return parse_quantity(pv_spec.get("capacity", {}).get("storage", "0")) >= pvc_request(pvc)

    def _bind(self, pv: Obj, pvc: Obj) -> None:
        meta = pvc["metadata"]

        def bind_pv(o: Obj) -> None:
            ref = o["spec"].get("claimRef") or {}
            if not ref:
                annots(o)["pv.kubernetes.io/bound-by-controller"] = "yes"
            o["spec"]["claimRef"] = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": meta["name"],
                                     "namespace": meta["namespace"], "uid": meta["uid"]}
            o.setdefault("status", {})["phase"] = "Bound"

        bound = self.ctx.mutate("PersistentVolume", pv["metadata"]["name"], None, bind_pv)
        if bound is None:
            return

        def bind_pvc(o: Obj) -> None:
            o["spec"]["volumeName"] = bound["metadata"]["name"]
            annots(o)["pv.kubernetes.io/bind-completed"] = "yes"
            if not pvc["spec"].get("volumeName"):
                annots(o)["pv.kubernetes.io/bound-by-controller"] = "yes"
            status = o.setdefault("status", {})
            status["phase"] = "Bound"
            status["accessModes"] = bound["spec"].get("accessModes", [])
            status["capacity"] = {"storage": bound["spec"].get("capacity", {}).get("storage", "0")}

        self.ctx.mutate("PersistentVolumeClaim", meta["name"], meta["namespace"], bind_pvc)

    def _set_claim_phase(self, pvc: Obj, phase: str) -> None:
        def change(o: Obj) -> None:
            o.setdefault("status", {})["phase"] = phase
        self.ctx.mutate("PersistentVolumeClaim", pvc["metadata"]["name"], pvc["metadata"]["namespace"], change)

    # -- volumes ---------------------------------------------------------------------------------
    def _sync_volume(self, pv: Obj) -> None:
        name = pv["metadata"]["name"]
        spec = pv.get("spec", {})
        ref = spec.get("claimRef") or {}
        phase = pv.get("status", {}).get("phase")
        new_phase = phase
        if not ref:
            new_phase = "Available" if phase in (None, "Pending", "Available") else phase
        else:
            claim = self.ctx.store.get("PersistentVolumeClaim", ref.get("name", ""), ref.get("namespace", "default"))
            gone = claim is None or (ref.get("uid") and claim["metadata"]["uid"] != ref["uid"])
            if gone and phase == "Bound":
                new_phase = "Released"
            elif not gone and phase in (None, "Pending", "Available") and claim is not None \
                    and claim.get("status", {}).get("phase") == "Bound":
                new_phase = "Bound"
        if new_phase != phase:
            def change(o: Obj) -> None:
                o.setdefault("status", {})["phase"] = new_phase
            self.ctx.mutate("PersistentVolume", name, None, change)
            if new_phase == "Released" and (spec.get("persistentVolumeReclaimPolicy") or "Retain") == "Retain":
                self.ctx.event(pv, "Normal", "VolumeReleased",
                               f"claim {ref.get('namespace')}/{ref.get('name')} was deleted; reclaim policy Retain "
                               "keeps the volume and its data (delete the PV, then the volume, by hand)", self.name)
        if deleting(pv):
            self._explain_terminating(pv, new_phase)

    def _explain_terminating(self, pv: Obj, phase: str | None) -> None:
        name = pv["metadata"]["name"]
        finalizers = pv["metadata"].get("finalizers") or []
        if PV_PROTECTION in finalizers and phase != "Bound":
            self.ctx.mutate("PersistentVolume", name, None, lambda o: remove_finalizer(o, PV_PROTECTION))
            finalizers = [f for f in finalizers if f != PV_PROTECTION]
        reasons: list[str] = []
        if PV_PROTECTION in finalizers:
            ref = pv["spec"].get("claimRef") or {}
            reasons.append(f"{PV_PROTECTION}: the PV is still bound to claim {ref.get('namespace')}/{ref.get('name')}; "
                           "delete the claim (and the pods using it) first")
        for f in finalizers:
            if f.startswith("external-attacher/"):
                vas = [va for va in self.ctx.store.list_of("VolumeAttachment")
                       if va["spec"]["source"].get("persistentVolumeName") == name]
                where = ", ".join(f"{va['spec']['nodeName']} (VolumeAttachment {va['metadata']['name']})" for va in vas)
                reasons.append(f"{f}: the volume is still attached to node {where or '?'}; "
                               "delete the pod using it so the volume is unmounted and detached")
        for reason in reasons:
            self.ctx.event(pv, "Warning", "Terminating", f"PersistentVolume {name} cannot be removed yet: {reason}",
                           self.name)


class Scheduler(Loop):
    name = "default-scheduler"

    def reconcile(self) -> None:
        store = self.ctx.store
        nodes = store.list_of("Node")
        pods = store.list_of("Pod")
        for pod in pods:
            if pod["spec"].get("nodeName") or deleting(pod):
                continue
            self._schedule(pod, nodes, pods)

    def _schedule(self, pod: Obj, nodes: list[Obj], pods: list[Obj]) -> None:
        meta = pod["metadata"]
        ns = meta["namespace"]
        claims: list[Obj] = []
        for claim in claim_names(pod):
            pvc = self.ctx.store.get("PersistentVolumeClaim", claim, ns)
            if pvc is None or deleting(pvc):
                state = "not found" if pvc is None else "is being deleted"
                self._unschedulable(pod, len(nodes), f'persistentvolumeclaim "{claim}" {state}')
                return
            claims.append(pvc)
        unbound_wait: list[Obj] = []
        for pvc in claims:
            if pvc.get("status", {}).get("phase") == "Bound":
                continue
            sc = self.ctx.store.get("StorageClass", pvc["spec"].get("storageClassName") or "")
            if sc is None or binding_mode(sc) != WFFC or pvc["spec"].get("volumeName"):
                self._unschedulable(pod, len(nodes), "pod has unbound immediate PersistentVolumeClaims")
                return
            unbound_wait.append(pvc)
        reasons: dict[str, int] = {}
        fit: list[Obj] = []
        for node in nodes:
            why = self._why_not(pod, node, claims, pods)
            if why:
                reasons[why] = reasons.get(why, 0) + 1
            else:
                fit.append(node)
        if not fit:
            # As kube-scheduler words it: "N node(s) REASON" for each reason, sorted as strings.
            detail = ", ".join(sorted(f"{n} node(s) {why}" for why, n in reasons.items()))
            self._unschedulable(pod, len(nodes), detail + self._missing_labels(claims, nodes))
            return
        chosen = self._pick(fit, pods, unbound_wait)
        node_name = chosen["metadata"]["name"]
        if unbound_wait:
            for pvc in unbound_wait:
                if annots(pvc).get(SELECTED_NODE) != node_name:
                    def select(o: Obj, n: str = node_name) -> None:
                        annots(o)[SELECTED_NODE] = n
                    self.ctx.mutate("PersistentVolumeClaim", pvc["metadata"]["name"], ns, select)
            return  # bound once the provisioner has made the volumes in that node's zone

        def bind(o: Obj) -> None:
            o["spec"]["nodeName"] = node_name
            set_condition(o, "PodScheduled", "True")
        self.ctx.mutate("Pod", meta["name"], ns, bind)
        self.ctx.event(pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{meta['name']} to {node_name}",
                       self.name)

    def _why_not(self, pod: Obj, node: Obj, claims: list[Obj], pods: list[Obj]) -> str:
        labels: dict[str, str] = node["metadata"].get("labels", {})
        spec = pod["spec"]
        selector: dict[str, Any] = spec.get("nodeSelector") or {}
        affinity = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                    .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
        if any(labels.get(k) != str(v) for k, v in selector.items()) or \
                not node_selector_matches(affinity.get("nodeSelectorTerms") or [], labels):
            return "didn't match Pod's node affinity/selector"
        for pvc in claims:
            pv_name = pvc["spec"].get("volumeName")
            if pvc.get("status", {}).get("phase") == "Bound" and pv_name:
                pv = self.ctx.store.get("PersistentVolume", pv_name) or {}
                terms = ((pv.get("spec", {}).get("nodeAffinity") or {}).get("required") or {}) \
                    .get("nodeSelectorTerms") or []
                if not node_selector_matches(terms, labels):
                    return "had volume node affinity conflict"
            elif annots(pvc).get(SELECTED_NODE) not in (None, node["metadata"]["name"]):
                return "didn't match the node already selected for an unbound WaitForFirstConsumer claim"
            else:
                sc = self.ctx.store.get("StorageClass", pvc["spec"].get("storageClassName") or "") or {}
                allowed = [{"matchExpressions": [{"key": e.get("key"), "operator": "In", "values": e.get("values")}
                                                 for e in t.get("matchLabelExpressions") or []]}
                           for t in sc.get("allowedTopologies") or []]
                if not node_selector_matches(allowed, labels):
                    return "didn't find available persistent volumes to bind"
            if "ReadWriteOncePod" in (pvc["spec"].get("accessModes") or []):
                others = [p for p in pods_using(pods, pvc["metadata"]["namespace"], pvc["metadata"]["name"])
                          if p["metadata"]["uid"] != pod["metadata"]["uid"] and p["spec"].get("nodeName")]
                if others:
                    return "has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"
        return ""

    def _missing_labels(self, claims: list[Obj], nodes: list[Obj]) -> str:
        """Why a volume node affinity cannot match: a key its PV requires that no node carries (a PV
        written for another driver's topology key, say). kube-scheduler stops at "conflict"."""
        have = {k for n in nodes for k in (n["metadata"].get("labels") or {})}
        hints = []
        for pvc in claims:
            pv = self.ctx.store.get("PersistentVolume", pvc["spec"].get("volumeName") or "") or {}
            terms = ((pv.get("spec", {}).get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms") or []
            for term in terms:
                for e in term.get("matchExpressions") or []:
                    if e.get("key") not in have:
                        values = ", ".join(str(v) for v in e.get("values") or [])
                        hints.append(f'PersistentVolume "{pv["metadata"]["name"]}" requires {e.get("key")} '
                                     f'{str(e.get("operator", "")).lower()} [{values}], a label no node has')
        return "; " + "; ".join(hints) if hints else ""

    def _pick(self, fit: list[Obj], pods: list[Obj], unbound: list[Obj]) -> Obj:
        for pvc in unbound:
            chosen = annots(pvc).get(SELECTED_NODE)
            for node in fit:
                if node["metadata"]["name"] == chosen:
                    return node
        load = {n["metadata"]["name"]: 0 for n in fit}
        for p in pods:
            if p["spec"].get("nodeName") in load:
                load[p["spec"]["nodeName"]] += 1
        return min(fit, key=lambda n: (load[n["metadata"]["name"]], n["metadata"]["labels"].get(HOSTNAME_LABEL, "")))

    def _unschedulable(self, pod: Obj, total: int, detail: str) -> None:
        message = f"0/{total} nodes are available: {detail}."
        meta = pod["metadata"]

        def change(o: Obj) -> bool:
            before = [dict(c) for c in o.get("status", {}).get("conditions", [])]
            set_condition(o, "PodScheduled", "False", "Unschedulable", message)
            o["status"].setdefault("phase", "Pending")
            return bool(before != o["status"]["conditions"])
        self.ctx.mutate("Pod", meta["name"], meta["namespace"], change)
        self.ctx.event(pod, "Warning", "FailedScheduling", message, self.name)
