"""What the restructuring promised and a test can hold: the product reads none of the test-only
switches, and the Probe cache shared by the aws providers keeps its TTLs and its error mapping."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from elastivol.domain import Health
from elastivol.errors import ElastivolError, InvalidArgument, InvalidParameter, PermissionDenied, Unavailable
from elastivol.providers.aws.controller.probe import CachedProbe
from tests.support import aws_faults, crash, efs

SRC = Path(__file__).resolve().parents[2] / "src" / "elastivol"


@pytest.mark.parametrize("name", [aws_faults.ENV, efs.FAKE_EFS_ENV, crash.ENV, crash.PAUSE_ENV])
def test_the_installed_package_reads_no_test_switch(name: str) -> None:
    readers = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if name in p.read_text()]
    assert readers == [], f"{name} is read by {readers}: test parts go in through assembly.parts.Parts"


def test_probe_answers_from_its_cache_until_the_ttl_runs_out() -> None:
    calls: list[int] = []

    def check() -> Health:
        calls.append(1)
        return Health(True)

    probe = CachedProbe(0.2, "things")
    assert probe(check) == Health(True) and probe(check) == Health(True)
    assert len(calls) == 1
    time.sleep(0.25)
    probe(check)
    assert len(calls) == 2


def test_probe_retries_a_failure_sooner_than_a_success() -> None:
    results: list[Health | ElastivolError] = [Unavailable("endpoint down"), Health(True)]
    probe = CachedProbe(60.0, "things")
    # A plain failure is "not ready" with its message, not an error of the Probe call.
    assert probe(lambda: results[0]) == Health(False, "endpoint down")
    assert probe._cached is not None and probe._cached[0] - time.monotonic() <= 5.0
    probe._cached = (time.monotonic() - 1, results[0])  # as if the failure's 5 s had passed
    assert probe(lambda: results[1]) == Health(True)


def test_probe_fails_on_credentials_and_on_the_kinds_it_is_told() -> None:
    with pytest.raises(PermissionDenied, match=r"^the controller cannot manage EBS volumes: no ec2:CreateVolume"):
        CachedProbe(1.0, "EBS volumes")(lambda: PermissionDenied("no ec2:CreateVolume"))
    assert CachedProbe(1.0, "EFS access points")(lambda: InvalidArgument("bad")) == Health(False, "bad")
    strict = CachedProbe(1.0, "EBS volumes", fatal=(InvalidArgument,))
    with pytest.raises(InvalidArgument, match="cannot manage EBS volumes: zone"):
        strict(lambda: InvalidParameter("zone", "zone is wrong"))
