"""The trimmed EC2 model elastivol ships: it covers every EC2 call the provider makes, it is what
botocore's full model gives today (regenerated, it is the same), and elastivol's clients use it."""

from __future__ import annotations

import json
import os

import pytest

from elastivol.providers.aws.clients import BOTO_DATA, AwsClients
from elastivol.providers.aws.settings import AwsSettings
from scripts import trim_botodata


def shipped() -> dict[str, object]:
    path, _ = trim_botodata.render()
    loaded: dict[str, object] = json.loads(path.read_text())
    return loaded


def test_every_ec2_operation_the_provider_names_is_in_the_trimmed_model() -> None:
    _, full = trim_botodata.full_model()
    called = trim_botodata.called_operations(set(full["operations"]))
    # A floor, so that a scan that silently found nothing cannot pass.
    assert {"CreateVolume", "AttachVolume", "DescribeVolumes", "CreateSnapshot", "ModifyVolume"} <= called
    operations = shipped()["operations"]
    assert isinstance(operations, dict)
    missing = called - set(operations)
    assert not missing, f"run scripts/trim_botodata.py: the shipped EC2 model lacks {sorted(missing)}"


def test_the_shipped_model_is_what_the_script_makes_from_botocore() -> None:
    path, text = trim_botodata.render()
    assert path.is_relative_to(BOTO_DATA)
    assert path.read_text() == text, "stale: run scripts/trim_botodata.py"


def test_elastivol_ec2_clients_load_the_trimmed_model_without_touching_the_environment() -> None:
    before = os.environ.get("AWS_DATA_PATH")
    ec2 = AwsClients(AwsSettings(), region="us-east-1").client("ec2")
    operations = shipped()["operations"]
    assert isinstance(operations, dict)
    assert set(ec2.meta.service_model.operation_names) == set(operations)
    assert os.environ.get("AWS_DATA_PATH") == before


def test_the_shipped_endpoints_keep_every_partition_and_region_for_the_services_used() -> None:
    import botocore.loaders

    full = botocore.loaders.create_loader().load_data("endpoints")
    shipped_path, text = trim_botodata.render_all()[1]
    assert shipped_path == BOTO_DATA / "endpoints.json"
    assert shipped_path.read_text() == text, "stale: run scripts/trim_botodata.py"
    trimmed = json.loads(text)
    assert [p["partition"] for p in trimmed["partitions"]] == [p["partition"] for p in full["partitions"]]
    for mine, theirs in zip(trimmed["partitions"], full["partitions"], strict=True):
        assert mine["regions"] == theirs["regions"]
        assert set(mine["services"]) == {"ec2", "elasticfilesystem", "sts", "portal.sso", "oidc"} & set(theirs["services"])
        for name, service in mine["services"].items():
            assert service == theirs["services"][name]
    assert len(text) < 100_000  # the point of it: botocore's is over 1 MB


def test_clients_resolve_real_endpoints_from_the_trimmed_data(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_EFS"):
        monkeypatch.delenv(name, raising=False)  # AWS's own endpoints, not moto's
    clients = AwsClients(AwsSettings(), region="eu-central-1")
    for service, host in (("ec2", "ec2.eu-central-1.amazonaws.com"),
                          ("efs", "elasticfilesystem.eu-central-1.amazonaws.com")):
        assert clients.client(service).meta.endpoint_url == f"https://{host}"
    loader = clients.session.get_component("data_loader")
    assert loader.load_data_with_path("endpoints")[1].startswith(str(BOTO_DATA))
