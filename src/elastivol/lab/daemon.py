"""The lab daemon: runs the drivers' plugin processes and Kubernetes' storage control loops.

`elastivol lab up` starts it in the background; `elastivol lab down` sends it SIGTERM, and it stops
the pods' containers, releases every volume (unpublish, unstage, detach), stops the plugins and
unmounts the pools. The objects stay in the store, so the next `lab up` resumes where this one was.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from elastivol import BLOCK_DRIVER_NAME, FILE_DRIVER_NAME
from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.errors import InUse
from elastivol.lab import mountpoints
from elastivol.lab.attacher import Attacher, attacher_finalizer
from elastivol.lab.binding import PVController, Scheduler
from elastivol.lab.context import Context, Loop
from elastivol.lab.groupsnapshotter import GroupSnapshotter
from elastivol.lab.kubelet import Kubelet, proc_start_time
from elastivol.lab.layout import DRIVERS, SHORT, Layout
from elastivol.lab.modifier import Modifier
from elastivol.lab.objects import HOSTNAME_LABEL, ZONE_LABEL, Obj, remove_finalizer
from elastivol.lab.provisioner import Provisioner, has_accessibility
from elastivol.lab.resizer import Resizer
from elastivol.lab.snapshotter import Snapshotter
from elastivol.lab.store import AlreadyExistsError, Store, now_rfc3339
from elastivol.lab.workloads import Workloads
from elastivol.node import loop, mount
from elastivol.process import ServerProcess, serve_args
from elastivol.store import atomic_write_json

log = logging.getLogger("elastivol.lab")

OVERCOMMIT = "4"  # a lab's volumes are sparse and small; let them promise more than the pool holds


def plugin_processes(layout: Layout, ctx_nodes: list[tuple[str, str]], zones: list[str]) -> dict[str, ServerProcess]:
    procs: dict[str, ServerProcess] = {}
    pools = {BLOCK_DRIVER_NAME: layout.block_pool, FILE_DRIVER_NAME: layout.file_pool}
    for driver in DRIVERS:
        short = SHORT[driver]
        extra = ["--overcommit-ratio", OVERCOMMIT] if driver == BLOCK_DRIVER_NAME else []
        procs[f"{short}-controller"] = ServerProcess(
            serve_args(driver=short, mode="controller", pool=pools[driver], zone=zones[0], zones=zones, extra=extra),
            f"unix://{layout.socket(driver, None)}", layout.logs / f"{short}-controller.log")
        for node, zone in ctx_nodes:
            procs[f"{short}-{node}"] = ServerProcess(
                serve_args(driver=short, mode="node", pool=pools[driver], node_id=node, zone=zone,
                           allowed_roots=[layout.kubelet]),
                f"unix://{layout.socket(driver, node)}", layout.logs / f"{short}-{node}.log")
    return procs


class Daemon:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.config = layout.read_config()
        self.store = Store(layout.root)
        self.ctx = Context(layout, self.config, self.store)
        self.stop = threading.Event()
        self.procs = plugin_processes(layout, [(n.name, n.zone) for n in self.config.nodes], self.config.zones)
        self.kubelets = [Kubelet(self.ctx, n.name) for n in self.config.nodes]
        self.loops: list[Loop] = [PVController(self.ctx), Scheduler(self.ctx), Provisioner(self.ctx),
                                  Attacher(self.ctx), Resizer(self.ctx), Modifier(self.ctx), Snapshotter(self.ctx),
                                  GroupSnapshotter(self.ctx),
                                  Workloads(self.ctx), *self.kubelets]
        self.threads: list[threading.Thread] = []

    def _status(self, ready: bool, note: str = "") -> None:
        atomic_write_json(self.layout.status_file, {
            "ready": ready, "note": note, "pid": os.getpid(), "since": now_rfc3339(),
            "processes": {name: {"pid": p.pid, "socket": p.endpoint.removeprefix("unix://"),
                                 "log": str(p.log_path)} for name, p in self.procs.items()},
        })

    def _retire_previous(self) -> None:
        """A daemon killed without `lab down` leaves its plugins running (each in its own session)
        and holding the sockets; stop them before starting this daemon's own."""
        try:
            previous = json.loads(self.layout.status_file.read_text()).get("processes", {})
        except (OSError, ValueError):
            return
        stopping: list[int] = []
        for name, p in previous.items():
            try:
                cmdline = Path(f"/proc/{p['pid']}/cmdline").read_bytes()
            except OSError:
                continue
            if p["socket"].encode() in cmdline:
                log.warning("stopping plugin %s (pid %s) left by a previous lab daemon", name, p["pid"])
                os.kill(p["pid"], signal.SIGTERM)
                stopping.append(p["pid"])
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{pid}").exists() for pid in stopping) and time.monotonic() < deadline:
            time.sleep(0.05)

    def run(self) -> int:
        self.layout.pid_file.write_text(str(os.getpid()))
        self._retire_previous()
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        self._status(False, "starting plugins")
        self.layout.sockets.mkdir(parents=True, exist_ok=True)
        try:
            for p in self.procs.values():
                p.start(wait=False)
            for p in self.procs.values():
                p.wait_ready(60)
            self._connect()
            self._register_nodes()
        except Exception as exc:
            log.exception("lab start failed")
            self._status(False, f"start failed: {exc}")
            self._stop_plugins()
            return 1
        for lp in self.loops:
            t = threading.Thread(target=lp.run, args=(self.stop,), name=getattr(lp, "node_name", lp.name), daemon=True)
            t.start()
            self.threads.append(t)
        self._status(True)
        log.info("lab ready: %d nodes", len(self.config.nodes))
        while not self.stop.wait(1.0):
            for name, p in self.procs.items():
                if p.proc is not None and p.proc.poll() is not None:
                    log.error("plugin %s exited (%s); restarting it", name, p.proc.returncode)
                    p.start(wait=False)
        self.shutdown()
        return 0

    def _connect(self) -> None:
        for driver in DRIVERS:
            self.ctx.clients[(driver, None)] = CsiClient(f"unix://{self.layout.socket(driver, None)}", timeout=300)
            self.ctx.accessibility[driver] = has_accessibility(self.ctx.controller(driver))
            for n in self.config.nodes:
                client = CsiClient(f"unix://{self.layout.socket(driver, n.name)}", timeout=300)
                self.ctx.clients[(driver, n.name)] = client
                info = client.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=30)
                self.ctx.node_topology[(driver, n.name)] = dict(info.accessible_topology.segments)

    def _register_nodes(self) -> None:
        for n in self.config.nodes:
            labels = {HOSTNAME_LABEL: n.name, ZONE_LABEL: n.zone, "topology.elastivol.io/zone": n.zone,
                      "kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": "lab"}
            node_ids = {d: n.name for d in DRIVERS}
            obj: Obj = {"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": n.name, "labels": labels,
                                     "annotations": {"csi.volume.kubernetes.io/nodeid": json.dumps(node_ids)}},
                        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                                   "message": "kubelet is posting ready status"}],
                                   "nodeInfo": {"kubeletVersion": "elastivol-lab", "operatingSystem": "linux"},
                                   "volumesInUse": []}}
            try:
                self.store.create(obj)
            except AlreadyExistsError:
                def refresh(o: Obj, fresh: Obj = obj) -> None:
                    o["metadata"]["labels"] = fresh["metadata"]["labels"]
                    o["status"]["conditions"] = fresh["status"]["conditions"]
                self.ctx.mutate("Node", n.name, None, refresh)

    def shutdown(self) -> None:
        log.info("lab going down: stopping pods and releasing volumes")
        self._status(False, "going down")
        for t in self.threads:
            t.join(timeout=30)
        for k in self.kubelets:
            try:
                k.shutdown()
            except Exception:
                log.exception("kubelet %s shutdown", k.node_name)
        self._detach_all()
        self._stop_plugins()
        for client in self.ctx.clients.values():
            client.close()
        self.layout.status_file.unlink(missing_ok=True)
        self.layout.pid_file.unlink(missing_ok=True)

    def _detach_all(self) -> None:
        for va in self.store.list_of("VolumeAttachment"):
            driver, node = va["spec"]["attacher"], va["spec"]["nodeName"]
            pv_name = va["spec"]["source"]["persistentVolumeName"]
            pv = self.store.get("PersistentVolume", pv_name)
            if pv is not None:
                try:
                    self.ctx.controller(driver).controller.ControllerUnpublishVolume(
                        csi_pb2.ControllerUnpublishVolumeRequest(volume_id=pv["spec"]["csi"]["volumeHandle"],
                                                                 node_id=node), timeout=60)
                except Exception:
                    log.exception("detach %s from %s", pv_name, node)
                    continue
                def drop(o: Obj, f: str = attacher_finalizer(driver)) -> bool:
                    return remove_finalizer(o, f)
                self.ctx.mutate("PersistentVolume", pv_name, None, drop)
            self.store.remove("VolumeAttachment", va["metadata"]["name"])

    def _stop_plugins(self) -> None:
        for p in self.procs.values():
            p.stop(timeout=20)


