"""Loop devices through ioctls, checked against what the kernel and losetup report."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from elastivol.errors import ElastivolError, FailedPrecondition, Internal, InUse, InvalidArgument, NotFound
from elastivol.node import fs, loop, mount
from tests.reliability.pods import ROOT, in_new_namespace

from .conftest import Host

MiB = 1 << 20
LOOP_SET_STATUS64 = 0x4C04


def losetup_json(path: str) -> dict[str, Any]:
    out = subprocess.run(
        ["losetup", "--json", "--list", "--output", "NAME,BACK-FILE,BACK-INO,BACK-MAJ:MIN,OFFSET,SIZELIMIT,RO,DIO,AUTOCLEAR,LOG-SEC",
         path],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout
    devices: list[dict[str, Any]] = json.loads(out)["loopdevices"]
    assert len(devices) == 1
    return devices[0]


def _kernel_size(dev: loop.LoopDevice) -> int:
    """The device's size as the kernel has it (sysfs counts 512-byte sectors)."""
    return int(Path(f"/sys/block/loop{dev.number}/size").read_text()) * 512


def test_attach_find_detach(host: Host) -> None:
    image = host.image("a.img", 64 * MiB)
    dev = loop.attach(image)
    assert dev.path == f"/dev/loop{dev.number}" and dev.backing_file == str(image)
    assert not dev.read_only and not dev.deleted
    assert loop.find(image) == [dev]
    assert dev in loop.list_all()
    # Found through any spelling of the path.
    assert loop.find(str(host.root / "." / "a.img")) == [dev]
    os.symlink(image, host.root / "link.img")
    assert loop.find(host.root / "link.img") == [dev]
    assert loop.detach(dev.path) is True
    assert loop.find(image) == []
    assert not os.path.exists(f"/sys/block/loop{dev.number}/loop/backing_file")
    # Idempotent: the device is free now (or already reused by someone else's test).
    if loop._backing(dev.number) is None:
        assert loop.detach(dev.path) is False


def test_direct_io_is_on_and_visible_in_sysfs(host: Host) -> None:
    dev = loop.attach(host.image("dio.img", 64 * MiB), direct_io=True)
    try:
        assert dev.direct_io
        assert Path(f"/sys/block/loop{dev.number}/loop/dio").read_text().strip() == "1"
    finally:
        loop.detach(dev.path)
    buffered = loop.attach(host.image("buf.img", 64 * MiB), direct_io=False)
    assert not buffered.direct_io
    assert Path(f"/sys/block/loop{buffered.number}/loop/dio").read_text().strip() == "0"


def test_struct_layout_matches_losetup(host: Host) -> None:
    # A long name: lo_file_name holds 63 bytes, sysfs the whole path.
    image = host.image("x" * 80 + ".img", 32 * MiB)
    dev = loop.attach(image, read_only=True, direct_io=True)
    st = os.stat(image)
    status = loop.status(dev.path)
    seen = losetup_json(dev.path)
    assert seen["back-file"] == str(image)
    assert seen["back-ino"] == st.st_ino == status.backing_inode
    assert seen["back-maj:min"].strip() == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    assert os.major(status.backing_device) == os.major(st.st_dev)
    assert os.minor(status.backing_device) == os.minor(st.st_dev)
    assert seen["offset"] == status.offset == 0 and seen["sizelimit"] == status.sizelimit == 0
    assert seen["ro"] is True and status.read_only and dev.read_only
    assert seen["dio"] is status.direct_io is dev.direct_io is True
    assert seen["autoclear"] is False and not status.autoclear
    assert seen["log-sec"] == loop.SECTOR_SIZE == 512
    assert status.number == dev.number
    assert status.file_name == str(image)[:63]


def test_read_only_device_refuses_writes(host: Host) -> None:
    dev = loop.attach(host.image("ro.img", 16 * MiB), read_only=True)
    assert dev.read_only and Path(f"/sys/block/loop{dev.number}/ro").read_text().strip() == "1"
    with pytest.raises(OSError) as info:
        # Depending on the kernel the open or the write fails.
        fd = os.open(dev.path, os.O_WRONLY)
        try:
            os.write(fd, b"x" * 512)
        finally:
            os.close(fd)
    assert info.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)


