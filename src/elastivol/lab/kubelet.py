"""The kubelet's volume manager and a tiny container runtime, one per lab node.

For a pod scheduled here it waits for the VolumeAttachment, stages (NodeStageVolume) and publishes
(NodePublishVolume) each volume, then starts the containers. On deletion it stops them (SIGTERM, the
grace period, SIGKILL), unpublishes, and unstages a volume once no pod on the node uses it. What it
has done is kept in a state file per pod, so a restarted lab carries on from it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from elastivol import BLOCK_DRIVER_NAME
from elastivol.csi import csi_pb2
from elastivol.lab import mountpoints
from elastivol.lab.attacher import pv_capability
from elastivol.lab.context import Context, Loop, rpc_message
from elastivol.lab.objects import (
    Obj,
    deleting,
    drop_condition,
    format_quantity,
    parse_quantity,
    set_condition,
    staging_dir_name,
    volume_attachment_name,
)
from elastivol.lab.resizer import RESIZE_PENDING
from elastivol.lab.store import now_rfc3339
from elastivol.node import iothrottle
from elastivol.store import atomic_write_json

PLACEHOLDER_COMMAND = ["sleep", "infinity"]
# Each lab pod runs in its own cgroup, pod<uid> under this one, as kubelet's pods do under kubepods,
# so that a volume's I/O limits hold that pod's processes only.
LAB_CGROUP_PARENT = "elastivol-lab"
DOWN_GRACE_SECONDS = 3.0


def proc_start_time(pid: int) -> str | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]



def log_times(log: Path) -> Path:
    """Where a container's runner records when each piece of its log was written (`logs --since`)."""
    return log.with_name(log.name + ".times")

