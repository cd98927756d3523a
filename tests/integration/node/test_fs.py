"""Freezing, sizes and statistics of mounted filesystems."""

from __future__ import annotations

import os
import threading

import pytest

from elastivol.errors import FailedPrecondition
from elastivol.node import fs, loop, mount

from .conftest import Host

MiB = 1 << 20


def mounted_ext4(host: Host) -> str:
    return str(host.mounted_image("f.img", 128 * MiB, "ext4", "mnt")[1])


def test_freeze_blocks_writes_until_thaw(host: Host) -> None:
    target = mounted_ext4(host)
    done = threading.Event()

    def write() -> None:
        with open(os.path.join(target, "f"), "wb") as fh:
            fh.write(b"x" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        done.set()

    with fs.frozen(target):
        with pytest.raises(FailedPrecondition, match="already frozen"):
            fs.freeze(target)
        writer = threading.Thread(target=write)
        writer.start()
        assert not done.wait(0.3), "a write went through a frozen filesystem"
    assert done.wait(10)
    writer.join()
    assert fs.thaw(target) is False  # not frozen any more


def test_frozen_thaws_on_error(host: Host) -> None:
    target = mounted_ext4(host)
    with pytest.raises(RuntimeError), fs.frozen(target):
        raise RuntimeError("boom")
    with open(os.path.join(target, "after"), "w") as fh:
        fh.write("writable again")


def test_statfs_and_sizes(host: Host) -> None:
    target = mounted_ext4(host)
    dev = mount.find_by_target(target)
    assert dev is not None
    before = fs.statfs(target)
    with open(os.path.join(target, "blob"), "wb") as fh:
        fh.write(os.urandom(8 * MiB))
        os.fsync(fh.fileno())
    after = fs.statfs(target)
    assert after.total_bytes == before.total_bytes <= 128 * MiB
    assert after.used_bytes - before.used_bytes >= 8 * MiB
    assert after.available_bytes < before.available_bytes
    assert after.inodes_used == before.inodes_used + 1
    assert after.inodes_total == after.inodes_free + after.inodes_used
    assert fs.device_size(dev.source) == 128 * MiB
    assert fs.fs_size_bytes(dev.source, "ext4", mountpoint=target) == 128 * MiB


def test_detect_sees_writes_still_in_the_page_cache(host: Host) -> None:
    # The blank shortcut (a backing file with no data) must not miss a signature written
    # through the device's page cache and not yet flushed to the file.
    image = host.image("cache.img", 64 * MiB)
    dev = loop.ensure_attached(image).path
    assert fs.detect(dev) is None
    fd = os.open(dev, os.O_WRONLY)
    try:
        # An iso9660 descriptor at 32 KiB: outside what our own superblock reads flush.
        os.pwrite(fd, b"\x01CD001\x01", 0x8000)  # no fsync
        assert fs.detect(dev) == "iso9660"
    finally:
        os.close(fd)