def test_ensure_attached_reuses_the_device(host: Host) -> None:
    image = host.image("e.img", 16 * MiB)
    first = loop.ensure_attached(image)
    assert loop.ensure_attached(image) == first
    assert loop.ensure_attached(str(image)) == first
    with pytest.raises(FailedPrecondition, match="read-write"):
        loop.ensure_attached(image, read_only=True)
    assert loop.detach_all(image) == 1
    assert loop.detach_all(image) == 0


def test_ensure_attached_races_give_one_device(host: Host) -> None:
    image = host.image("race.img", 16 * MiB)
    results: list[loop.LoopDevice] = []
    threads = [threading.Thread(target=lambda: results.append(loop.ensure_attached(image))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and len(set(results)) == 1
    assert len(loop.find(image)) == 1


def test_concurrent_attaches_get_distinct_devices(host: Host) -> None:
    # Threads asking LOOP_CTL_GET_FREE together get the same number; the losers must retry.
    images = [host.image(f"c{i}.img", 8 * MiB) for i in range(8)]
    results: list[loop.LoopDevice] = []
    errors: list[BaseException] = []

    def attach(image: Path) -> None:
        try:
            results.append(loop.attach(image))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=attach, args=(i,)) for i in images]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({d.path for d in results}) == 8
    assert sorted(d.backing_file for d in results) == sorted(map(str, images))


def test_deleted_backing_file(host: Host) -> None:
    image = host.image("gone.img", 16 * MiB)
    dev = loop.attach(image)
    image.unlink()
    assert Path(f"/sys/block/loop{dev.number}/loop/backing_file").read_text().strip().endswith("(deleted)")
    # No path leads to the deleted inode any more; the filesystem scan still finds the device.
    assert loop.find(image) == []
    [found] = [d for d in loop.on_filesystem(dev.backing.device) if d.path == dev.path]
    assert found.deleted and found.backing == dev.backing and found.backing_file == str(image)
    # A new file at the same path is another inode: the old device is not its device.
    host.image("gone.img", 16 * MiB)
    assert loop.find(image) == []
    fresh = loop.ensure_attached(image)
    assert fresh.path != dev.path and loop.find(image) == [fresh]
    assert {d.path for d in loop.under(host.root)} == {dev.path, fresh.path}
    assert loop.detach_all(image) == 1
    assert loop.detach(dev.path, expect=fresh.backing) is False  # not the file it was looked up for
    assert loop.detach(dev.path, expect=dev.backing) is True


def test_refresh_capacity(host: Host) -> None:
    image = host.image("grow.img", 16 * MiB)
    dev = loop.attach(image)
    os.truncate(image, 48 * MiB)
    assert loop.refresh_capacity(dev.path) == 48 * MiB
    assert _kernel_size(dev) == 48 * MiB


def test_detach_refuses_a_mounted_device(host: Host) -> None:
    dev, target = host.mounted_image("m.img", 64 * MiB, "ext4", "m")
    image = host.root / "m.img"
    with pytest.raises(InUse, match=f"mounted at {target}\\): unmount it"):
        loop.detach(dev.path)
    assert loop.find(image) == [dev]  # no deferred autoclear was set
    assert not loop.status(dev.path).autoclear
    mount.unmount(str(target))
    assert loop.detach(dev.path)


def test_errors_name_the_problem(host: Host) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        loop.attach(host.root / "missing.img")
    with pytest.raises(InvalidArgument, match="neither a regular file"):
        loop.attach(host.root)
    with pytest.raises(InvalidArgument, match="not a loop device"):
        loop.detach("/dev/null")
    assert loop.detach(str(host.root / "no-such-device")) is False


