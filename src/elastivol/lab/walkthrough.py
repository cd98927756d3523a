"""`elastivol demo`: the seeds' walkthrough end to end in a lab, step by step.

Every step is an `elastivol lab ...` command a person could type, run as a separate process, with
its output shown, so the demo teaches the commands as it checks them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Seed 000's pod: appends the date to /data/out.txt (every second here, so the demo is quick).
WRITER_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: app
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: app
    image: centos
    command: ["/bin/sh"]
    args: ["-c", "while true; do echo $(date -u) >> /data/out.txt; sleep 1; done"]
    volumeMounts:
    - name: persistent-storage
      mountPath: /data
  volumes:
  - name: persistent-storage
    persistentVolumeClaim:
      claimName: {claim}
"""

# Seed 000's EFS pods: each appends to its own file on the shared volume, pinned to a zone.
SHARED_POD = """\
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 3
  nodeSelector:
    topology.kubernetes.io/zone: {zone}
  containers:
  - name: app
    image: busybox
    command: ["/bin/sh", "-c", "while true; do echo {name} $(date -u) >> /data/{name}.txt; sleep 1; done"]
    volumeMounts: [{{name: shared, mountPath: /data}}]
  volumes:
  - name: shared
    persistentVolumeClaim: {{claimName: efs-claim}}
"""

MANIFESTS = {
    "gp3.yaml": """\
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: gp3
provisioner: block.csi.elastivol.io
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
parameters:
  type: gp3
  allowAutoIOPSPerGBIncrease: "true"
  # xfs: it grows while mounted (ext4 needs CAP_SYS_RESOURCE for that, which a sandbox may lack)
  csi.storage.k8s.io/fstype: xfs
""",
    "app.yaml": """\
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: ebs-claim
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: gp3
  resources:
    requests:
      storage: 4Gi
---
""" + WRITER_POD.format(claim="ebs-claim"),
    "snapshot.yaml": """\
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: csi-vsc
driver: block.csi.elastivol.io
deletionPolicy: Delete
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: ebs-volume-snapshot
spec:
  volumeSnapshotClassName: csi-vsc
  source:
    persistentVolumeClaimName: ebs-claim
""",
    "restore.yaml": """\
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: ebs-snapshot-restored-claim
spec:
  storageClassName: gp3
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 10Gi
  dataSource:
    name: ebs-volume-snapshot
    kind: VolumeSnapshot
    apiGroup: snapshot.storage.k8s.io
---
""" + WRITER_POD.format(claim="ebs-snapshot-restored-claim"),
    "efs.yaml": """\
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: efs-sc
provisioner: file.csi.elastivol.io
parameters:
  provisioningMode: efs-ap
  fileSystemId: LAB_FILE_SYSTEM_ID
  directoryPerms: "700"
  gidRangeStart: "1000"
  gidRangeEnd: "2000"
  basePath: "/dynamic_provisioning"
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: efs-claim
spec:
  accessModes: [ReadWriteMany]
  storageClassName: efs-sc
  resources:
    requests:
      storage: 5Gi
""" + SHARED_POD.format(name="pod1", zone="zone-a") + SHARED_POD.format(name="pod2", zone="zone-b"),
    "rwx.yaml": """\
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: rwo-test
spec:
  accessModes: [ReadWriteMany]
  storageClassName: gp3
  resources:
    requests:
      storage: 10Gi
---
apiVersion: v1
kind: Pod
metadata:
  name: nginx-pv
spec:
  containers:
  - name: nginx
    image: nginx:latest
    volumeMounts: [{name: rwo-test, mountPath: /usr/share/nginx/html}]
  volumes:
  - name: rwo-test
    persistentVolumeClaim: {claimName: rwo-test}
""",
}


class StepFailed(Exception):
    pass


@dataclass
class Result:
    name: str
    ok: bool
    seconds: float
    detail: str = ""


