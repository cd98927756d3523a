"""A node whose staging or target path hangs must not stall the plugin's other calls.

The hung path is a FUSE mount whose daemon never answers: the test opens /dev/fuse and mounts
it, then never reads the device. Every lookup below that mount blocks in the kernel, as under
a stopped FUSE daemon or a dead NFS server. Node calls on such paths wait; Probe,
NodeGetCapabilities and other volumes' calls keep their normal latency. Closing the device
aborts the connection, and the hung calls end.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from elastivol.client import MOUNT, CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.node import _sys, mount
from elastivol.process import ServerProcess
from tests.helpers import new_volume
from tests.reliability.conftest import NODE, ServerFactory

MNT_DETACH = 2
PROBES = 300


@pytest.fixture
def hung_dir(rel_pool: Path) -> Iterator[tuple[Path, int]]:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("this kernel offers no /dev/fuse, so no hung mount can be made here")
    where = rel_pool.parent / "kubelet" / "hung"
    where.mkdir(parents=True, exist_ok=True)
    fd = os.open("/dev/fuse", os.O_RDWR)
    _sys.mount("elastivol-hung", str(where), "fuse", 0, f"fd={fd},rootmode=40000,user_id=0,group_id=0")
    try:
        yield where, fd
    finally:
        try:
            os.close(fd)  # aborts the connection: blocked lookups fail with ENOTCONN
        except OSError:
            pass
        if any(m.target == str(where) for m in mount.mounts()):
            _sys.umount2(str(where), MNT_DETACH)


def _hang(errors: dict[str, grpc.StatusCode], name: str, call: object, request: object) -> threading.Thread:
    def run() -> None:
        try:
            call(request, timeout=120)  # type: ignore[operator]
            errors[name] = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            errors[name] = exc.code()

    t = threading.Thread(target=run, name=f"hung-{name}", daemon=True)
    t.start()
    return t


def _latencies(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - start) * 1000)
    return out


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def test_a_hung_path_stalls_only_its_own_call(server_factory: ServerFactory, rel_pool: Path,
                                              hung_dir: tuple[Path, int]) -> None:
    hung, fd = hung_dir
    server: ServerProcess = server_factory("hung").start()
    work = rel_pool.parent
    cap = volume_capability(MOUNT, fs_type="ext4")
    with CsiClient(server.endpoint) as c:
        probe = lambda: c.identity.Probe(csi_pb2.ProbeRequest(), timeout=5)  # noqa: E731
        caps = lambda: c.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest(), timeout=5)  # noqa: E731
        before = _latencies(probe, PROBES)

        stuck = new_volume(c, work, "hung-vol", node_id=NODE)
        stuck.controller_publish()
        ended: dict[str, grpc.StatusCode] = {}
        threads = [
            _hang(ended, "NodeStageVolume", c.node.NodeStageVolume, csi_pb2.NodeStageVolumeRequest(
                volume_id=stuck.id, staging_target_path=str(hung / "staging"), volume_capability=cap,
                publish_context=stuck.publish_context)),
            _hang(ended, "NodePublishVolume", c.node.NodePublishVolume, csi_pb2.NodePublishVolumeRequest(
                volume_id=stuck.id, staging_target_path=str(work / "kubelet" / "staging-ok"),
                target_path=str(hung / "target"), volume_capability=cap)),
            _hang(ended, "NodeGetVolumeStats", c.node.NodeGetVolumeStats, csi_pb2.NodeGetVolumeStatsRequest(
                volume_id=stuck.id, volume_path=str(hung / "target"))),
        ]
        time.sleep(0.5)
        assert all(t.is_alive() for t in threads), f"the hung calls should still wait: {ended}"

        during = _latencies(probe, PROBES)
        caps_during = _latencies(caps, PROBES // 3)
        # Another volume goes through its whole node life while the three calls hang.
        other = new_volume(c, work, "beside-hung", node_id=NODE)
        start = time.perf_counter()
        other.up()
        other.down()
        other.delete()
        beside_s = time.perf_counter() - start
        assert all(t.is_alive() for t in threads), "nothing but closing the device ends the hang"

        print(f"\nProbe p99 before {_p99(before):.2f} ms, while 3 node calls hang {_p99(during):.2f} ms; "
              f"NodeGetCapabilities p99 {_p99(caps_during):.2f} ms; another volume's lifecycle {beside_s:.2f} s")
        assert _p99(during) < 50, f"Probe p99 {_p99(during):.1f} ms while a node call hangs"
        assert _p99(caps_during) < 50

        os.close(fd)  # the daemon "dies": the kernel fails the blocked lookups
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert grpc.StatusCode.INTERNAL not in ended.values(), ended
        # What an operator does next: lazily unmount the dead filesystem, then the CO's retries
        # of unstage succeed and the volume can go.
        _sys.umount2(str(hung), MNT_DETACH)
        c.node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
            volume_id=stuck.id, staging_target_path=str(hung / "staging")), timeout=30)
        stuck.controller_unpublish()
        stuck.delete()
