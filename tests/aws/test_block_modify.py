"""ControllerModifyVolume with --provider aws, through the real gRPC socket of a child `elastivol serve`.

moto answers ModifyVolume at once and accepts any number of them; the fault layer plays EC2's
``modifying`` -> ``optimizing`` states and its two limits (one modification at a time, six hours
between two). The EC2 calls a modification costs are read from the server's own metrics.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from elastivol.csi import csi_pb2
from tests.aws.support import ZONE_A, AwsServer, Moto, start_server
from tests.helpers import expect_error

GiB = 1 << 30
FAULTS = {"latency_ms": 5, "consistency_lag": 1, "creating_polls": 1, "modifying_polls": 2, "optimizing_polls": 1,
          "modify_one_at_a_time": True, "modify_cooldown_s": 6 * 3600}


@pytest.fixture(scope="module")
def server(aws_work: Path, aws_env: dict[str, str]) -> Iterator[AwsServer]:
    work = aws_work / f"modify-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    srv = start_server(work, cluster=f"modify-{uuid.uuid4().hex[:8]}", faults=FAULTS)
    yield srv
    srv.stop()


def _modify(srv: AwsServer, volume_id: str, **params: str) -> csi_pb2.ControllerModifyVolumeResponse:
    with srv.client() as client:
        return client.controller.ControllerModifyVolume(csi_pb2.ControllerModifyVolumeRequest(
            volume_id=volume_id, mutable_parameters=params), timeout=120)


def _volume(srv: AwsServer, name: str, size_gib: int, **params: str) -> str:
    with srv.client() as client:
        return str(client.create_volume(name, size_gib * GiB, parameters=params, zone=ZONE_A).volume_id)


def _ec2(raw_ec2: Any, volume_id: str) -> dict[str, Any]:
    return dict(raw_ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0])


def test_gp3_to_io2_is_one_modify_volume_and_a_retry_sends_none(server: AwsServer, moto: Moto, raw_ec2: Any) -> None:
    vid = _volume(server, "pvc-modify-io2", 10, type="gp3")
    before, mark = server.calls(), moto.mark()
    _modify(server, vid, type="io2", iops="5000", tagSpecification_1="tier=fast")
    used = server.calls() - before
    print(f"\nEC2 calls for one ControllerModifyVolume (gp3 -> io2, 5000 IOPS, one tag): {dict(sorted(used.items()))}")
    assert moto.counts(mark)["ModifyVolume"] == 1
    assert used["ModifyVolume"] == 1 and used["CreateTags"] == 1
    assert used["DescribeVolumesModifications"] >= 3, "modifying, modifying, then optimizing: waited through each"
    v = _ec2(raw_ec2, vid)
    assert (v["VolumeType"], v["Iops"]) == ("io2", 5000)
    assert {"Key": "tier", "Value": "fast"} in v["Tags"]
    mark, before = moto.mark(), server.calls()
    _modify(server, vid, type="io2", iops="5000", tagSpecification_1="tier=fast")
    retry = server.calls() - before
    print(f"EC2 calls for the same ControllerModifyVolume again: {dict(sorted(retry.items()))}")
    assert moto.counts(mark)["ModifyVolume"] == 0 and moto.counts(mark)["CreateTags"] == 0
    assert set(retry) <= {"DescribeVolumes", "DescribeVolumesModifications"}


def test_the_cooldown_says_when_the_next_change_is_possible(server: AwsServer, moto: Moto, raw_ec2: Any) -> None:
    vid = _volume(server, "pvc-modify-cooldown", 20, type="gp3")
    _modify(server, vid, iops="4000")
    msg = expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, _modify, server, vid, iops="6000", throughput="250")
    assert "at least 6 hours" in msg and "next change is possible from about" in msg
    assert re.search(r"\(in about (5 h 5\d|6 h 0) min\)", msg), msg
    assert _ec2(raw_ec2, vid)["Iops"] == 4000


def test_validation_happens_before_ec2_is_asked(server: AwsServer, moto: Moto) -> None:
    vid = _volume(server, "pvc-modify-refused", 10, type="gp3")
    mark = moto.mark()
    msg = expect_error(grpc.StatusCode.INVALID_ARGUMENT, _modify, server, vid, type="io2", iops="20000")
    assert "1000 IOPS per GiB" in msg and "at most 10000" in msg and "at least 20 GiB" in msg
    msg = expect_error(grpc.StatusCode.INVALID_ARGUMENT, _modify, server, vid, type="gp3", iops="6000")
    assert "at most 5000" in msg  # gp3: 500 IOPS per GiB
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, _modify, server, vid, blockSize="4096")
    expect_error(grpc.StatusCode.NOT_FOUND, _modify, server, "vol-0000000000000000f", type="gp2")
    assert moto.counts(mark)["ModifyVolume"] == 0


def test_a_second_call_while_the_first_runs_is_aborted(server: AwsServer, moto: Moto, raw_ec2: Any) -> None:
    vid = _volume(server, "pvc-modify-busy", 10, type="gp3")
    mark = moto.mark()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            _modify(server, vid, type="io2", iops="3000")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    t = threading.Thread(target=first)
    t.start()
    try:
        # The first call waits at least the coalescing window (0.5 s) before it sends ModifyVolume.
        time.sleep(0.2)
        expect_error(grpc.StatusCode.ABORTED, _modify, server, vid, type="io2", iops="3000")
    finally:
        t.join(60)
    assert not errors
    assert moto.counts(mark)["ModifyVolume"] == 1
    assert _ec2(raw_ec2, vid)["VolumeType"] == "io2"


def test_an_expansion_and_a_modification_together_are_one_modify_volume(
        server: AwsServer, moto: Moto, raw_ec2: Any) -> None:
    # EBS takes one modification per volume and then none for six hours (the fault layer enforces
    # both): a resize and a class change that arrive together must travel in one ModifyVolume.
    vid = _volume(server, "pvc-modify-and-grow", 10, type="gp3")
    mark = moto.mark()
    errors: list[BaseException] = []

    def expand() -> None:
        try:
            with server.client() as client:
                client.controller.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
                    volume_id=vid, capacity_range=csi_pb2.CapacityRange(required_bytes=20 * GiB)), timeout=120)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    t = threading.Thread(target=expand)
    t.start()
    try:
        _modify(server, vid, type="io2", iops="8000")
    finally:
        t.join(60)
    assert not errors, errors
    sent = [r.params for r in moto.requests(mark) if r.action == "ModifyVolume" and r.key != "fault-layer"]
    assert len(sent) == 1, sent
    assert (sent[0]["Size"], sent[0]["VolumeType"], sent[0]["Iops"]) == ("20", "io2", "8000")
    v = _ec2(raw_ec2, vid)
    assert (v["Size"], v["VolumeType"], v["Iops"]) == (20, "io2", 8000)
