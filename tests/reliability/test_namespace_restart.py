"""A node plugin restarted in a new mount namespace (a new container) still finds its loop devices.

Every plugin here is a real ``elastivol serve`` in a mount namespace of its own with the pool
bound at a path only that namespace has (see :mod:`tests.reliability.pods`). When it is
killed its namespace ends, and sysfs names the backing files of the devices it attached
relative to a mount that no longer exists: only their device and inode still say what they
are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from elastivol import ids
from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.node import fs as hostfs
from elastivol.node import loop, mount
from elastivol.providers.local.pool import Pool
from tests.helpers import Vol, expect_error, new_volume
from tests.reliability.conftest import NODE, PodFactory
from tests.reliability.pods import PodServer, in_new_namespace, pod_clean, shared_images
from tests.support import crash


@contextmanager
def _pod_with_volume(pods: PodFactory, pool: Path, name: str, kind: str) -> Iterator[tuple[PodServer, Vol]]:
    """A new pod ``name`` serving, and a new volume of ``kind`` (also named ``name``) for this node on it."""
    server = pods(name).start()
    with CsiClient(server.endpoint) as client:
        yield server, new_volume(client, pool.parent, name, kind=kind, node_id=NODE)


def _image(pool: Path, vol: Vol) -> Path:
    return Pool(pool).image_path(vol.id)


def test_unstage_restage_delete_after_restart_in_new_namespace(pods: PodFactory, rel_pool: Path) -> None:
    with _pod_with_volume(pods, rel_pool, "ns-restart", "xfs") as (server, vol):
        vol.up()
        checksum = vol.write(1 << 20)
    image = _image(rel_pool, vol)
    [first] = loop.find(image)
    # sysfs names the file as the plugin's namespace saw it: not a path the host can match.
    assert first.backing_file == str(server.pod_pool / "images" / image.name) != str(image)

    server.kill()  # the pod is gone, and its namespace with it
    assert Path(f"/sys/block/loop{first.number}/loop/backing_file").read_text().strip() != str(image)
    server.start()  # a new pod: new namespace, pool at another path
    # Start-up recovery left the staged device alone: its volume is attached to this node.
    assert [d.path for d in loop.find(image)] == [first.path]
    with vol.reconnected(server.endpoint):
        vol.unpublish()
        vol.unstage()
        assert loop.find(image) == [], "NodeUnstageVolume left the old pod's loop device attached"
        assert not mount.is_mountpoint(vol.staging)
        vol.stage()
        vol.publish()
        assert len(loop.find(image)) == 1
        assert vol.checksum(1 << 20) == checksum

    server.kill()
    server.start()
    with vol.reconnected(server.endpoint):
        vol.down()
        vol.delete()
    assert not image.exists()
    assert Pool(rel_pool).loop_devices() == [], "a loop device holds a deleted pool image"
    assert pod_clean(rel_pool) == []


def test_delete_refuses_while_a_dead_pods_device_is_mounted(pods: PodFactory, rel_pool: Path) -> None:
    with _pod_with_volume(pods, rel_pool, "ns-delete", "ext4") as (server, vol):
        vol.controller_publish()
        vol.stage()
    image = _image(rel_pool, vol)
    [dev] = loop.find(image)
    server.kill()
    server.start()
    with vol.reconnected(server.endpoint):
        # A CO that lost track of the staging: detached in its books, never unstaged.
        vol.controller_unpublish()
        details = expect_error(grpc.StatusCode.FAILED_PRECONDITION, vol.delete, match=dev.path)
        assert str(vol.staging) in details, details
        assert image.exists() and [d.path for d in loop.find(image)] == [dev.path]
        # Unmounted by hand (from the host; the mount propagates): nothing holds the device now,
        # so DeleteVolume detaches it and removes the image.
        mount.unmount(str(vol.staging))
        vol.delete()
    assert not image.exists()
    assert Pool(rel_pool).loop_devices() == []
    assert pod_clean(rel_pool) == []


def test_plugin_killed_in_the_middle_of_node_stage(pods: PodFactory, rel_pool: Path) -> None:
    work = rel_pool.parent
    server = pods("ns-midstage", env={crash.PAUSE_ENV: "stage.after_mkfs=60"}).start()
    client = CsiClient(server.endpoint)
    vol = new_volume(client, work, "ns-midstage", kind="xfs", node_id=NODE)
    vol.controller_publish()
    image = _image(rel_pool, vol)
    failed: list[grpc.StatusCode] = []

    def stage() -> None:
        try:
            vol.stage()
        except grpc.RpcError as exc:
            failed.append(exc.code())

    staging = threading.Thread(target=stage)
    staging.start()
    deadline = time.monotonic() + 60
    while not (loop.find(image) and hostfs.detect(loop.find(image)[0].path) == "xfs"):
        assert time.monotonic() < deadline, "NodeStageVolume never reached the made filesystem"
        time.sleep(0.05)
    server.kill()  # attached and formatted, not mounted
    staging.join(30)
    client.close()
    assert failed == [grpc.StatusCode.UNAVAILABLE]
    assert len(loop.find(image)) == 1 and not mount.is_mountpoint(vol.staging)

    server.env = {}
    server.start()
    with vol.reconnected(server.endpoint):
        vol.stage()
        assert len(loop.find(image)) == 1, shared_images(rel_pool)
        vol.publish()
        checksum = vol.write(1 << 20)
        assert vol.checksum(1 << 20) == checksum
        vol.down()
        assert loop.find(image) == []
        vol.delete()
    assert pod_clean(rel_pool) == []


def _attach_in_a_dead_namespace(pool: Path, ns_dir: Path, image: Path) -> str:
    """Attach ``image`` from a short-lived namespace with the pool at another path; the device's path."""
    pod_pool = ns_dir / f"attacher-{time.monotonic_ns()}" / "pool"
    inside = pod_pool / image.relative_to(pool)
    code = f"from elastivol.node import loop; print(loop.attach({str(inside)!r}).path)"
    out = subprocess.run(
        [*in_new_namespace(pool, pod_pool), sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    return out.stdout.strip()


def test_doctor_and_recovery_find_devices_a_dead_namespace_attached(pods: PodFactory, rel_pool: Path) -> None:
    pool = Pool(rel_pool)
    ns_dir = rel_pool.parent / "ns"
    # One device over a live image no record claims, one over an image deleted since.
    orphan = pool.image_path(ids.new_id("vol"))
    deleted = pool.image_path(ids.new_id("vol"))
    for image in (orphan, deleted):
        with open(image, "wb") as fh:
            fh.truncate(64 << 20)
    on_orphan = _attach_in_a_dead_namespace(rel_pool, ns_dir, orphan)
    on_deleted = _attach_in_a_dead_namespace(rel_pool, ns_dir, deleted)
    deleted.unlink()
    orphan.unlink()  # doctor would offer to remove it too; only the devices matter here
    for path in (on_orphan, on_deleted):
        assert not Path(f"/sys/block/{Path(path).name}/loop/backing_file").read_text().startswith(str(rel_pool))

    proc = subprocess.run([sys.executable, "-m", "elastivol", "doctor", "--pool", str(rel_pool),
                           "--kubelet-dir", str(rel_pool.parent / "kubelet")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    for path, vol_id in ((on_orphan, orphan.stem), (on_deleted, deleted.stem)):
        assert f"loop-without-volume: {path}\n" in proc.stdout, proc.stdout
        assert vol_id in proc.stdout
    # ... and says what will happen to each: nothing holds them, so they are detached.
    assert proc.stdout.count("nothing holds it, so start-up recovery and --fix detach it") == 2, proc.stdout

    # A node plugin starting (in a new pod) detaches them: no volume record claims them.
    server = pods("ns-recovery").start()
    server.stop()
    assert Pool(rel_pool).loop_devices() == []
    assert f"loop-without-volume {on_deleted}" in server.log_path.read_text()
    assert pod_clean(rel_pool) == []


def test_delete_snapshot_detaches_an_unused_device_a_dead_namespace_left(pods: PodFactory, rel_pool: Path) -> None:
    work = rel_pool.parent
    with _pod_with_volume(pods, rel_pool, "ns-snapshot", "ext4") as (_, vol):
        snap = vol.client.controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
            name="ns-snapshot-snap", source_volume_id=vol.id), timeout=120).snapshot
        image = Pool(rel_pool).snapshot_path(snap.snapshot_id)
        device = _attach_in_a_dead_namespace(rel_pool, work / "ns", image)
        assert [d.path for d in loop.find(image)] == [device]
        vol.client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id), timeout=60)
        assert not image.exists()
        vol.delete()
    assert Pool(rel_pool).loop_devices() == []
    assert pod_clean(rel_pool) == []


