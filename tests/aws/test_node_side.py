"""Node side: IMDSv2 against a tiny local server, NVMe discovery against a fake device tree."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from elastivol.errors import FailedPrecondition, NotFound
from elastivol.providers.aws.imds import Imds, resolve_identity
from elastivol.providers.aws.node.nvme import BY_ID_PREFIX, EbsNodeProvider, serial_of
from elastivol.providers.aws.settings import AwsSettings
from tests.aws.support import FakeImds

VOL_A = "vol-0aaaaaaaaaaaaaaaa"
VOL_B = "vol-0bbbbbbbbbbbbbbbb"


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    server = FakeImds(instance_id="i-0fedcba9876543210", zone="eu-west-1c", instance_type="c7i.2xlarge").start()
    yield server
    server.stop()


def test_identity_comes_from_imdsv2_with_a_token(imds: FakeImds) -> None:
    found = resolve_identity("", "", env={"AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url})
    assert found is not None
    assert (found.instance_id, found.zone, found.instance_type, found.region, found.source) == (
        "i-0fedcba9876543210", "eu-west-1c", "c7i.2xlarge", "eu-west-1", "imds")
    assert imds.gets_without_token == 0
    with pytest.raises(Exception, match="401"):
        Imds(imds.url).get("dynamic/instance-identity/document", token="forged")


def test_imds_wins_over_flags_when_it_answers(imds: FakeImds) -> None:
    found = resolve_identity("i-flag", "us-east-1a", env={"AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url})
    assert found is not None and found.instance_id == "i-0fedcba9876543210"


def test_dropped_token_request_falls_back_to_flags_quickly(imds: FakeImds) -> None:
    imds.answer_put = False  # a pod behind a hop limit of 1
    start = time.monotonic()
    found = resolve_identity("i-0123456789abcdef0", "us-east-1b", "m5.large", timeout=0.3,
                             env={"AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url})
    assert time.monotonic() - start < 2
    assert found is not None and (found.instance_id, found.zone, found.region, found.source) == (
        "i-0123456789abcdef0", "us-east-1b", "us-east-1", "flags")


def test_disabled_imds_and_no_flags_is_unknown() -> None:
    assert resolve_identity("", "", env={"AWS_EC2_METADATA_DISABLED": "true"}) is None


# -- NVMe ------------------------------------------------------------------------------------------
class Tree:
    """/dev and /sys as a Nitro instance shows them, with plain files for devices."""

    def __init__(self, root: Path) -> None:
        self.dev, self.sys = root / "dev", root / "sys"
        (self.dev / "disk" / "by-id").mkdir(parents=True)
        (self.sys / "block").mkdir(parents=True)

    def nvme(self, name: str, serial_volume: str | None, link_for: str | None = None) -> Path:
        node = self.dev / name
        node.write_bytes(b"\0" * 4096)
        if serial_volume is not None:
            (self.sys / "block" / name / "device").mkdir(parents=True)
            (self.sys / "block" / name / "device" / "serial").write_text(serial_of(serial_volume) + "  \n")
        if link_for is not None:
            (self.dev / "disk" / "by-id" / (BY_ID_PREFIX + serial_of(link_for))).symlink_to(f"../../{name}")
        return node

    def provider(self, wait: float = 0.3) -> EbsNodeProvider:
        return EbsNodeProvider(AwsSettings(dev_root=str(self.dev), sys_root=str(self.sys), device_wait=wait))


def test_by_id_link_with_a_matching_serial(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    node = tree.nvme("nvme1n1", VOL_A, link_for=VOL_A)
    assert tree.provider().attach_device(VOL_A, {"devicePath": "/dev/xvdaa"}) == str(node.resolve())
    assert tree.provider().find_device(VOL_A) == str(node.resolve())


def test_device_path_from_the_publish_context_is_verified_too(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    tree.nvme("nvme2n1", VOL_B)
    (tree.dev / "xvdab").symlink_to("nvme2n1")  # udev's compatibility link on Amazon Linux
    with pytest.raises(FailedPrecondition, match=f"names {VOL_B}"):
        tree.provider().attach_device(VOL_A, {"devicePath": "/dev/xvdab"})
    assert tree.provider().attach_device(VOL_B, {"devicePath": "/dev/xvdab"}) == str((tree.dev / "nvme2n1").resolve())


def test_a_device_of_another_volume_is_never_used(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    tree.nvme("nvme1n1", VOL_B, link_for=VOL_A)  # a stale link: the slot now holds another volume
    with pytest.raises(FailedPrecondition, match="Nothing was formatted"):
        tree.provider().attach_device(VOL_A, {})
    assert tree.provider().find_device(VOL_A) is None  # unstage and stats go on; only stage refuses


def test_xen_device_names_have_no_serial_and_are_trusted(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    xen = tree.dev / "xvdba"
    xen.write_bytes(b"\0" * 512)
    assert tree.provider().attach_device(VOL_A, {"devicePath": "/dev/xvdba"}) == str(xen.resolve())


def test_waits_for_udev_then_gives_up_clearly(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    start = time.monotonic()
    with pytest.raises(NotFound, match="udev"):
        tree.provider(wait=0.3).attach_device(VOL_A, {"devicePath": "/dev/xvdaa"})
    assert 0.3 <= time.monotonic() - start < 2
    assert tree.provider().volume_exists(VOL_A)  # the node cannot know; stage finds out from the device
