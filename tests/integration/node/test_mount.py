"""mount(2)/umount2(2) and the mount table, on real mounts."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from elastivol.errors import InvalidArgument, NotFound
from elastivol.node import mount

from .conftest import Host


def tmpfs(target: Path, *options: str) -> None:
    mount.mount("elastivol-test", str(target), "tmpfs", ("size=1m", *options))


def test_mount_find_unmount(host: Host) -> None:
    target = host.dir("t")
    assert not mount.is_mountpoint(target)
    tmpfs(target, "nosuid", "nodev", "noexec")
    info = mount.find_by_target(target)
    assert info is not None and info.fstype == "tmpfs" and info.source == "elastivol-test"
    assert {"nosuid", "nodev", "noexec", "rw"} <= set(info.options.split(","))
    assert "size=1024k" in info.super_options.split(",")
    assert mount.find_by_source("elastivol-test")[-1] == info
    assert mount.unmount(str(target)) is True
    assert mount.unmount(str(target)) is False  # idempotent
    assert mount.unmount(str(host.root / "missing")) is False
    assert not mount.is_mountpoint(target)


def test_stacked_mounts(host: Host) -> None:
    target = host.dir("stack")
    tmpfs(target, "size=1m")
    (target / "lower").write_text("1")
    tmpfs(target, "ro")
    top = mount.find_by_target(target)
    assert top is not None and top.read_only
    assert sum(1 for m in mount.mounts() if m.target == str(target)) == 2
    assert mount.unmount_all(str(target)) == 2
    assert mount.unmount_all(str(target)) == 0
    assert list(target.iterdir()) == []


def test_escaped_paths_in_mountinfo(host: Host) -> None:
    target = host.dir("with space\tand tab\\slash")
    tmpfs(target)
    info = mount.find_by_target(target)
    assert info is not None and info.target == str(target)
    raw = Path("/proc/self/mountinfo").read_text()
    assert "with\\040space\\011and\\040tab\\134slash" in raw
    mount.unmount(str(target))


def test_mounts_are_found_by_mount_id_not_by_target_text(host: Host) -> None:
    import dataclasses

    target = host.dir("by-id")
    plain = host.dir("plain")
    tmpfs(target)
    tmpfs(target, "ro")  # stacked: the top one is the answer
    # The table as another namespace (or a differently escaping reader) would print it: no
    # target text matches, yet the mount at the path is still the one the kernel walks into.
    garbled = [dataclasses.replace(m, target="/elsewhere" + m.target) for m in mount.mounts()]
    top = mount.find_by_target(target, garbled)
    assert top is not None and top.read_only and top.mount_id == mount.find_by_target(target).mount_id
    assert mount.find_by_target(plain, garbled) is None  # a plain directory is no mount, whatever the text
    assert mount.find_by_target(target / "sub", garbled) is None  # ENOENT: nothing matches the text either
    assert mount.unmount_all(str(target)) == 2


def test_bind_read_only_refuses_writes(host: Host) -> None:
    source = host.dir("src")
    tmpfs(source)
    (source / "data").write_text("hello")
    target = host.dir("ro")
    mount.bind(str(source), str(target), readonly=True, options=("nosuid", "nodev", "noexec"))
    info = mount.find_by_target(target)
    assert info is not None and info.read_only
    assert {"nosuid", "nodev", "noexec"} <= set(info.options.split(","))
    assert (target / "data").read_text() == "hello"
    with pytest.raises(OSError) as err:
        (target / "new").write_text("x")
    assert err.value.errno == errno.EROFS
    (source / "new").write_text("still writable at the source")
    assert mount.unmount(str(target))
    assert mount.unmount(str(source))


def test_read_only_bind_keeps_the_source_locks(host: Host) -> None:
    source = host.dir("src")
    tmpfs(source, "nosuid", "nodev")
    target = host.dir("ro")
    mount.bind(str(source), str(target), readonly=True)
    info = mount.find_by_target(target)
    assert info is not None and {"ro", "nosuid", "nodev"} <= set(info.options.split(","))


def test_symlink_target_is_refused(host: Host) -> None:
    elsewhere = host.dir("elsewhere")
    link = host.root / "link"
    link.symlink_to(elsewhere)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        tmpfs(link)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        mount.bind(str(host.dir("src")), str(link))
    assert not mount.is_mountpoint(elsewhere)
    assert host.mounts() == []
    with pytest.raises(NotFound):
        tmpfs(host.root / "missing")


def test_bind_a_device_node_onto_a_file(host: Host) -> None:
    target = host.root / "null"
    target.touch()
    mount.bind("/dev/null", str(target))
    st = os.stat(target)
    assert os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    info = mount.find_by_target(target)
    assert info is not None and info.root == "/null"
    assert mount.unmount(str(target))


def test_bad_options_are_refused_before_mounting(host: Host) -> None:
    target = host.dir("opts")
    with pytest.raises(InvalidArgument, match="size=1m,mode=777"):
        tmpfs(target, "size=1m,mode=777")
    with pytest.raises(InvalidArgument, match="'suid'"):
        mount.mount("x", str(target), "tmpfs", ("suid",), allow_privileged=False)
    with pytest.raises(InvalidArgument, match="wrong fs type, bad option"):
        tmpfs(target, "no_such_option=1")
    assert host.mounts() == []
