"""Volume mounts are nosuid,nodev unless a volume's own (admitted) options say otherwise, on real mounts."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from elastivol.node import loop, volume

from .conftest import Host

MiB = 1 << 20


def findmnt_options(target: Path) -> set[str]:
    """The per-mount options of the top mount at ``target``, as findmnt(8) reports them."""
    out = subprocess.run(["findmnt", "-n", "-o", "VFS-OPTIONS", "--mountpoint", str(target)],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return set(out.strip().splitlines()[-1].split(","))


def _device_node_on(root: Path) -> Path:
    """A character device node (the same as /dev/null) inside the volume's filesystem."""
    node = root / "null"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return node


def _staged(host: Host, name: str, options: tuple[str, ...] = ()) -> tuple[str, Path]:
    dev = loop.ensure_attached(host.image(f"{name}.img", 64 * MiB)).path
    staging = host.root / "staging" / name
    volume.stage_filesystem(dev, str(staging), "ext4", mount_options=options)
    return dev, staging


def test_stage_and_publish_are_nosuid_nodev_by_default(host: Host) -> None:
    _dev, staging = _staged(host, "safe")
    target = host.root / "pods" / "p1" / "mount"
    volume.publish_bind(str(staging), str(target), False)
    assert {"nosuid", "nodev"} <= findmnt_options(staging)
    assert {"nosuid", "nodev"} <= findmnt_options(target)
    # The flags act: a device node that the volume carries cannot be opened through either mount.
    _device_node_on(staging)
    for where in (staging, target):
        with pytest.raises(PermissionError) as info:
            open(where / "null", "rb").close()
        assert info.value.errno == errno.EACCES
    # A read-only publication keeps them too (the remount that makes it read-only must not drop them).
    ro_target = host.root / "pods" / "p2" / "mount"
    volume.publish_bind(str(staging), str(ro_target), True)
    assert {"ro", "nosuid", "nodev"} <= findmnt_options(ro_target)
    for t in (target, ro_target):
        volume.unpublish(str(t))
    volume.unstage(str(staging))


def test_options_that_ask_for_suid_and_dev_win(host: Host) -> None:
    # The driver admits these words only with --allow-privileged-mount-options; the host layer then
    # honours them over its defaults.
    wanted = ("suid", "dev")
    _dev, staging = _staged(host, "priv", wanted)
    target = host.root / "pods" / "p3" / "mount"
    volume.publish_bind(str(staging), str(target), False, wanted)
    for where in (staging, target):
        assert not {"nosuid", "nodev"} & findmnt_options(where), where
    _device_node_on(staging)
    open(target / "null", "rb").close()  # dev: the node works
    volume.unpublish(str(target))
    volume.unstage(str(staging))


def test_raw_block_publication_is_nosuid_and_still_a_usable_device(host: Host) -> None:
    dev = loop.ensure_attached(host.image("raw.img", 8 * MiB)).path
    target = host.root / "pods" / "p4" / "dev" / "vol"
    volume.publish_block(dev, str(target), False)
    options = findmnt_options(target)
    assert "nosuid" in options and "nodev" not in options, options
    with open(target, "r+b") as fh:  # nodev here would make the device unusable
        fh.write(b"raw bytes")
    with open(dev, "rb") as fh:
        assert fh.read(9) == b"raw bytes"
    volume.unpublish(str(target))