class Walkthrough:
    def __init__(self, lab_dir: Path, manifests: Path, console: Console) -> None:
        self.dir = lab_dir
        self.manifests = manifests
        self.console = console
        self.results: list[Result] = []
        self.env = {**os.environ, "ELASTIVOL_LAB_DIR": str(lab_dir), "COLUMNS": "200"}

    def lab(self, *args: str, show: bool = True, check: bool = True, timeout: float = 120) -> str:
        """Run `elastivol lab ARGS` as a user would, print the command and its output."""
        argv = [sys.executable, "-m", "elastivol", "lab", *args]
        if show:
            self.console.print(f"  [bold cyan]$ elastivol lab {escape(shlex.join(args))}[/bold cyan]")
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        text = (proc.stdout + proc.stderr).rstrip()
        if show and text:
            for line in text.splitlines():
                self.console.print(f"    {line}", markup=False, highlight=False, soft_wrap=True)
        if check and proc.returncode != 0:
            raise StepFailed(f"`elastivol lab {shlex.join(args)}` exited {proc.returncode}: {text[-400:]}")
        return proc.stdout

    def until(self, what: str, probe: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            if time.monotonic() > deadline:
                raise StepFailed(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.3)

    def jsonpath(self, kind: str, name: str, template: str) -> str:
        return self.lab("get", kind, name, "-o", f"jsonpath={template}", show=False, check=False).strip()

    def step(self, name: str, body: Callable[[], str | None]) -> bool:
        self.console.rule(f"[bold]{name}")
        start = time.perf_counter()
        try:
            note = body() or ""
        except (StepFailed, subprocess.TimeoutExpired) as exc:
            took = time.perf_counter() - start
            self.results.append(Result(name, False, took, str(exc)[:300]))
            self.console.print(f"  [red]✗ {escape(str(exc))}[/red]")
            return False
        took = time.perf_counter() - start
        self.results.append(Result(name, True, took, note))
        self.console.print(f"  [green]✓[/green] {escape(note)} [dim]({took:.1f} s)[/dim]")
        return True

    # -- the steps -------------------------------------------------------------------------------
    def up(self) -> str:
        self.lab("up", "--nodes", "3", "--zones", "zone-a,zone-b,zone-c")
        self.lab("get", "nodes", "-o", "wide")
        return "3 nodes in zones zone-a, zone-b, zone-c; block and file plugins running on their own sockets"

    def dynamic(self) -> str:
        m = self.manifests
        self.lab("apply", "-f", str(m / "gp3.yaml"))
        self.lab("apply", "-f", str(m / "app.yaml"))
        self.until("pod app Running", lambda: self.jsonpath("pod", "app", "{.status.phase}") == "Running")
        self.lab("get", "pvc,pv,pod")
        node = self.jsonpath("pod", "app", "{.spec.nodeName}")
        pv = self.jsonpath("pvc", "ebs-claim", "{.spec.volumeName}")
        zone = self.jsonpath("pv", pv, "{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[?(@.key==\"topology.kubernetes.io/zone\")].values[0]}")
        node_zone = self.jsonpath("node", node, "{.metadata.labels.topology\\.kubernetes\\.io/zone}")
        self.console.print(f"  PV {pv} has node affinity topology.kubernetes.io/zone in [{zone}]; "
                           f"pod app runs on {node} in {node_zone}", markup=False, highlight=False)
        if not zone or zone != node_zone:
            raise StepFailed(f"the PV's zone {zone!r} is not the zone of the pod's node ({node_zone!r})")
        self.lab("get", "volumeattachment")
        self.until("lines in /data/out.txt", lambda: self._lines("app") >= 2)
        self.lab("exec", "app", "--", "tail", "-n", "2", "/data/out.txt")
        return f"WaitForFirstConsumer bound the claim in {zone}, the zone of {node}"

    def _lines(self, pod: str) -> int:
        out = self.lab("exec", pod, "--", "wc", "-l", "/data/out.txt", show=False, check=False)
        return int(out.split()[0]) if out.split() and out.split()[0].isdigit() else 0

    def expand(self) -> str:
        before = self._lines("app")
        self.lab("patch", "pvc", "ebs-claim", "-p", '{"spec":{"resources":{"requests":{"storage":"10Gi"}}}}')
        self.until("status.capacity 10Gi",
                   lambda: self.jsonpath("pvc", "ebs-claim", "{.status.capacity.storage}") == "10Gi", 90)
        df = self.lab("exec", "app", "--", "df", "-h", "/data")
        size = df.splitlines()[-1].split()[1] if df.strip() else "?"
        if not size.startswith("10"):
            raise StepFailed(f"df inside the pod shows {size}, not 10G")
        self.until("the pod to keep writing", lambda: self._lines("app") > before + 1)
        return f"grown online to 10Gi while the pod kept writing; df in the pod: {size}"

    def snapshot(self) -> str:
        m = self.manifests
        self.lab("apply", "-f", str(m / "snapshot.yaml"))
        self.until("the snapshot to be ready",
                   lambda: self.jsonpath("volumesnapshot", "ebs-volume-snapshot", "{.status.readyToUse}") == "true")
        self.lab("get", "volumesnapshot,volumesnapshotcontent")
        first = self.lab("exec", "app", "--", "head", "-n", "1", "/data/out.txt", show=False).strip()
        count = self._lines("app")
        self.lab("delete", "pod", "app")
        self.lab("delete", "pvc", "ebs-claim")
        self.lab("apply", "-f", str(m / "restore.yaml"))
        self.until("the restored pod Running", lambda: self.jsonpath("pod", "app", "{.status.phase}") == "Running", 90)
        self.lab("get", "pvc,pv,pod")
        restored_first = self.lab("exec", "app", "--", "head", "-n", "3", "/data/out.txt").splitlines()
        if not restored_first or restored_first[0].strip() != first:
            raise StepFailed(f"the restored volume starts with {restored_first[:1]}, not with {first!r}")
        return f"restored from the snapshot: the old lines are there (first: {first!r}, {count} before the snapshot)"

    def shared(self) -> str:
        self.lab("apply", "-f", str(self.manifests / "efs.yaml"))
        for pod in ("pod1", "pod2"):
            def running(p: str = pod) -> bool:
                return self.jsonpath("pod", p, "{.status.phase}") == "Running"
            self.until(f"{pod} Running", running)
        self.lab("get", "pvc,pod", "-o", "wide")
        self.until("each pod to see the other's file", lambda: bool(
            self.lab("exec", "pod1", "--", "tail", "-n", "1", "/data/pod2.txt", show=False, check=False).strip()
            and self.lab("exec", "pod2", "--", "tail", "-n", "1", "/data/pod1.txt", show=False, check=False).strip()))
        self.lab("exec", "pod1", "--", "tail", "-n", "1", "/data/pod2.txt")
        self.lab("exec", "pod2", "--", "tail", "-n", "1", "/data/pod1.txt")
        perms = self.lab("exec", "pod1", "--", "stat", "-c", "%a %u:%g", "/data").strip()
        if not perms.startswith("700 "):
            raise StepFailed(f"the access point's root is {perms}, not mode 700")
        zones = {self.jsonpath("node", self.jsonpath("pod", p, "{.spec.nodeName}"),
                               "{.metadata.labels.topology\\.kubernetes\\.io/zone}") for p in ("pod1", "pod2")}
        return f"pods in {', '.join(sorted(zones))} read each other's files; access point root {perms}"

    def rwx(self) -> str:
        self.lab("apply", "-f", str(self.manifests / "rwx.yaml"))

        def failed() -> bool:
            return "MULTI_NODE_MULTI_WRITER not supported" in self.lab("describe", "pvc", "rwo-test", show=False)
        self.until("the ProvisioningFailed event", failed)
        text = self.lab("describe", "pvc", "rwo-test", show=False)
        line = next(ln.strip() for ln in text.splitlines() if "ProvisioningFailed" in ln)
        self.console.print(f"    {line}", markup=False, highlight=False, soft_wrap=True)
        self.lab("get", "pvc", "rwo-test")
        return "ReadWriteMany on gp3 refused with the EBS driver's message"

    def down(self) -> str:
        self.lab("down", "--purge")
        leftovers = [ln for ln in Path("/proc/mounts").read_text().splitlines() if str(self.dir) in ln]
        loops = subprocess.run(["losetup", "-J"], capture_output=True, text=True, timeout=30, check=False).stdout
        devs = [d for d in (json.loads(loops).get("loopdevices", []) if loops.strip() else [])
                if str(self.dir) in (d.get("back-file") or "")]
        if leftovers or devs:
            raise StepFailed(f"left behind: {leftovers + [d['name'] for d in devs]}")
        return "no mount, loop device, process or socket left"

    def run(self) -> int:
        steps = [("1. bring up the lab", self.up),
                 ("2. gp3 StorageClass, 4Gi PVC and a pod writing /data/out.txt", self.dynamic),
                 ("3. grow the PVC to 10Gi while the pod writes", self.expand),
                 ("4. VolumeSnapshot, delete pod and PVC, restore into a new PVC", self.snapshot),
                 ("5. shared file volume (efs-ap): two pods in two zones", self.shared),
                 ("6. ReadWriteMany on gp3 fails, with the event", self.rwx)]
        total = time.perf_counter()
        ok = True
        for name, body in steps:
            if not self.step(name, body):
                ok = False
                break
        down_ok = self.step("7. tear down", self.down)
        summary = Table(title="elastivol demo")
        summary.add_column("step")
        summary.add_column("result")
        summary.add_column("seconds", justify="right")
        summary.add_column("what happened")
        for r in self.results:
            summary.add_row(r.name, "[green]pass[/green]" if r.ok else "[red]FAIL[/red]", f"{r.seconds:.1f}", escape(r.detail))
        self.console.print(summary)
        passed = ok and down_ok and len(self.results) == len(steps) + 1
        self.console.print(f"[bold {'green' if passed else 'red'}]demo {'passed' if passed else 'failed'}[/bold "
                           f"{'green' if passed else 'red'}] in {time.perf_counter() - total:.0f} s")
        return 0 if passed else 1


def run_demo(work_dir: Path | None, *, keep: bool, console: Console) -> int:
    base = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="elastivol-demo-", dir="/var/tmp"))
    manifests = base / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    for name, text in MANIFESTS.items():
        (manifests / name).write_text(text)
    console.print(f"lab directory {base / 'lab'}; the manifests it applies are in {manifests}")
    code = Walkthrough(base / "lab", manifests, console).run()
    if not keep:
        shutil.rmtree(base, ignore_errors=True)
    return code
