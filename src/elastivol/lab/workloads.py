"""StatefulSet and Deployment controllers: pods (and per-replica claims) from a template."""

from __future__ import annotations

import copy
import hashlib
import secrets

from elastivol.lab.binding import PVC_PROTECTION
from elastivol.lab.context import Loop
from elastivol.lab.objects import Obj, deleting
from elastivol.lab.store import AlreadyExistsError


def _owner(obj: Obj) -> dict[str, object]:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True}


def _owned_by(pod: Obj, uid: str) -> bool:
    return any(r.get("uid") == uid for r in pod["metadata"].get("ownerReferences") or [])


def pod_from_template(owner: Obj, name: str) -> Obj:
    template = copy.deepcopy(owner["spec"]["template"])
    meta = template.get("metadata") or {}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": owner["metadata"]["namespace"], "labels": meta.get("labels") or {},
                         "annotations": meta.get("annotations") or {}, "ownerReferences": [_owner(owner)]},
            "spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 30, **template["spec"]},
            "status": {"phase": "Pending"}}


class Workloads(Loop):
    name = "workload-controller"

    def reconcile(self) -> None:
        store = self.ctx.store
        pods = store.list_of("Pod")
        owners = {o["metadata"]["uid"] for kind in ("StatefulSet", "Deployment") for o in store.list_of(kind)}
        for pod in pods:  # garbage collection: pods whose owner is gone
            refs = pod["metadata"].get("ownerReferences") or []
            if refs and not deleting(pod) and not any(r.get("uid") in owners for r in refs):
                store.delete("Pod", pod["metadata"]["name"], pod["metadata"]["namespace"])
        for sts in store.list_of("StatefulSet"):
            self._statefulset(sts, [p for p in pods if _owned_by(p, sts["metadata"]["uid"])])
        for deploy in store.list_of("Deployment"):
            self._deployment(deploy, [p for p in pods if _owned_by(p, deploy["metadata"]["uid"])])

    def _statefulset(self, sts: Obj, pods: list[Obj]) -> None:
        meta, spec = sts["metadata"], sts["spec"]
        ns, name = meta["namespace"], meta["name"]
        replicas = int(spec.get("replicas", 1))
        by_name = {p["metadata"]["name"]: p for p in pods}
        for i in range(replicas):
            pod_name = f"{name}-{i}"
            if pod_name in by_name:
                if by_name[pod_name].get("status", {}).get("phase") != "Running":
                    break  # OrderedReady: the next replica waits for this one
                continue
            for tpl in spec.get("volumeClaimTemplates") or []:
                claim = f"{tpl['metadata']['name']}-{pod_name}"
                if self.ctx.store.get("PersistentVolumeClaim", claim, ns) is None:
                    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": claim, "namespace": ns, "finalizers": [PVC_PROTECTION],
                                        # The claim template's own labels, and the set's (the controller adds those).
                                        "labels": {**((tpl.get("metadata") or {}).get("labels") or {}),
                                                   **((spec["template"].get("metadata") or {}).get("labels") or {})}},
                           "spec": {"volumeMode": "Filesystem", **copy.deepcopy(tpl["spec"])},
                           "status": {"phase": "Pending"}}
                    try:
                        self.ctx.store.create(pvc)
                    except AlreadyExistsError:
                        pass
            pod = pod_from_template(sts, pod_name)
            pod["spec"]["hostname"] = pod_name
            volumes = [v for v in pod["spec"].get("volumes") or []]
            for tpl in spec.get("volumeClaimTemplates") or []:
                volumes = [v for v in volumes if v.get("name") != tpl["metadata"]["name"]]
                volumes.append({"name": tpl["metadata"]["name"],
                                "persistentVolumeClaim": {"claimName": f"{tpl['metadata']['name']}-{pod_name}"}})
            pod["spec"]["volumes"] = volumes
            try:
                self.ctx.store.create(pod)
                self.ctx.event(sts, "Normal", "SuccessfulCreate",
                               f"create Pod {pod_name} in StatefulSet {name} successful", "statefulset-controller")
            except AlreadyExistsError:
                pass
            break
        for pod_name, pod in sorted(by_name.items(), reverse=True):
            ordinal = pod_name.rsplit("-", 1)[-1]
            if ordinal.isdigit() and int(ordinal) >= replicas and not deleting(pod):
                self.ctx.store.delete("Pod", pod_name, ns)
                break  # scale down one at a time, highest ordinal first
        self._status(sts, pods, replicas)

    def _deployment(self, deploy: Obj, pods: list[Obj]) -> None:
        meta, spec = deploy["metadata"], deploy["spec"]
        replicas = int(spec.get("replicas", 1))
        live = [p for p in pods if not deleting(p) and p.get("status", {}).get("phase") not in ("Failed", "Succeeded")]
        template_hash = hashlib.sha256(repr(spec["template"]).encode()).hexdigest()[:10]
        for _ in range(replicas - len(live)):
            pod = pod_from_template(deploy, f"{meta['name']}-{template_hash}-{secrets.token_hex(3)[:5]}")
            self.ctx.store.create(pod)
        for pod in sorted(live, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)[:max(0, len(live) - replicas)]:
            self.ctx.store.delete("Pod", pod["metadata"]["name"], meta["namespace"])
        self._status(deploy, pods, replicas)

    def _status(self, owner: Obj, pods: list[Obj], replicas: int) -> None:
        ready = sum(1 for p in pods if p.get("status", {}).get("phase") == "Running" and not deleting(p))
        new = {"replicas": len([p for p in pods if not deleting(p)]), "readyReplicas": ready,
               "availableReplicas": ready, "updatedReplicas": len(pods), "currentReplicas": len(pods)}
        if all((owner.get("status") or {}).get(k) == v for k, v in new.items()):
            return

        def change(o: Obj) -> None:
            o["status"] = new
        self.ctx.mutate(owner["kind"], owner["metadata"]["name"], owner["metadata"]["namespace"], change)
