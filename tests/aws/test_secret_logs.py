"""A real server call that carries secrets and ends in an internal error: the secret reaches neither
the log (message, fields, traceback) nor the status message the CO sees."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc

from elastivol.client import volume_capability
from elastivol.csi import csi_pb2
from elastivol.drivers.common import topology
from tests.aws.support import ZONE_A, start_server
from tests.helpers import expect_error


def test_an_internal_error_echoing_a_secret_is_logged_with_its_traceback_but_not_the_secret(
    aws_work: Path, aws_env: dict[str, str]
) -> None:
    mark = uuid.uuid4().hex
    secret = f"tok-{mark}-it's\\a-sécret"
    # EC2 (the fault layer playing it) answers DescribeSnapshots with an error that echoes the secret:
    # an unknown code, so the provider raises Internal from botocore's ClientError, and the server
    # logs the whole chain with its traceback.
    faults = {"errors": [{"operation": "DescribeSnapshots", "code": "BackendEchoedYourToken", "status": 400,
                          "message": f"request carried token {secret}", "times": -1}]}
    work = aws_work / f"secrets-{mark[:6]}"
    work.mkdir()
    srv = start_server(work, cluster=f"sec-{mark[:8]}", faults=faults)
    try:
        request = csi_pb2.CreateVolumeRequest(
            name=f"pvc-secret-{mark[:8]}", capacity_range=csi_pb2.CapacityRange(required_bytes=1 << 30),
            volume_capabilities=[volume_capability()], secrets={"token": secret},
            accessibility_requirements=csi_pb2.TopologyRequirement(requisite=[topology(ZONE_A)]),
            volume_content_source=csi_pb2.VolumeContentSource(
                snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id="snap-0123456789abcdef0")))
        with srv.client() as client:
            details = expect_error(grpc.StatusCode.INTERNAL, client.controller.CreateVolume, request, timeout=60)
        assert "BackendEchoedYourToken" in details and mark not in details
    finally:
        srv.stop()
    text = srv.process.log_path.read_text()
    assert "Traceback" in text and "ClientError" in text and "BackendEchoedYourToken" in text, text[-3000:]
    assert mark not in text, "the secret reached the log"
