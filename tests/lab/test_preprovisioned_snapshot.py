"""A pre-provisioned VolumeSnapshotContent (a snapshot made outside Kubernetes) binds and restores."""

from __future__ import annotations

import time
from pathlib import Path

from tests.lab.conftest import lab
from tests.lab.manifests import claim, docs, mount_pod, wffc_class

VSC = """\
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata: {name: vsc}
driver: block.csi.elastivol.io
deletionPolicy: Retain
"""


def _source(mnt: str) -> str:
    """An xfs class, a Retain snapshot class, and a claim whose pod writes ``kept`` to MNT/mark."""
    return docs(wffc_class("snapsrc", "{type: gp3, csi.storage.k8s.io/fstype: xfs}"), VSC, claim("src", "snapsrc"),
                mount_pod("src", "src", mnt, f"echo kept > {mnt}/mark; sync; sleep 600"))


SNAPSHOT = """\
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: dynamic}
spec: {volumeSnapshotClassName: vsc, source: {persistentVolumeClaimName: src}}
"""
IMPORTED = """\
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotContent
metadata: {name: imported}
spec:
  deletionPolicy: Retain
  driver: block.csi.elastivol.io
  source: {snapshotHandle: %(handle)s}
  volumeSnapshotRef: {name: imported, namespace: default}
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: imported}
spec: {source: {volumeSnapshotContentName: imported}}
"""


def _static(handle: str, mnt: str) -> str:
    """The snapshot ``handle`` imported as content and snapshot ``imported``, restored, and read by a pod."""
    restored = claim("restored", "snapsrc",
                     "dataSource: {name: imported, kind: VolumeSnapshot, apiGroup: snapshot.storage.k8s.io}")
    return docs(IMPORTED % {"handle": handle}, restored, mount_pod("reader", "restored", mnt))


def _get(directory: Path, *args: str, want: str = "", timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = lab(directory, "get", *args).stdout.strip()
        if (out == want) if want else out:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"`lab get {' '.join(args)}` gave {out!r}, waiting for {want or 'a value'!r}")
        time.sleep(0.3)


def test_preprovisioned_content_binds_and_restores(lab_dir: Path) -> None:
    mnt = str(lab_dir / "mnt-d")
    lab(lab_dir, "apply", "-f", "-", input=_source(mnt), check=True)
    deadline = time.monotonic() + 60
    while lab(lab_dir, "exec", "src", "--", "cat", f"{mnt}/mark").stdout.strip() != "kept":
        assert time.monotonic() < deadline, "the source pod never wrote its file"
        time.sleep(0.3)
    lab(lab_dir, "apply", "-f", "-", input=SNAPSHOT, check=True)
    _get(lab_dir, "volumesnapshot", "dynamic", "-o", "jsonpath={.status.readyToUse}", want="true")
    content = _get(lab_dir, "volumesnapshot", "dynamic", "-o", "jsonpath={.status.boundVolumeSnapshotContentName}")
    handle = _get(lab_dir, "volumesnapshotcontent", content, "-o", "jsonpath={.status.snapshotHandle}")
    assert handle.startswith("snap-")
    # Forget the dynamic snapshot's objects (Retain keeps the snapshot itself), then import it by handle.
    lab(lab_dir, "delete", "volumesnapshot", "dynamic", check=True)
    lab(lab_dir, "delete", "volumesnapshotcontent", content, check=True)
    lab(lab_dir, "apply", "-f", "-", input=_static(handle, mnt), check=True)
    _get(lab_dir, "volumesnapshot", "imported", "-o", "jsonpath={.status.readyToUse}", want="true")
    assert _get(lab_dir, "volumesnapshot", "imported", "-o", "jsonpath={.status.boundVolumeSnapshotContentName}") \
        == "imported"
    assert _get(lab_dir, "volumesnapshot", "imported", "-o", "jsonpath={.status.restoreSize}") == "1Gi"
    _get(lab_dir, "pod", "reader", "-o", "jsonpath={.status.phase}", want="Running", timeout=90)
    assert lab(lab_dir, "exec", "reader", "--", "cat", f"{mnt}/mark", check=True).stdout.strip() == "kept"
    for kind, name in (("pod", "reader"), ("pod", "src"), ("pvc", "restored"), ("pvc", "src"),
                       ("volumesnapshot", "imported"), ("volumesnapshotcontent", "imported")):
        lab(lab_dir, "delete", kind, name, check=True)
