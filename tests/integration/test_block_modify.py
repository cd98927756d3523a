"""ControllerModifyVolume on the local provider, through the real gRPC socket, on real loop devices.

The volume is published raw to a "pod" cgroup (as podInfoOnMount gives it); a modification recorded
by the controller moves the throttle of the running pod's device without any node call or detach.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import grpc
import pytest

from bench.env import Env, served_pool
from bench.perf import Case, Published
from elastivol.assembly.local_block import IO_RECONCILE_SECONDS
from elastivol.csi import csi_pb2
from elastivol.locks import _flock
from elastivol.node import iothrottle
from elastivol.providers.local.pool import Pool
from elastivol.units import MiB
from tests.helpers import expect_error

HIERARCHY = iothrottle.detect()
pytestmark = pytest.mark.skipif(HIERARCHY is None, reason="no cgroup I/O controller here (neither blkio v1 nor io v2)")
BAD = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with served_pool("modify-test", 2 << 30, extra=["--overcommit-ratio", "1000"]) as e:
        yield e


def _modify(env: Env, volume_id: str, **params: str) -> csi_pb2.ControllerModifyVolumeResponse:
    return env.client.controller.ControllerModifyVolume(csi_pb2.ControllerModifyVolumeRequest(
        volume_id=volume_id, mutable_parameters=params), timeout=60)


def _record(env: Env, volume_id: str) -> dict[str, str]:
    rec = Pool(env.pool).volumes.get(volume_id)
    assert rec is not None
    return dict(rec["params"])


def _record_file(env: Env, volume_id: str) -> os.stat_result:
    found = [p for p in env.pool.rglob(f"{volume_id}*.json")]
    assert len(found) == 1, found
    return found[0].stat()


def test_modify_volume_is_advertised(env: Env) -> None:
    caps = env.client.controller.ControllerGetCapabilities(csi_pb2.ControllerGetCapabilitiesRequest()).capabilities
    assert csi_pb2.ControllerServiceCapability.RPC.MODIFY_VOLUME in {c.rpc.type for c in caps}


def test_refusals_name_the_rule_and_the_fix(env: Env) -> None:
    vol = env.client.create_volume("modify-refusals", 4 << 30, parameters={"type": "gp3"}, zone="zone-a")
    vid = vol.volume_id
    before = _record(env, vid)
    msg = expect_error(BAD, _modify, env, vid, encrypted="true")
    assert "'encrypted'" in msg and "tagSpecification_<N>" in msg
    # io2 takes at most 1000 IOPS per GiB: 4 GiB -> 4000.
    msg = expect_error(BAD, _modify, env, vid, type="io2", iops="5000")
    assert "1000 IOPS per GiB" in msg and "at most 4000" in msg and "at least 5 GiB" in msg
    # gp3: 0.25 MiB/s per IOPS; 3000 IOPS carry at most 750 MiB/s.
    msg = expect_error(BAD, _modify, env, vid, throughput="1000")
    assert "0.25 MiB/s per IOPS" in msg and "4000 IOPS" in msg
    msg = expect_error(BAD, _modify, env, vid, type="io2")
    assert "needs provisioned IOPS" in msg and "iops" in msg
    msg = expect_error(BAD, _modify, env, vid, type="st1")
    assert "125-16384 GiB" in msg and "expand the claim to at least 125 GiB" in msg
    msg = expect_error(BAD, _modify, env, vid, type="io2", iops="2000", throughput="200")
    assert "only gp3 volumes take a throughput" in msg
    msg = expect_error(BAD, _modify, env, vid, iops="abc")
    assert "iops must be a positive whole number" in msg
    msg = expect_error(BAD, _modify, env, vid, tagSpecification_1="kubernetes.io/x=y")
    assert "reserved" in msg
    assert _record(env, vid) == before  # nothing of a refused change was kept
    expect_error(grpc.StatusCode.NOT_FOUND, _modify, env, "vol-0123456789abcdef0", type="gp2")
    env.client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), timeout=60)


def test_a_retry_while_another_call_owns_the_volume_is_aborted(env: Env) -> None:
    vol = env.client.create_volume("modify-busy", 4 << 30, parameters={"type": "gp3"}, zone="zone-a")
    fd = _flock(Pool(env.pool).lock_dir, vol.volume_id)  # as another process's call on this volume would
    try:
        expect_error(grpc.StatusCode.ABORTED, _modify, env, vol.volume_id, type="io2", iops="2000")
    finally:
        os.close(fd)
    assert _record(env, vol.volume_id)["type"] == "gp3"
    env.client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id), timeout=60)


def test_gp3_to_io2_moves_the_running_pods_limits_once(env: Env) -> None:
    pub = Published(env, Case("modify gp3 io2", {"type": "gp3", "tagSpecification_1": "team=a"}, 4))
    try:
        assert HIERARCHY is not None
        dev = iothrottle.device_number(str(pub.target))
        assert iothrottle.read_limits(HIERARCHY, pub.cgroup, dev) == iothrottle.IoLimits(3000, 125 * MiB)
        _modify(pub.env, pub.volume_id, type="io2", iops="2000", tagSpecification_1="tier=fast")
        rec = _record(env, pub.volume_id)
        assert rec["type"] == "io2" and rec["iops"] == "2000" and "throughput" not in rec
        assert sorted(v for k, v in rec.items() if k.startswith("tagSpecification_")) == ["team=a", "tier=fast"]
        first = _record_file(env, pub.volume_id)
        want = iothrottle.IoLimits(2000, 500 * MiB)  # io2: 2000 IOPS x 256 KiB
        deadline = time.monotonic() + 3 * IO_RECONCILE_SECONDS
        while iothrottle.read_limits(HIERARCHY, pub.cgroup, dev) != want and time.monotonic() < deadline:
            time.sleep(0.2)
        assert iothrottle.read_limits(HIERARCHY, pub.cgroup, dev) == want
        # The same request again (a sidecar's retry): OK, and the record is not written a second time.
        _modify(pub.env, pub.volume_id, type="io2", iops="2000", tagSpecification_1="tier=fast")
        again = _record_file(env, pub.volume_id)
        assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
        # The device stayed attached throughout: same loop device, still published.
        assert iothrottle.device_number(str(pub.target)) == dev
    finally:
        pub.close()


def test_iops_per_gb_follows_the_size(env: Env) -> None:
    vol = env.client.create_volume("modify-pergb", 8 << 30, parameters={"type": "gp3"}, zone="zone-a")
    _modify(env, vol.volume_id, type="io1", iopsPerGB="50")
    rec = Pool(env.pool).volumes.get(vol.volume_id)
    assert rec is not None
    assert rec["params"]["iopsPerGB"] == "50" and rec["performance"] == {"iops": "400"}
    env.client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vol.volume_id), timeout=60)
