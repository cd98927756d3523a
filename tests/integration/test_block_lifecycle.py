"""The whole block lifecycle through the real socket, with real loop devices and mounts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from elastivol.client import CsiClient
from elastivol.node import loop, mount
from tests.helpers import leaked, new_volume


@pytest.mark.parametrize("kind", ["ext4", "xfs", "block"])
def test_lifecycle_keeps_data_and_leaves_nothing(kind: str, client: CsiClient, pool_dir: Path, work: Path) -> None:
    images_before = set(os.listdir(pool_dir / "images"))
    vol = new_volume(client, work, f"life-{kind}", kind=kind)
    vol.up()
    image = str(pool_dir / "images" / f"{vol.id}.img")
    devices = loop.find(image)
    assert len(devices) == 1 and devices[0].direct_io, devices
    if kind != "block":
        staged = mount.find_by_target(str(vol.staging))
        assert staged is not None and staged.fstype == kind
        published = mount.find_by_target(str(vol.target))
        assert published is not None and published.major_minor == staged.major_minor
    checksum = vol.write()
    vol.unpublish()
    vol.unstage()
    assert loop.find(image) == [], "unstage must detach the loop device"
    vol.stage()
    vol.publish()
    assert vol.checksum() == checksum
    vol.down()
    vol.delete()
    assert not Path(image).exists()
    assert set(os.listdir(pool_dir / "images")) == images_before
    assert leaked(pool_dir) == []


def test_stage_and_publish_are_idempotent(client: CsiClient, pool_dir: Path, work: Path) -> None:
    vol = new_volume(client, work, "idempotent-node")
    vol.controller_publish()
    vol.controller_publish()
    vol.stage()
    vol.stage()
    vol.publish()
    vol.publish()
    assert len(loop.find(str(pool_dir / "images" / f"{vol.id}.img"))) == 1
    assert sum(1 for m in mount.mounts() if m.target == str(vol.target)) == 1
    vol.unpublish()
    vol.unpublish()
    vol.unstage()
    vol.unstage()
    vol.controller_unpublish()
    vol.controller_unpublish()
    vol.delete()
    vol.delete()
    assert leaked(pool_dir) == []


def test_format_happens_once(client: CsiClient, pool_dir: Path, work: Path) -> None:
    """A restage must never reformat: a file written on the first stage is still there."""
    vol = new_volume(client, work, "format-once", kind="xfs")
    vol.up()
    (vol.target / "keep").write_text("kept")
    vol.unpublish()
    vol.unstage()
    vol.stage()
    vol.publish()
    assert (vol.target / "keep").read_text() == "kept"
    vol.down()
    vol.delete()


def test_readonly_publish_refuses_writes(client: CsiClient, pool_dir: Path, work: Path) -> None:
    vol = new_volume(client, work, "ro-publish")
    vol.controller_publish()
    vol.stage()
    vol.publish(readonly=True)
    with pytest.raises(OSError) as info:
        (vol.target / "x").write_text("no")
    assert info.value.errno == 30  # EROFS
    vol.down()
    vol.delete()
    assert leaked(pool_dir) == []