def share_root(layout: Layout) -> None:
    """Make the lab directory a shared mount (a bind of itself), as Kubernetes wants of the kubelet
    directory: the mounts made under it then propagate to the containers' slave namespaces."""
    root = str(layout.root)
    if mount.is_mountpoint(root):
        return
    sweep(layout)  # a lab that died without `lab down` may have left pools mounted underneath
    layout.root.mkdir(parents=True, exist_ok=True)
    for argv in (["mount", "--bind", root, root], ["mount", "--make-rshared", root]):
        subprocess.run(argv, check=True, capture_output=True, timeout=30)


def sweep(layout: Layout) -> list[str]:
    """Release whatever a dead lab left behind: container processes, mounts, loop devices, sockets."""
    done: list[str] = []
    for state_file in layout.pods.glob("*/state.json") if layout.pods.is_dir() else []:
        try:
            state: dict[str, Any] = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        for info in state.get("containers", {}).values():
            pid = info.get("pid")
            if pid and info.get("start") and proc_start_time(pid) == info["start"]:
                try:
                    os.killpg(pid, signal.SIGKILL)
                    done.append(f"killed container process {pid}")
                except ProcessLookupError:
                    pass
        state_file.unlink(missing_ok=True)
        # After the kill: a mount point is removed only once no live pod of any lab uses it.
        for path in mountpoints.release(state_file.parent.name):
            done.append(f"removed mount point {path}")
    time.sleep(0.2 if done else 0)
    root = str(layout.root) + "/"
    for m in sorted(mount.mounts(), key=lambda m: len(m.target), reverse=True):
        if m.target.startswith(root) and m.target not in (str(layout.block_pool), str(layout.file_pool)):
            mount.unmount_all(m.target)
            done.append(f"unmounted {m.target}")
    # By identity: a device attached from another mount namespace has another path in sysfs.
    for pool in (layout.block_pool, layout.file_pool):
        for d in loop.under(pool) if pool.is_dir() else []:
            loop.detach(d.path, expect=d.backing)
            done.append(f"detached {d.path} ({d.backing_file})")
    for pool in (layout.block_pool, layout.file_pool):
        mount.unmount_all(str(pool))
        image = pool.with_name(pool.name + ".img")
        loop.detach_all(str(image))
    # The last references to the root bind (a just-detached loop device's backing file, the copy
    # in a container's namespace that just ended) are dropped asynchronously: EBUSY for a moment.
    deadline = time.monotonic() + 10
    while mount.is_mountpoint(str(layout.root)):
        try:
            mount.unmount_all(str(layout.root))
        except InUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    for sock in layout.sockets.glob("*.sock") if layout.sockets.is_dir() else []:
        sock.unlink(missing_ok=True)
    return done