def test_doctor_detaches_the_second_device_of_an_image(pods: PodFactory, rel_pool: Path) -> None:
    """The issue's step 3 (a restarted plugin attached a second device), repaired by doctor --fix."""
    work = rel_pool.parent
    with _pod_with_volume(pods, rel_pool, "ns-twice", "ext4") as (server, vol):
        vol.controller_publish()
    server.stop()
    image = _image(rel_pool, vol)
    first = _attach_in_a_dead_namespace(rel_pool, work / "ns", image)
    second = _attach_in_a_dead_namespace(rel_pool, work / "ns", image)
    doctor = [sys.executable, "-m", "elastivol", "doctor", "--pool", str(rel_pool), "--kubelet-dir",
              str(work / "kubelet"), "--json"]
    findings = json.loads(subprocess.run(doctor, capture_output=True, text=True, timeout=120).stdout)
    [twice] = [f for f in findings if f["kind"] == "image-with-several-loop-devices"]
    assert twice["safe_fix"] and first in twice["subject"] and second in twice["subject"], twice
    assert f"{first} is kept, {second} (unused)" in twice["detail"], twice
    subprocess.run([*doctor, "--fix"], capture_output=True, text=True, timeout=120)
    assert [d.path for d in loop.find(image)] == [first]
    server.start()
    with vol.reconnected(server.endpoint):
        vol.unstage()  # what the CO does for a volume it is unsure of: the device goes too
        assert loop.find(image) == []
        vol.controller_unpublish()
        vol.delete()
    assert pod_clean(rel_pool) == []