class Kubelet(Loop):
    def __init__(self, ctx: Context, node: str) -> None:
        super().__init__(ctx)
        self.node_name = node
        self.name = "kubelet"
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.verified: set[str] = set()
        self.kill_deadline: dict[str, float] = {}

    # -- state files -----------------------------------------------------------------------------
    def _state_path(self, uid: str) -> Path:
        return self.ctx.layout.pod_dir(uid) / "state.json"

    def _state(self, uid: str) -> dict[str, Any] | None:
        try:
            loaded: dict[str, Any] = json.loads(self._state_path(uid).read_text())
            return loaded
        except (FileNotFoundError, ValueError):
            return None

    def _save(self, uid: str, state: dict[str, Any]) -> None:
        self._state_path(uid).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self._state_path(uid), state)

    def my_pods(self) -> list[Obj]:
        return [p for p in self.ctx.store.list_of("Pod") if p["spec"].get("nodeName") == self.node_name]

    # -- loop ------------------------------------------------------------------------------------
    def reconcile(self) -> None:
        pods = self.my_pods()
        live = {p["metadata"]["uid"] for p in pods}
        for uid, orphan in self._all_states():
            if uid not in live and orphan.get("node") == self.node_name:
                # An orphan (its pod object is gone): tear it down as the kubelet does.
                self._terminate({"kind": "Pod", "metadata": {"uid": uid, "name": orphan.get("pod", uid),
                                                             "namespace": orphan.get("namespace", "default")},
                                 "spec": {"terminationGracePeriodSeconds": 2}})
        for pod in pods:
            uid = pod["metadata"]["uid"]
            if deleting(pod):
                self._terminate(pod)
                continue
            state = self._state(uid)
            if state is None or not state.get("ready") or uid not in self.verified:
                if self.backoff.ready(uid) and self._setup(pod, state):
                    self.verified.add(uid)
                continue
            self._monitor(pod, state)
            self._expand(pod, state)

    # -- setup -----------------------------------------------------------------------------------
    def _setup(self, pod: Obj, state: dict[str, Any] | None) -> bool:
        meta = pod["metadata"]
        uid, ns = meta["uid"], meta["namespace"]
        state = state or {"node": self.node_name, "pod": meta["name"], "namespace": ns, "volumes": {},
                          "containers": {}}
        kubelet_dir = self.ctx.layout.kubelet
        for vol in pod["spec"].get("volumes") or []:
            claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim:
                continue
            pvc = self.ctx.store.get("PersistentVolumeClaim", claim, ns)
            if pvc is None or pvc.get("status", {}).get("phase") != "Bound":
                self._waiting(pod, "ContainerCreating")
                return False
            pv = self.ctx.store.get("PersistentVolume", pvc["spec"]["volumeName"])
            if pv is None:
                return False
            csi = pv["spec"]["csi"]
            driver, handle, pv_name = csi["driver"], csi["volumeHandle"], pv["metadata"]["name"]
            publish_context: dict[str, str] = {}
            if self.ctx.attach_required(driver):
                va = self.ctx.store.get("VolumeAttachment", volume_attachment_name(driver, pv_name, self.node_name))
                if va is None or not (va.get("status") or {}).get("attached"):
                    self._waiting(pod, "ContainerCreating")
                    return False
                publish_context = dict(va["status"].get("attachmentMetadata") or {})
            self._in_use(handle, True)
            block = (pv["spec"].get("volumeMode") or "Filesystem") == "Block"
            cap = pv_capability(pv)
            readonly = bool((vol.get("persistentVolumeClaim") or {}).get("readOnly") or csi.get("readOnly"))
            context = dict(csi.get("volumeAttributes") or {})
            pod_context = self._pod_info(pod, state) if self.ctx.pod_info_on_mount(driver) else {}
            client = self.ctx.node(driver, self.node_name)
            staging = ""
            try:
                if driver == BLOCK_DRIVER_NAME:
                    staging = str(kubelet_dir / "plugins" / "kubernetes.io" / "csi" / driver /
                                  staging_dir_name(handle) / "globalmount")
                    client.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
                        volume_id=handle, publish_context=publish_context, staging_target_path=staging,
                        volume_capability=cap, volume_context=context), timeout=300)
            except grpc.RpcError as exc:
                return self._mount_failed(pod, "MountVolume.MountDevice", pv_name, exc)
            sub = "volumeDevices" if block else "volumes"
            target = kubelet_dir / "pods" / uid / sub / "kubernetes.io~csi" / pv_name / ("" if block else "mount")
            target = target.parent / pv_name if block else target
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                client.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
                    volume_id=handle, publish_context=publish_context, staging_target_path=staging,
                    target_path=str(target), volume_capability=cap, readonly=readonly,
                    volume_context={**context, **pod_context}), timeout=120)
            except grpc.RpcError as exc:
                return self._mount_failed(pod, "MountVolume.SetUp", pv_name, exc)
            state["volumes"][vol["name"]] = {"pv": pv_name, "claim": claim, "driver": driver, "handle": handle,
                                             "staging": staging, "target": str(target), "block": block,
                                             "readonly": readonly}
        self.backoff.ok(uid)
        state["ready"] = True
        self._save(uid, state)
        for container in pod["spec"]["containers"]:
            info = state["containers"].get(container["name"])
            if info is None or not self._alive(info):
                self._start(pod, container, state)
        self._save(uid, state)
        self._update_status(pod, state)
        return True

    def _pod_info(self, pod: Obj, state: dict[str, Any]) -> dict[str, str]:
        """What kubelet adds to NodePublishVolume's volume_context for a CSIDriver with podInfoOnMount.

        The pod's cgroup is made first, as kubelet makes it before mounting volumes, so that the
        node plugin finds it by the pod's uid.
        """
        meta = pod["metadata"]
        if "cgroup" not in state:
            state["cgroup"] = self._make_cgroup(pod)
        return {
            "csi.storage.k8s.io/pod.name": meta["name"],
            "csi.storage.k8s.io/pod.namespace": meta["namespace"],
            "csi.storage.k8s.io/pod.uid": meta["uid"],
            "csi.storage.k8s.io/serviceAccount.name": pod["spec"].get("serviceAccountName") or "default",
            "csi.storage.k8s.io/ephemeral": "false",
        }

    def _make_cgroup(self, pod: Obj) -> str:
        hierarchy = iothrottle.detect()
        if hierarchy is None:
            self.ctx.event(pod, "Warning", "IOLimitsNotEnforced", iothrottle.NO_CONTROLLER, f"kubelet {self.node_name}")
            return ""
        try:
            return str(iothrottle.make_cgroup(hierarchy, f"{LAB_CGROUP_PARENT}/pod{pod['metadata']['uid']}"))
        except OSError as exc:
            self.ctx.event(pod, "Warning", "IOLimitsNotEnforced",
                           f"cannot make the pod's cgroup under {hierarchy}: {exc.strerror}; its volumes run "
                           "unthrottled at host speed", f"kubelet {self.node_name}")
            return ""

    @staticmethod
    def _remove_cgroup(uid: str) -> None:
        hierarchy = iothrottle.detect()
        if hierarchy is None:
            return
        cgroup = hierarchy.root / LAB_CGROUP_PARENT / f"pod{uid}"
        try:
            iothrottle.remove_cgroup(cgroup, parent_if_empty=True)
        except OSError as exc:  # a straggler process: the cgroup is only a few empty files
            print(f"lab: cannot remove cgroup {cgroup}: {exc.strerror}", file=sys.stderr)

    def _mount_failed(self, pod: Obj, what: str, pv_name: str, exc: grpc.RpcError) -> bool:
        self.ctx.event(pod, "Warning", "FailedMount", f'{what} failed for volume "{pv_name}" : {rpc_message(exc)}',
                       f"kubelet {self.node_name}")
        self.backoff.failed(pod["metadata"]["uid"])
        self._waiting(pod, "ContainerCreating")
        return False

    def _waiting(self, pod: Obj, reason: str) -> None:
        meta = pod["metadata"]

        def change(o: Obj) -> bool:
            status = o.setdefault("status", {})
            statuses = [{"name": c["name"], "image": c.get("image", ""), "ready": False, "restartCount": 0,
                         "started": False, "state": {"waiting": {"reason": reason}}} for c in o["spec"]["containers"]]
            if status.get("containerStatuses") == statuses and status.get("phase") == "Pending":
                return False
            status.update(phase="Pending", containerStatuses=statuses, hostIP="127.0.0.1")
            set_condition(o, "Ready", "False", "ContainersNotReady")
            return True
        self.ctx.mutate("Pod", meta["name"], meta["namespace"], change)

    def _in_use(self, handle: str, used: bool) -> None:
        def change(o: Obj) -> bool:
            current = list(o.setdefault("status", {}).get("volumesInUse") or [])
            if used == (handle in current):
                return False
            o["status"]["volumesInUse"] = sorted(set(current) | {handle}) if used else \
                [h for h in current if h != handle]
            return True
        self.ctx.mutate("Node", self.node_name, None, change)

    # -- containers ------------------------------------------------------------------------------
    def _start(self, pod: Obj, container: Obj, state: dict[str, Any]) -> None:
        meta = pod["metadata"]
        pod_dir = self.ctx.layout.pod_dir(meta["uid"])
        name = container["name"]
        mounts = []
        for vm in container.get("volumeMounts") or []:
            vol = state["volumes"].get(vm["name"])
            if vol is None:
                continue
            source = Path(vol["target"])
            if vm.get("subPath"):
                source = source / vm["subPath"]
                source.mkdir(parents=True, exist_ok=True)  # as the kubelet does, inside the volume
            mounts.append({"source": str(source), "target": self._mount_point(vm["mountPath"], False, meta["uid"]),
                           "readonly": bool(vm.get("readOnly") or vol["readonly"])})
        for vd in container.get("volumeDevices") or []:
            vol = state["volumes"].get(vd["name"])
            if vol is not None:
                mounts.append({"source": vol["target"], "target": self._mount_point(vd["devicePath"], True, meta["uid"]),
                               "readonly": vol["readonly"]})
        command = list(container.get("command") or []) + [str(a) for a in container.get("args") or []]
        if not container.get("command"):
            if container.get("args"):
                command = [str(a) for a in container["args"]]
            else:
                command = list(PLACEHOLDER_COMMAND)
                self.ctx.event(pod, "Normal", "LabPlaceholder",
                               f'container "{name}" has no command: the lab cannot run image '
                               f'"{container.get("image", "")}", so it runs "sleep infinity" to hold its volumes',
                               f"kubelet {self.node_name}")
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
               "HOSTNAME": meta["name"]}
        env.update({e["name"]: str(e.get("value", "")) for e in container.get("env") or []})
        exit_file = pod_dir / f"{name}.exit"
        exit_file.unlink(missing_ok=True)
        spec = {"hostname": pod["spec"].get("hostname") or meta["name"], "mounts": mounts, "command": command,
                "env": env, "workingDir": container.get("workingDir", ""), "exit_file": str(exit_file),
                "log_times": str(log_times(pod_dir / f"{name}.log")), "cgroup": state.get("cgroup", "")}
        spec_file = pod_dir / f"{name}.json"
        atomic_write_json(spec_file, spec)
        log_path = pod_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "elastivol.lab.container", str(spec_file)],
                                    stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        self.children[proc.pid] = proc
        previous = state["containers"].get(name) or {}
        state["containers"][name] = {
            "pid": proc.pid, "start": proc_start_time(proc.pid), "startedAt": now_rfc3339(),
            "restarts": previous.get("restarts", -1) + 1, "log": str(log_path), "exit_file": str(exit_file),
            "exited": None, "next_start": 0.0, "command": command,
        }
        image = container.get("image")
        self.ctx.event(pod, "Normal", "Started",
                       f"Started container {name}" + (f' (image "{image}" is not pulled: the lab runs the command '
                                                      "on the host)" if image else ""), f"kubelet {self.node_name}")

    def _mount_point(self, path: str, device: bool, uid: str) -> str:
        """The mount point must exist on the host; what the lab creates goes when no pod uses it."""
        return mountpoints.acquire(path, device=device, owner=uid)

    def _alive(self, info: dict[str, Any]) -> bool:
        pid = info.get("pid")
        if not pid:
            return False
        child = self.children.get(pid)
        if child is not None and child.poll() is not None:
            self.children.pop(pid, None)
            return False
        return info.get("start") is not None and proc_start_time(pid) == info.get("start")

    def _exit_code(self, info: dict[str, Any]) -> int:
        try:
            return int(Path(info["exit_file"]).read_text().strip())
        except (OSError, ValueError):
            return 137

    def _monitor(self, pod: Obj, state: dict[str, Any]) -> None:
        restart_policy = pod["spec"].get("restartPolicy") or "Always"
        changed = False
        for container in pod["spec"]["containers"]:
            info = state["containers"].get(container["name"])
            if info is None:
                continue
            if info.get("exited") is None and not self._alive(info):
                info["exited"] = self._exit_code(info)
                info["finishedAt"] = now_rfc3339()
                restart = restart_policy == "Always" or (restart_policy == "OnFailure" and info["exited"] != 0)
                delay = min(20.0, 2.0 ** max(0, info.get("restarts", 0)))
                info["next_start"] = time.time() + delay if restart else None
                changed = True
            if info.get("exited") is not None and info.get("next_start") and time.time() >= info["next_start"]:
                self._start(pod, container, state)
                changed = True
        if changed:
            self._save(pod["metadata"]["uid"], state)
            self._update_status(pod, state)

    def _update_status(self, pod: Obj, state: dict[str, Any]) -> None:
        statuses = []
        for container in pod["spec"]["containers"]:
            info = state["containers"].get(container["name"]) or {}
            running = info.get("exited") is None
            cstate: dict[str, Any]
            if running:
                cstate = {"running": {"startedAt": info.get("startedAt")}}
            elif info.get("next_start"):
                cstate = {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": f"back-off restarting failed container {container['name']}"}}
            else:
                cstate = {"terminated": {"exitCode": info["exited"], "reason": "Completed" if info["exited"] == 0
                                         else "Error", "startedAt": info.get("startedAt"),
                                         "finishedAt": info.get("finishedAt")}}
            statuses.append({"name": container["name"], "image": container.get("image", ""), "ready": running,
                             "restartCount": max(0, info.get("restarts", 0)), "started": running, "state": cstate})
        all_done = all("terminated" in s["state"] for s in statuses)
        phase = "Running"
        if all_done:
            phase = "Succeeded" if all(s["state"]["terminated"]["exitCode"] == 0 for s in statuses) else "Failed"
        ready = all(s["ready"] for s in statuses)
        meta = pod["metadata"]

        def change(o: Obj) -> None:
            status = o.setdefault("status", {})
            status.update(phase=phase, containerStatuses=statuses, hostIP="127.0.0.1", podIP="127.0.0.1")
            status.setdefault("startTime", now_rfc3339())
            set_condition(o, "Initialized", "True")
            set_condition(o, "ContainersReady", "True" if ready else "False")
            set_condition(o, "Ready", "True" if ready else "False")
        self.ctx.mutate("Pod", meta["name"], meta["namespace"], change)

    # -- expansion -------------------------------------------------------------------------------
    def _expand(self, pod: Obj, state: dict[str, Any]) -> None:
        ns = pod["metadata"]["namespace"]
        for vol in state["volumes"].values():
            if vol["driver"] != BLOCK_DRIVER_NAME:
                continue
            pvc = self.ctx.store.get("PersistentVolumeClaim", vol["claim"], ns)
            if pvc is None or not any(c.get("type") == RESIZE_PENDING and c.get("status") == "True"
                                      for c in pvc.get("status", {}).get("conditions") or []):
                continue
            pv = self.ctx.store.get("PersistentVolume", vol["pv"])
            key = f"expand/{vol['handle']}"
            if pv is None or not self.backoff.ready(key):
                continue
            size = parse_quantity(pv["spec"]["capacity"]["storage"])
            try:
                self.ctx.node(vol["driver"], self.node_name).node.NodeExpandVolume(csi_pb2.NodeExpandVolumeRequest(
                    volume_id=vol["handle"], volume_path=vol["target"], staging_target_path=vol["staging"],
                    capacity_range=csi_pb2.CapacityRange(required_bytes=size), volume_capability=pv_capability(pv)),
                    timeout=300)
            except grpc.RpcError as exc:
                self.ctx.event(pvc, "Warning", "FileSystemResizeFailed",
                               f'MountVolume.NodeExpandVolume failed for volume "{vol["pv"]}" : {rpc_message(exc)}',
                               f"kubelet {self.node_name}")
                self.backoff.failed(key)
                continue
            self.backoff.ok(key)

            def done(o: Obj, s: int = size) -> None:
                drop_condition(o, RESIZE_PENDING)
                o["status"]["capacity"] = {"storage": format_quantity(s)}
                o["status"].pop("allocatedResources", None)
            self.ctx.mutate("PersistentVolumeClaim", vol["claim"], ns, done)
            message = f'MountVolume.NodeExpandVolume succeeded for volume "{vol["pv"]}" {self.node_name}'
            self.ctx.event(pvc, "Normal", "FileSystemResizeSuccessful", message, f"kubelet {self.node_name}")
            self.ctx.event(pod, "Normal", "FileSystemResizeSuccessful", message, f"kubelet {self.node_name}")

    # -- teardown --------------------------------------------------------------------------------
    def _terminate(self, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        state = self._state(uid)
        if state is not None and not self._stop_containers(pod, state, pod["spec"].get("terminationGracePeriodSeconds")):
            return
        if state is not None and not self._release_volumes(pod, state):
            return
        self.verified.discard(uid)
        self._remove_cgroup(uid)
        shutil.rmtree(self.ctx.layout.pod_dir(uid), ignore_errors=True)
        self.ctx.store.remove("Pod", meta["name"], meta["namespace"])

    def _stop_containers(self, pod: Obj, state: dict[str, Any], grace: Any) -> bool:
        """SIGTERM, then SIGKILL after the grace period; True once every container is gone."""
        uid = pod["metadata"]["uid"]
        alive = [i for i in state["containers"].values() if self._alive(i)]
        if not alive:
            self.kill_deadline.pop(uid, None)
            return True
        if uid not in self.kill_deadline:
            self.kill_deadline[uid] = time.monotonic() + float(30 if grace is None else grace)
            for name, info in state["containers"].items():
                if self._alive(info):
                    self.ctx.event(pod, "Normal", "Killing", f"Stopping container {name}", f"kubelet {self.node_name}")
            self._signal(alive, signal.SIGTERM)
            return False
        if time.monotonic() >= self.kill_deadline[uid]:
            self._signal(alive, signal.SIGKILL)
        return False

    def _signal(self, infos: list[dict[str, Any]], sig: int) -> None:
        for info in infos:
            try:
                os.killpg(info["pid"], sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _release_volumes(self, pod: Obj, state: dict[str, Any]) -> bool:
        uid = pod["metadata"]["uid"]
        for vol_name, vol in list(state["volumes"].items()):
            client = self.ctx.node(vol["driver"], self.node_name)
            try:
                client.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
                    volume_id=vol["handle"], target_path=vol["target"]), timeout=120)
                if not self._used_by_other(uid, vol["handle"]):
                    if vol["staging"]:
                        client.node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
                            volume_id=vol["handle"], staging_target_path=vol["staging"]), timeout=120)
                    self._in_use(vol["handle"], False)
            except grpc.RpcError as exc:
                self.ctx.event(pod, "Warning", "FailedUnmount",
                               f'UnmountVolume.TearDown failed for volume "{vol["pv"]}" : {rpc_message(exc)}',
                               f"kubelet {self.node_name}")
                return False
            del state["volumes"][vol_name]
            self._save(uid, state)
        mountpoints.release(uid)
        return True

    def _all_states(self) -> list[tuple[str, dict[str, Any]]]:
        found = []
        if self.ctx.layout.pods.is_dir():
            for d in self.ctx.layout.pods.iterdir():
                s = self._state(d.name)
                if s is not None:
                    found.append((d.name, s))
        return found

    def _used_by_other(self, uid: str, handle: str) -> bool:
        return any(u != uid and s.get("node") == self.node_name and
                   any(v["handle"] == handle for v in s.get("volumes", {}).values())
                   for u, s in self._all_states())

    def shutdown(self) -> None:
        """`lab down`: stop this node's containers and release its volumes, keeping the pods' objects."""
        for pod in self.my_pods():
            state = self._state(pod["metadata"]["uid"])
            if state is None:
                continue
            deadline = time.monotonic() + DOWN_GRACE_SECONDS
            while not self._stop_containers(pod, state, DOWN_GRACE_SECONDS) and time.monotonic() < deadline + 2:
                time.sleep(0.1)
            self._release_volumes(pod, state)
            self._remove_cgroup(pod["metadata"]["uid"])
            self._state_path(pod["metadata"]["uid"]).unlink(missing_ok=True)
            self.kill_deadline.pop(pod["metadata"]["uid"], None)
            self.verified.discard(pod["metadata"]["uid"])
            self._waiting(pod, "LabDown")