def leftovers(layout: Layout) -> list[str]:
    """What of this lab is still on the host; empty after a clean `lab down`."""
    root = str(layout.root) + "/"
    found = [f"mount {m.target}" for m in mount.mounts() if m.target.startswith(root) or m.target == str(layout.root)]
    found += [f"loop device {d.path} → {d.backing_file}" for d in (loop.under(layout.root) if layout.root.is_dir() else [])]
    found += [f"socket {s}" for s in layout.sockets.glob("*.sock")] if layout.sockets.is_dir() else []
    for status in ([layout.status_file] if layout.status_file.exists() else []):
        try:
            procs = json.loads(status.read_text()).get("processes", {})
        except (OSError, ValueError):
            procs = {}
        found += [f"process {name} ({p['pid']})" for name, p in procs.items() if Path(f"/proc/{p['pid']}").exists()]
    for state_file in layout.pods.glob("*/state.json") if layout.pods.is_dir() else []:
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        found += [f"container process {i['pid']}" for i in state.get("containers", {}).values()
                  if i.get("pid") and i.get("start") and proc_start_time(i["pid"]) == i["start"]]
    return found


def main(directory: str) -> int:
    from elastivol import logs

    logs.setup("info", "text")
    return Daemon(Layout(Path(directory))).run()
