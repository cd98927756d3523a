"""Scanning for loop devices while another thread or process tears one down.

A fake /sys/block tree and a fake LOOP_GET_STATUS64 stand in for the kernel; reading one
device fails the way kernfs does when the device is detached under the reader (ENODEV, at
open or at read), or the way the block layer does as a disk goes away (ENXIO), or is simply
gone (ENOENT). That device must be skipped, the others still listed, and nothing raised.
"""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from elastivol.node import loop

VANISHED = [errno.ENODEV, errno.ENXIO, errno.ENOENT]
ATTRIBUTES = ["loop/backing_file"]
# What the fake kernel reports per device: (read-only flag, errno the status read fails with).
STATUS: dict[int, tuple[bool, int]] = {}


def _encode_dev(dev: int) -> int:
    """The kernel's huge_encode_dev(), the form lo_device comes in."""
    major, minor = os.major(dev), os.minor(dev)
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


@pytest.fixture
def sys_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """loop0 and loop2 attached to images, loop1 free, plus a non-loop disk."""
    root = tmp_path / "sys-block"
    images = tmp_path / "images"
    images.mkdir()
    STATUS.clear()
    for number, ro in ((0, "0"), (2, "1")):
        image = images / f"v{number}.img"
        image.write_bytes(b"")
        STATUS[number] = (ro == "1", 0)
        (root / f"loop{number}" / "loop").mkdir(parents=True)
        (root / f"loop{number}" / "loop" / "backing_file").write_text(f"{image}\n")
        (root / f"loop{number}" / "loop" / "dio").write_text("1\n")
        (root / f"loop{number}" / "ro").write_text(f"{ro}\n")
    (root / "loop1").mkdir()
    (root / "loop1" / "ro").write_text("0\n")
    (root / "sda").mkdir()
    monkeypatch.setattr(loop, "_SYS_BLOCK", str(root))

    def status_of(number: int) -> tuple[loop.LoopStatus, str] | None:
        read_only, err = STATUS[number]
        if err:
            if err in loop._VANISHED:
                return None
            raise OSError(err, os.strerror(err))
        st = os.stat(images / f"v{number}.img")
        flags = loop.LO_FLAGS_DIRECT_IO | (loop.LO_FLAGS_READ_ONLY if read_only else 0)
        return loop.LoopStatus(number, _encode_dev(st.st_dev), st.st_ino, 0, 0, flags, ""), f"7:{number}"

    monkeypatch.setattr(loop, "_status_of", status_of)
    return root


class _FailingRead:
    def __init__(self, err: int) -> None:
        self.err = err

    def __enter__(self) -> _FailingRead:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read(self) -> bytes:
        raise OSError(self.err, os.strerror(self.err))


def _fail(monkeypatch: pytest.MonkeyPatch, path: Path, err: int, at: str) -> list[str]:
    """Make reading ``path`` fail with ``err`` at open or at read; returns the paths tried."""
    tried: list[str] = []

    def fake_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        tried.append(os.fspath(file))
        if os.fspath(file) == str(path):
            if at == "open":
                raise OSError(err, os.strerror(err), os.fspath(file))
            return _FailingRead(err)
        return builtins.open(file, *args, **kwargs)

    # loop.py's open() resolves through its module globals before builtins.
    monkeypatch.setattr(loop, "open", fake_open, raising=False)
    return tried


def _image(sys_block: Path, number: int) -> str:
    return str(sys_block.parent / "images" / f"v{number}.img")


def test_scan_without_races(sys_block: Path) -> None:
    devices = loop.list_all()
    assert [(d.number, d.backing_file, d.read_only, d.direct_io) for d in devices] == [
        (0, _image(sys_block, 0), False, True),
        (2, _image(sys_block, 2), True, True),
    ]
    assert loop.find(_image(sys_block, 2)) == [devices[1]]
    # Found by what the file is, not by how sysfs spells its path (another namespace's view).
    (sys_block / "loop2" / "loop" / "backing_file").write_text("/images/v2.img\n")
    [dev] = loop.find(_image(sys_block, 2))
    assert dev.number == 2 and dev.backing_file == "/images/v2.img"
    assert loop.find(_image(sys_block, 0))[0].number == 0


@pytest.mark.parametrize("err", VANISHED, ids=errno.errorcode.get)
def test_device_detached_before_its_status_is_read(sys_block: Path, err: int) -> None:
    STATUS[0] = (False, err)
    assert [d.number for d in loop.list_all()] == [2]
    assert loop.find(_image(sys_block, 0)) == []


@pytest.mark.parametrize("at", ["open", "read"])
@pytest.mark.parametrize("attribute", ATTRIBUTES)
@pytest.mark.parametrize("err", VANISHED, ids=errno.errorcode.get)
def test_device_vanishing_mid_scan_is_skipped(
    sys_block: Path, monkeypatch: pytest.MonkeyPatch, err: int, attribute: str, at: str
) -> None:
    tried = _fail(monkeypatch, sys_block / "loop0" / attribute, err, at)
    assert [d.number for d in loop.list_all()] == [2]
    assert str(sys_block / "loop0" / attribute) in tried  # the failure really was hit
    assert loop.find(_image(sys_block, 0)) == []
    # The other devices are still found.
    [dev] = loop.find(_image(sys_block, 2))
    assert dev.number == 2 and dev.read_only


@pytest.mark.parametrize("err", [errno.EACCES, errno.EIO])
def test_other_errors_still_raise(sys_block: Path, monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    _fail(monkeypatch, sys_block / "loop0" / "loop" / "backing_file", err, "read")
    with pytest.raises(OSError) as info:
        loop.list_all()
    assert info.value.errno == err
