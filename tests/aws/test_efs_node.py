"""The EFS node side: the path guard, the safe mount defaults, and an idempotency check that compares
what is mounted with what is asked. Real bind mounts through the recording mounter (there is no NFS
here); the NFS comparison itself is checked on mount-table lines as the kernel writes them."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from elastivol.errors import AlreadyExists, InvalidArgument
from elastivol.node import mount as hostmount
from elastivol.node.paths import PathGuard
from elastivol.providers.aws.mounter import HostMounter, MountRequest, check_nfs_mount
from elastivol.providers.aws.node.efs import EfsNodeProvider
from elastivol.providers.file import AccessPoint, FilePublication
from tests.integration.node.test_mount_safety import findmnt_options
from tests.support.efs import RecordingMounter

FS = "fs-0123456789abcdef0"
OTHER_FS = "fs-0fedcba9876543210"


def _ap(ap_id: str = "fsap-0123456789abcdef0", directory: str = "/pvc-1") -> AccessPoint:
    return AccessPoint(id=ap_id, fs_id=FS, name="pvc-1", directory=directory, uid=1000, gid=1000, perms=0o750,
                       capacity_bytes=0)


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "kubelet"
    root.mkdir()
    yield root
    for m in sorted(hostmount.mounts(), key=lambda m: len(m.target), reverse=True):
        if m.target.startswith(str(tmp_path) + "/"):
            hostmount.unmount_all(m.target)
    assert not [m.target for m in hostmount.mounts() if m.target.startswith(str(tmp_path) + "/")]


def _node(tmp_path: Path, kubelet: Path, *, allow: bool = False) -> tuple[EfsNodeProvider, RecordingMounter]:
    mounter = RecordingMounter(tmp_path / "efs", "us-east-1", tmp_path / "mounts.jsonl")
    return EfsNodeProvider(mounter, PathGuard([kubelet]), allow_privileged_mount_options=allow), mounter


def test_publish_is_nosuid_nodev_and_idempotent_only_for_the_same_mount(tmp_path: Path, kubelet: Path) -> None:
    node, mounter = _node(tmp_path, kubelet)
    target = kubelet / "pods" / "a" / "mount"
    node.publish(FilePublication(FS, "", _ap(), str(target), False, ("noatime",)))
    argv = mounter.records[-1]["argv"]
    assert isinstance(argv, list) and "tls,accesspoint=fsap-0123456789abcdef0,nosuid,nodev,noatime" in argv
    assert {"nosuid", "nodev", "noatime"} <= findmnt_options(target)
    # The same publish again: one mount, no error.
    node.publish(FilePublication(FS, "", _ap(), str(target), False, ("noatime",)))
    assert sum(1 for m in hostmount.mounts() if m.target == str(target)) == 1
    # Something else asked at the same target: refused, and what is there stays.
    with pytest.raises(AlreadyExists, match="read-write"):
        node.publish(FilePublication(FS, "", _ap(), str(target), True, ()))
    with pytest.raises(AlreadyExists, match="another directory"):
        node.publish(FilePublication(FS, "", _ap("fsap-0aaaaaaaaaaaaaaaa", "/pvc-2"), str(target), False, ()))
    assert sum(1 for m in hostmount.mounts() if m.target == str(target)) == 1
    node.unpublish(str(target))
    assert not hostmount.is_mountpoint(target)


def test_targets_pass_the_path_guard(tmp_path: Path, kubelet: Path) -> None:
    node, mounter = _node(tmp_path, kubelet)
    outside = tmp_path / "elsewhere"
    with pytest.raises(InvalidArgument, match="outside the allowed roots"):
        node.publish(FilePublication(FS, "", _ap(), str(outside), False, ()))
    # A link inside the root that leads out of it is judged by where it leads.
    (kubelet / "pods").mkdir()
    (kubelet / "pods" / "sneaky").symlink_to(outside)
    with pytest.raises(InvalidArgument, match="resolves to"):
        node.publish(FilePublication(FS, "", _ap(), str(kubelet / "pods" / "sneaky"), False, ()))
    with pytest.raises(InvalidArgument, match="outside the allowed roots"):
        node.unpublish(str(outside))
    assert mounter.records == [] and not outside.exists()


def test_privileged_words_need_the_operators_consent(tmp_path: Path, kubelet: Path) -> None:
    node, _ = _node(tmp_path, kubelet)
    with pytest.raises(InvalidArgument, match="--allow-privileged-mount-options"):
        node.publish(FilePublication(FS, "", _ap(), str(kubelet / "p"), False, ("suid",)))
    allowed, mounter = _node(tmp_path, kubelet, allow=True)
    target = kubelet / "q"
    allowed.publish(FilePublication(FS, "", _ap(), str(target), False, ("suid", "dev")))
    argv = mounter.records[-1]["argv"]
    assert isinstance(argv, list) and argv[4].endswith("nosuid,nodev,suid,dev")  # the asked words come last
    assert not {"nosuid", "nodev"} & findmnt_options(target)
    lines = [json.loads(x) for x in (tmp_path / "mounts.jsonl").read_text().splitlines()]
    assert lines[-1]["target"] == str(target)


def test_host_mounter_refuses_a_different_mount_at_the_target(tmp_path: Path, kubelet: Path) -> None:
    target = kubelet / "busy"
    target.mkdir()
    hostmount.mount("elastivol-test", str(target), "tmpfs", ("size=1m",))
    with contextlib.suppress(Exception):
        (target / "mine").write_text("not EFS")
    with pytest.raises(AlreadyExists, match=r"elastivol-test \(tmpfs\)"):
        HostMounter("us-east-1").mount(MountRequest(FS, "/", None, str(target)))
    assert (target / "mine").read_text() == "not EFS"


def _nfs(source: str, options: str = "rw,relatime", fstype: str = "nfs4") -> hostmount.MountInfo:
    line = f"301 29 0:77 / /var/lib/kubelet/pods/x/mount {options} shared:1 - {fstype} {source} rw,vers=4.1"
    return hostmount.parse_mountinfo(line.encode())[0]


@pytest.mark.parametrize("source", [f"{FS}.efs.us-east-1.amazonaws.com:/sub", "127.0.0.1:/sub", "10.0.3.7:/sub"])
def test_nfs_mount_of_the_same_file_system_path_and_mode_is_the_same(source: str) -> None:
    req = MountRequest(FS, "/sub", None, "/var/lib/kubelet/pods/x/mount")
    check_nfs_mount(req, _nfs(source))


@pytest.mark.parametrize(("source", "options", "fstype", "why"), [
    (f"{OTHER_FS}.efs.us-east-1.amazonaws.com:/sub", "rw", "nfs4", OTHER_FS),
    (f"{FS}.efs.us-east-1.amazonaws.com:/other", "rw", "nfs4", ":/other"),
    (f"{FS}.efs.us-east-1.amazonaws.com:/sub", "ro,relatime", "nfs4", "read-only"),
    ("nas.example.com:/sub", "rw", "nfs4", "nas.example.com"),
    ("/dev/loop7", "rw", "ext4", "ext4"),
])
def test_nfs_mount_of_something_else_is_a_conflict(source: str, options: str, fstype: str, why: str) -> None:
    req = MountRequest(FS, "/sub", None, "/var/lib/kubelet/pods/x/mount")
    with pytest.raises(AlreadyExists, match="unpublish") as info:
        check_nfs_mount(req, _nfs(source, options, fstype))
    assert why in info.value.message


def test_publish_on_a_file_is_refused_and_changes_nothing(tmp_path: Path, kubelet: Path) -> None:
    # The fuzzer found it: a target that exists as a regular file made os.makedirs raise FileExistsError
    # (INTERNAL). It is the caller's mistake, said as such, before the mounter is asked.
    node, mounter = _node(tmp_path, kubelet)
    target = kubelet / "pods" / "a" / "file"
    target.parent.mkdir(parents=True)
    target.write_text("kept")
    with pytest.raises(InvalidArgument, match=r"target_path .*/file is not a directory: a file volume is published"):
        node.publish(FilePublication(FS, "", _ap(), str(target), False, ()))
    assert mounter.records == [] and target.read_text() == "kept"
    assert not [m for m in hostmount.mounts() if m.target == str(target)]
