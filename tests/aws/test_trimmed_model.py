"""The trimmed EC2 model elastivol ships: it covers every EC2 call the provider makes, it is what
botocore's full model gives today (regenerated, it is the same), and elastivol's clients use it."""

from __future__ import annotations

import json
import os

from elastivol.providers.aws.clients import BOTO_DATA, AwsClients
from elastivol.providers.aws.settings import AwsSettings
from scripts import trim_ec2_model


def shipped() -> dict[str, object]:
    path, _ = trim_ec2_model.render()
    loaded: dict[str, object] = json.loads(path.read_text())
    return loaded


def test_every_ec2_operation_the_provider_names_is_in_the_trimmed_model() -> None:
    _, full = trim_ec2_model.full_model()
    called = trim_ec2_model.called_operations(set(full["operations"]))
    # A floor, so that a scan that silently found nothing cannot pass.
    assert {"CreateVolume", "AttachVolume", "DescribeVolumes", "CreateSnapshot", "ModifyVolume"} <= called
    operations = shipped()["operations"]
    assert isinstance(operations, dict)
    missing = called - set(operations)
    assert not missing, f"run scripts/trim_ec2_model.py: the shipped EC2 model lacks {sorted(missing)}"


def test_the_shipped_model_is_what_the_script_makes_from_botocore() -> None:
    path, text = trim_ec2_model.render()
    assert path.is_relative_to(BOTO_DATA)
    assert path.read_text() == text, "stale: run scripts/trim_ec2_model.py"


def test_elastivol_ec2_clients_load_the_trimmed_model_without_touching_the_environment() -> None:
    before = os.environ.get("AWS_DATA_PATH")
    ec2 = AwsClients(AwsSettings(), region="us-east-1").client("ec2")
    operations = shipped()["operations"]
    assert isinstance(operations, dict)
    assert set(ec2.meta.service_model.operation_names) == set(operations)
    assert os.environ.get("AWS_DATA_PATH") == before
