"""The fault layer models what moto does not; check each behaviour against moto itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.aws.support import ZONE_A, Moto, make_clients
from tests.support.aws_faults import FaultConfig


def _code(fn: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as info:
        fn()
    return str(info.value.response["Error"]["Code"])


def test_client_token_is_honoured_and_survives_a_restart(aws_env: dict[str, str], tmp_path: Path, moto: Moto) -> None:
    state = str(tmp_path / "faults.json")
    clients, _, _ = make_clients(FaultConfig(state_file=state))
    ec2 = clients.client("ec2")
    first = ec2.create_volume(AvailabilityZone=ZONE_A, Size=2, VolumeType="gp3", ClientToken="tok-1")
    mark = moto.mark()
    again = ec2.create_volume(AvailabilityZone=ZONE_A, Size=2, VolumeType="gp3", ClientToken="tok-1")
    assert again["VolumeId"] == first["VolumeId"]
    assert moto.counts(mark)["CreateVolume"] == 0, "a replay must not reach the API"
    assert _code(lambda: ec2.create_volume(AvailabilityZone=ZONE_A, Size=3, VolumeType="gp3",
                                           ClientToken="tok-1")) == "IdempotentParameterMismatch"
    # A new process (a restarted controller) with the same state file remembers the token, as AWS would.
    fresh, _, _ = make_clients(FaultConfig(state_file=state))
    assert fresh.client("ec2").create_volume(AvailabilityZone=ZONE_A, Size=2, VolumeType="gp3",
                                             ClientToken="tok-1")["VolumeId"] == first["VolumeId"]


def test_moto_alone_ignores_client_tokens(raw_ec2: Any) -> None:
    """Why the emulation exists: without it, a retried CreateVolume makes a second volume."""
    a = raw_ec2.create_volume(AvailabilityZone=ZONE_A, Size=1, ClientToken="same")
    b = raw_ec2.create_volume(AvailabilityZone=ZONE_A, Size=1, ClientToken="same")
    assert a["VolumeId"] != b["VolumeId"]


def test_new_volume_is_invisible_then_creating_then_available(aws_env: dict[str, str]) -> None:
    clients, _, _ = make_clients(FaultConfig(consistency_lag=2, creating_polls=2))
    ec2 = clients.client("ec2")
    vid = ec2.create_volume(AvailabilityZone=ZONE_A, Size=1, VolumeType="gp3")["VolumeId"]
    assert _code(lambda: ec2.describe_volumes(VolumeIds=[vid])) == "InvalidVolume.NotFound"
    assert _code(lambda: ec2.describe_volumes(VolumeIds=[vid])) == "InvalidVolume.NotFound"
    states = [ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["State"] for _ in range(3)]
    assert states == ["creating", "creating", "available"]


def test_listings_hide_new_objects_and_are_paginated(aws_env: dict[str, str], cluster: str) -> None:
    clients, _, _ = make_clients(FaultConfig(consistency_lag=1))
    ec2 = clients.client("ec2")
    tag = [{"ResourceType": "volume", "Tags": [{"Key": "elastivol.io/cluster", "Value": cluster}]}]
    ids = [ec2.create_volume(AvailabilityZone=ZONE_A, Size=1, TagSpecifications=tag)["VolumeId"] for _ in range(5)]
    flt = [{"Name": "tag:elastivol.io/cluster", "Values": [cluster]}]
    assert ec2.describe_volumes(Filters=flt)["Volumes"] == []  # one listing does not see them yet
    seen: list[str] = []
    page = ec2.describe_volumes(Filters=flt, MaxResults=2)
    pages = 1
    seen += [v["VolumeId"] for v in page["Volumes"]]
    while page.get("NextToken"):
        page = ec2.describe_volumes(Filters=flt, MaxResults=2, NextToken=page["NextToken"])
        seen += [v["VolumeId"] for v in page["Volumes"]]
        pages += 1
    assert sorted(seen) == sorted(ids) and pages == 3


def test_throttling_is_retried_by_botocore(aws_env: dict[str, str]) -> None:
    rule = {"operation": "DescribeAvailabilityZones", "code": "RequestLimitExceeded", "status": 503, "times": 2}
    clients, _, metrics = make_clients(FaultConfig(errors=[rule]))
    clients.client("ec2").describe_availability_zones()
    assert metrics.tally["call:DescribeAvailabilityZones"] == 1
    assert metrics.tally["throttle:DescribeAvailabilityZones"] == 2
    assert metrics.tally["request:DescribeAvailabilityZones"] == 3


def test_attach_goes_through_attaching_and_conflicts_are_refused(
    aws_env: dict[str, str], make_instance: Callable[..., str]
) -> None:
    clients, _, _ = make_clients(FaultConfig(attaching_polls=2, detaching_polls=1, attachment_limit=3))
    ec2 = clients.client("ec2")
    node, other = make_instance(), make_instance()
    vid = ec2.create_volume(AvailabilityZone=ZONE_A, Size=1)["VolumeId"]
    assert ec2.attach_volume(VolumeId=vid, InstanceId=node, Device="/dev/xvdaa")["State"] == "attaching"
    states = [ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Attachments"][0]["State"] for _ in range(3)]
    assert states == ["attaching", "attaching", "attached"]
    assert _code(lambda: ec2.attach_volume(VolumeId=vid, InstanceId=other, Device="/dev/xvdab")) == "VolumeInUse"
    second = ec2.create_volume(AvailabilityZone=ZONE_A, Size=1)["VolumeId"]
    assert _code(lambda: ec2.attach_volume(VolumeId=second, InstanceId=node, Device="/dev/xvdaa")) == "InvalidParameterValue"
    ec2.attach_volume(VolumeId=second, InstanceId=node, Device="/dev/xvdab")
    third = ec2.create_volume(AvailabilityZone=ZONE_A, Size=1)["VolumeId"]
    # root + two volumes = the limit of 3 mappings
    assert _code(lambda: ec2.attach_volume(VolumeId=third, InstanceId=node, Device="/dev/xvdac")) == "AttachmentLimitExceeded"
    ec2.detach_volume(VolumeId=vid, InstanceId=node)
    assert ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Attachments"][0]["State"] == "detaching"
    assert ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Attachments"] == []


def test_injected_errors_and_latency(aws_env: dict[str, str]) -> None:
    clients, _, _ = make_clients(FaultConfig(latency_ms=30, errors=[
        {"operation": "DescribeVolumes", "code": "UnauthorizedOperation", "message": "no", "status": 403, "times": 1}]))
    ec2 = clients.client("ec2")
    start = time.monotonic()
    assert _code(lambda: ec2.describe_volumes()) == "UnauthorizedOperation"
    ec2.describe_volumes()
    assert time.monotonic() - start >= 0.06
