"""Staging, publishing and expanding volumes on sparse images through loop devices."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from elastivol.errors import FailedPrecondition, InvalidArgument
from elastivol.node import copy, fs, loop, mount, volume

from .conftest import CAP_SYS_RESOURCE, Host, has_capability

MiB = 1 << 20
FS_TYPES = ["ext4", "xfs"]
SIZE = 512 * MiB  # xfs wants at least 300 MiB


def head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4 * MiB)


def attach(host: Host, name: str, size: int = SIZE) -> tuple[Path, str]:
    image = host.image(name, size)
    return image, loop.ensure_attached(image).path


@pytest.mark.parametrize("fs_type", FS_TYPES)
def test_stage_formats_only_when_blank(host: Host, fs_type: str) -> None:
    image, dev = attach(host, "v.img")
    staging = host.root / "staging" / "v"
    result = volume.stage_filesystem(dev, str(staging), fs_type)
    assert result == volume.StageResult(formatted=True, grown=False, fs_type=fs_type)
    info = mount.find_by_target(staging)
    assert info is not None and info.fstype == fs_type and info.source == dev
    (staging / "keep.txt").write_text("precious")
    # Again while staged: nothing happens.
    assert volume.stage_filesystem(dev, str(staging), fs_type) == volume.StageResult(False, False, fs_type)
    assert sum(1 for m in mount.mounts() if m.target == str(staging)) == 1
    assert volume.unstage(str(staging)) is True
    assert volume.unstage(str(staging)) is False
    loop.detach_all(image)
    # Attach again (as after a node restart) and stage: the data is still there.
    dev = loop.ensure_attached(image).path
    assert fs.detect(dev) == fs_type
    assert volume.stage_filesystem(dev, str(staging), fs_type) == volume.StageResult(False, False, fs_type)
    assert (staging / "keep.txt").read_text() == "precious"
    volume.unstage(str(staging))


def test_xfs_mounts_with_nouuid(host: Host) -> None:
    # A reflink clone has the same UUID as its source: both must mount side by side.
    image, dev = attach(host, "src.img")
    fs.make(dev, "xfs")
    clone = host.root / "clone.img"
    copy.clone_file(image, clone)
    clone_dev = loop.ensure_attached(clone).path
    a, b = host.root / "a", host.root / "b"
    volume.stage_filesystem(dev, str(a), "xfs")
    volume.stage_filesystem(clone_dev, str(b), "xfs")
    info = mount.find_by_target(b)
    assert info is not None and "nouuid" in info.super_options.split(",")


def test_wrong_filesystem_is_never_reformatted(host: Host) -> None:
    image, dev = attach(host, "x.img")
    fs.make(dev, "xfs")
    staging = host.root / "s"
    volume.stage_filesystem(dev, str(staging), "xfs")
    (staging / "data").write_bytes(b"x" * 4096)
    volume.unstage(str(staging))
    before = head(image)
    with pytest.raises(FailedPrecondition) as info:
        volume.stage_filesystem(dev, str(staging), "ext4")
    assert "xfs" in info.value.message and "ext4" in info.value.message
    assert fs.detect(dev) == "xfs"
    assert head(image) == before
    assert not mount.is_mountpoint(staging)


def test_other_signatures_count_as_not_blank(host: Host) -> None:
    from elastivol.node.run import run

    _image, dev = attach(host, "swap.img", 64 * MiB)
    run(["mkswap", dev])
    assert fs.detect(dev) == "swap"
    with pytest.raises(FailedPrecondition, match="swap"):
        volume.stage_filesystem(dev, str(host.root / "s"), "ext4")


@pytest.mark.parametrize("fs_type", FS_TYPES)
def test_stage_grows_after_offline_expansion(host: Host, fs_type: str) -> None:
    image, dev = attach(host, "g.img")
    staging = host.root / "s"
    volume.stage_filesystem(dev, str(staging), fs_type)
    (staging / "keep.txt").write_text("kept")
    volume.unstage(str(staging))
    os.truncate(image, SIZE + 256 * MiB)
    assert loop.refresh_capacity(dev) == SIZE + 256 * MiB
    assert fs.fs_size_bytes(dev, fs_type) == SIZE
    result = volume.stage_filesystem(dev, str(staging), fs_type)
    assert result == volume.StageResult(formatted=False, grown=True, fs_type=fs_type)
    assert fs.fs_size_bytes(dev, fs_type, mountpoint=str(staging)) == SIZE + 256 * MiB
    assert (staging / "keep.txt").read_text() == "kept"
    st = os.statvfs(staging)
    assert st.f_blocks * st.f_frsize > SIZE


@pytest.mark.parametrize("fs_type", FS_TYPES)
def test_online_expansion_while_writing(host: Host, fs_type: str) -> None:
    image, dev = attach(host, "o.img")
    staging = host.root / "s"
    volume.stage_filesystem(dev, str(staging), fs_type)
    stop = threading.Event()
    written = 0

    def writer() -> None:
        nonlocal written
        with open(staging / "log", "a") as fh:
            while not stop.is_set():
                fh.write("line\n")
                fh.flush()
                written += 1
                time.sleep(0.001)

    t = threading.Thread(target=writer)
    t.start()
    try:
        os.truncate(image, 2 * SIZE)
        loop.refresh_capacity(dev)
        if fs_type.startswith("ext") and not has_capability(CAP_SYS_RESOURCE):
            # ext4's resize ioctl wants CAP_SYS_RESOURCE; the error must say so.
            with pytest.raises(FailedPrecondition, match="CAP_SYS_RESOURCE"):
                volume.expand_online(dev, str(staging), fs_type)
            return
        assert volume.expand_online(dev, str(staging), fs_type) == 2 * SIZE
        assert volume.expand_online(dev, str(staging), fs_type) == 2 * SIZE  # nothing to do
    finally:
        time.sleep(0.05)
        stop.set()
        t.join(10)
    assert (staging / "log").read_text().count("line") == written > 0


def test_read_only_stage(host: Host) -> None:
    _image, dev = attach(host, "r.img")
    with pytest.raises(FailedPrecondition, match="blank"):
        volume.stage_filesystem(dev, str(host.root / "s"), "ext4", readonly=True)
    fs.make(dev, "ext4")
    staging = host.root / "s"
    volume.stage_filesystem(dev, str(staging), "ext4", readonly=True, mount_options=["noatime"])
    info = mount.find_by_target(staging)
    assert info is not None and info.read_only and "noatime" in info.options.split(",")


def test_publish_bind_and_unpublish(host: Host) -> None:
    _image, dev = attach(host, "p.img")
    staging = host.root / "staging"
    volume.stage_filesystem(dev, str(staging), "ext4", mount_options=["nodev"])
    (staging / "f").write_text("content")
    rw = host.root / "pods" / "a" / "mount"
    ro = host.root / "pods" / "b" / "mount"
    volume.publish_bind(str(staging), str(rw), False, ["noexec"])
    volume.publish_bind(str(staging), str(rw), False, ["noexec"])  # idempotent
    volume.publish_bind(str(staging), str(ro), True)
    assert (rw / "f").read_text() == (ro / "f").read_text() == "content"
    (rw / "g").write_text("via rw")
    with pytest.raises(OSError) as info:
        (ro / "h").write_text("x")
    assert info.value.errno == errno.EROFS
    rw_info = mount.find_by_target(rw)
    assert rw_info is not None and {"noexec", "nodev"} <= set(rw_info.options.split(","))
    with pytest.raises(FailedPrecondition, match="already has another mount"):
        volume.publish_bind(str(staging), str(ro), False)
    assert volume.unpublish(str(rw)) is True and not rw.exists()
    assert volume.unpublish(str(rw)) is False
    assert volume.unpublish(str(ro)) is True and not ro.exists()
    with pytest.raises(FailedPrecondition, match="staged"):
        volume.publish_bind(str(host.root / "nothing"), str(rw), False)
    volume.unstage(str(staging))


def test_unpublish_leaves_what_is_not_ours(host: Host) -> None:
    target = host.dir("t")
    (target / "user-file").write_text("x")
    assert volume.unpublish(str(target)) is False
    assert (target / "user-file").exists()


def test_publish_block(host: Host) -> None:
    _image, dev = attach(host, "b.img", 64 * MiB)
    target = host.root / "pods" / "x" / "dev"
    volume.publish_block(dev, str(target), False)
    volume.publish_block(dev, str(target), False)  # idempotent
    st = os.stat(target)
    assert os.major(st.st_rdev) == 7 and st.st_rdev == os.stat(dev).st_rdev
    with open(target, "r+b") as fh:
        fh.write(b"raw!")
    with open(dev, "rb") as fh:
        assert fh.read(4) == b"raw!"
    assert fs.device_size(str(target)) == 64 * MiB
    assert volume.unpublish(str(target)) is True
    assert not target.exists()
    link = host.root / "link"
    link.symlink_to(host.root / "b.img")
    with pytest.raises(InvalidArgument):
        volume.publish_block(dev, str(link), False)
