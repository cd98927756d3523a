"""Fixtures for the aws provider: one moto server per session, in-process clients with faults."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from elastivol.node import mount
from tests.aws.support import REGION, ZONE_A, Moto, start_moto, stop

# Fast waits: moto answers in milliseconds.
FAST = {
    "ELASTIVOL_AWS_POLL_INITIAL": "0.02",
    "ELASTIVOL_AWS_POLL_MAX": "0.1",
    "ELASTIVOL_AWS_BATCH_INTERVAL": "0.05",
    "ELASTIVOL_AWS_MODIFY_WINDOW": "0.1",
    "ELASTIVOL_AWS_ATTACH_TIMEOUT": "10",
    "ELASTIVOL_AWS_DETACH_TIMEOUT": "10",
    "ELASTIVOL_AWS_CREATE_TIMEOUT": "20",
    "ELASTIVOL_AWS_DEVICE_WAIT": "2",
    "ELASTIVOL_AWS_PROBE_CACHE": "0",
}


@pytest.fixture(scope="session")
def aws_work() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="elastivol-aws-", dir="/var/tmp"))
    yield work
    for m in sorted(mount.mounts(), key=lambda m: len(m.target), reverse=True):
        if m.target.startswith(str(work) + "/"):
            mount.unmount_all(m.target)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def moto(aws_work: Path) -> Iterator[Moto]:
    server = start_moto(aws_work)
    yield server
    stop(server.proc)


@pytest.fixture(scope="session")
def aws_env(moto: Moto, aws_work: Path) -> Iterator[dict[str, str]]:
    """The environment a controller on EKS would have, pointed at moto (also set in this process)."""
    env = {
        "AWS_ENDPOINT_URL": moto.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(aws_work / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws_work / "no-aws-credentials"),
        **FAST,
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_SESSION_TOKEN",
                    "ELASTIVOL_AWS_FAULTS", "ELASTIVOL_AWS_BATCHING"):
            mp.delenv(key, raising=False)
        yield env


@pytest.fixture(scope="session")
def raw_ec2(aws_env: dict[str, str]) -> Any:
    """An ordinary boto3 client, without our hooks: sets the scene and checks the result."""
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture(scope="session")
def raw_efs(aws_env: dict[str, str]) -> Any:
    return boto3.client("efs", region_name=REGION)


@pytest.fixture
def make_instance(raw_ec2: Any) -> Callable[..., str]:
    def make(zone: str = ZONE_A, instance_type: str = "m5.large") -> str:
        resp = raw_ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType=instance_type,
                                     Placement={"AvailabilityZone": zone})
        return str(resp["Instances"][0]["InstanceId"])

    return make


@pytest.fixture
def cluster() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"