def test_direct_io_refused_falls_back_to_buffered(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    # Filesystems without O_DIRECT make LOOP_CONFIGURE fail with EINVAL; this kernel's
    # filesystems all have it, so the refusal is simulated.
    real_ioctl = fcntl.ioctl

    def ioctl(fd: int, request: int, arg: Any = 0, *rest: Any) -> Any:
        if request == loop.LOOP_CONFIGURE and arg.info.lo_flags & loop.LO_FLAGS_DIRECT_IO:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_ioctl(fd, request, arg, *rest)

    monkeypatch.setattr(fcntl, "ioctl", ioctl)
    dev = loop.attach(host.image("nodio.img", 16 * MiB), direct_io=True)
    assert not dev.direct_io
    assert Path(f"/sys/block/loop{dev.number}/loop/dio").read_text().strip() == "0"


@pytest.mark.parametrize(
    ("answer", "call", "error", "message"),
    [
        (errno.ENXIO, loop.status, NotFound, "{} is not attached"),
        (errno.ENXIO, loop.refresh_capacity, FailedPrecondition, "{} is not attached to an image"),
        (errno.EIO, loop.status, Internal, "cannot read the status of {}: Input/output error"),
        (errno.EIO, loop.refresh_capacity, Internal, "cannot refresh the capacity of {}: Input/output error"),
    ],
)
def test_status_and_capacity_name_a_lost_backing_file(
    host: Host, monkeypatch: pytest.MonkeyPatch, answer: int, call: Callable[[str], object],
    error: type[ElastivolError], message: str,
) -> None:
    """ENXIO from the status or capacity ioctl (the device has no file any more) and any other failure,
    each with its own error. Simulated on a real attached device: freeing one under the call would race
    with whoever takes the number next on a shared machine."""
    dev = loop.attach(host.image("lost.img", 16 * MiB))
    real_ioctl = fcntl.ioctl

    def ioctl(fd: int, request: int, arg: Any = 0, *rest: Any) -> Any:
        if request in (loop.LOOP_GET_STATUS64, loop.LOOP_SET_CAPACITY):
            raise OSError(answer, os.strerror(answer))
        return real_ioctl(fd, request, arg, *rest)

    monkeypatch.setattr(fcntl, "ioctl", ioctl)
    with pytest.raises(error) as caught:
        call(dev.path)
    assert caught.value.message == message.format(dev.path)
    monkeypatch.undo()
    assert loop.detach(dev.path)


def test_attach_is_faster_than_losetup(host: Host) -> None:
    image = host.image("t.img", 64 * MiB)
    rounds = 10
    started = time.perf_counter()
    for _ in range(rounds):
        loop.detach(loop.attach(image).path)
    ours = (time.perf_counter() - started) / rounds
    started = time.perf_counter()
    for _ in range(rounds):
        path = subprocess.run(["losetup", "-f", "--show", "--direct-io=on", str(image)], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        subprocess.run(["losetup", "-d", path], check=True, timeout=10)
    theirs = (time.perf_counter() - started) / rounds
    print(f"attach+detach: ioctls {ours * 1000:.2f} ms, losetup {theirs * 1000:.2f} ms")
    assert ours < theirs


def test_found_by_identity_after_the_attaching_namespace_is_gone(host: Host) -> None:
    """The issue's reproduction: attach inside ``unshare -m`` with the directory bound elsewhere, exit."""
    image = host.image("ns.img", 16 * MiB)
    elsewhere = host.root / "elsewhere"
    code = f"from elastivol.node import loop; print(loop.attach({str(elsewhere / 'ns.img')!r}).path)"
    # A new mount namespace with host.root bound at host.root/elsewhere, ended when python exits.
    path = subprocess.run([*in_new_namespace(host.root, elsewhere), sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.strip()
    seen = Path(f"/sys/block/{Path(path).name}/loop/backing_file").read_text().strip()
    assert seen != str(image)  # what the old path comparison would have looked for
    [dev] = loop.find(image)
    assert dev.path == path and dev.backing == loop.file_id(image)
    assert loop.ensure_attached(image) == dev  # reused, not a second device
    assert loop.detach_all(image) == 1 and loop.find(image) == []


def test_ensure_attached_refuses_an_image_with_two_devices(host: Host) -> None:
    image = host.image("two.img", 16 * MiB)
    first, second = loop.attach(image), loop.attach(image)
    with pytest.raises(FailedPrecondition, match=f"2 loop devices \\({first.path}, {second.path}\\)"):
        loop.ensure_attached(image)
    assert loop.detach_all(image) == 2


def test_ensure_attached_refuses_a_partial_or_departing_device(host: Host) -> None:
    image = host.image("part.img", 16 * MiB)
    path = subprocess.run(["losetup", "--find", "--show", "--offset", "1048576", str(image)],
                          capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    with pytest.raises(FailedPrecondition, match="offset 1048576"):
        loop.ensure_attached(image)
    assert loop.detach(path)
    dev = loop.attach(image)
    # Autoclear, as a LOOP_CLR_FD on a device still open leaves it: it goes with its last opener.
    fd = os.open(dev.path, os.O_RDONLY)
    try:
        info = loop.LoopInfo64()
        fcntl.ioctl(fd, loop.LOOP_GET_STATUS64, info)
        info.lo_flags |= loop.LO_FLAGS_AUTOCLEAR
        fcntl.ioctl(fd, LOOP_SET_STATUS64, info)
        with pytest.raises(FailedPrecondition, match="being detached"):
            loop.ensure_attached(image)
    finally:
        os.close(fd)  # the last opener: the kernel detaches it now
    assert loop.find(image) == []


def test_reuse_refreshes_a_grown_image(host: Host) -> None:
    image = host.image("grown.img", 16 * MiB)
    dev = loop.ensure_attached(image)
    os.truncate(image, 40 * MiB)
    assert loop.ensure_attached(image) == dev
    assert _kernel_size(dev) == 40 * MiB


def test_released_detaches_an_unused_device_and_names_a_holder(host: Host) -> None:
    dev, target = host.mounted_image("rel.img", 64 * MiB, "ext4", "rel-mnt")
    image = host.root / "rel.img"
    with pytest.raises(InUse, match=f"{dev.path}, mounted at {target}"), loop.released(image):
        raise AssertionError("must not run while the device is mounted")
    assert loop.find(image) == [dev]
    mount.unmount(str(target))
    with loop.released(image):
        assert loop.find(image) == []
        image.unlink()
    assert loop.under(host.root) == []


def test_detach_returns_once_the_device_is_gone_even_with_a_reader(host: Host) -> None:
    # Another process's scan may have the device open as it is detached: the kernel then
    # finishes the detach at that reader's close, and detach() waits for it.
    dev = loop.attach(host.image("busy.img", 16 * MiB))
    reader = os.open(dev.path, os.O_RDONLY)
    closer = threading.Timer(0.03, os.close, args=(reader,))
    closer.start()
    try:
        assert loop.detach(dev.path) is True
        assert loop.find(host.root / "busy.img") == []  # already gone, not 30 ms later
    finally:
        closer.join()


def test_blankness_is_read_from_the_devices_own_file_not_the_path_sysfs_names(host: Host) -> None:
    """sysfs names the backing file as the attaching namespace sees it; here that path leads to
    another file, empty and sparse. Trusting it would call a device with data on it blank, and
    NodeStageVolume formats blank devices."""
    real, view = host.dir("real"), host.dir("view")
    image = host.image("real/a.img", 16 * MiB)
    subprocess.run(["mkswap", str(image)], capture_output=True, check=True, timeout=30)  # blkid knows it
    host.image("view/a.img", 16 * MiB)  # the decoy: what the host sees at the path sysfs will print
    code = (f"import sys; from elastivol.node import loop; print(loop.attach({str(view / 'a.img')!r}).path, "
            "flush=True); sys.stdin.read()")
    # Bound at view only inside the namespace, which stays alive (so sysfs keeps its path) until stdin closes.
    ns = subprocess.Popen([*in_new_namespace(real, view), sys.executable, "-c", code], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert ns.stdout is not None
        path = ns.stdout.readline().strip()
        assert Path(f"/sys/block/{Path(path).name}/loop/backing_file").read_text().strip() == str(view / "a.img")
        assert fs.detect(path) == "swap"
    finally:
        assert ns.stdin is not None
        ns.stdin.close()
        ns.wait(30)
    assert loop.detach_all(image) == 1
