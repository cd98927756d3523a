"""Superblock detection and sizes on image files (no loop device needed)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from elastivol.errors import FailedPrecondition, InvalidArgument
from elastivol.node import fs
from elastivol.node.run import run

MiB = 1 << 20


def image(tmp_path: Path, size: int = 64 * MiB, name: str = "img") -> str:
    path = tmp_path / name
    with open(path, "wb") as fh:
        fh.truncate(size)
    return str(path)


def blkid_type(path: str) -> str:
    out = run(["blkid", "-p", "-o", "value", "-s", "TYPE", path]).stdout.strip()
    return out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["mkfs.ext2"], "ext2"),
        (["mkfs.ext3"], "ext3"),
        (["mkfs.ext4"], "ext4"),
        (["mkfs.ext4", "-O", "^has_journal"], "ext4"),  # no journal, but extents: still ext4
        (["mkfs.ext2", "-O", "extents"], "ext4"),
        (["mkfs.ext4", "-O", "64bit"], "ext4"),
    ],
)
def test_ext_generations_match_blkid(tmp_path: Path, argv: list[str], expected: str) -> None:
    path = image(tmp_path)
    run([*argv, "-F", "-q", path])
    assert fs.detect(path) == expected == blkid_type(path)


@pytest.mark.parametrize("fs_type", ["ext4", "xfs", "btrfs"])
def test_make_detect_size(tmp_path: Path, fs_type: str) -> None:
    size = 320 * MiB
    path = image(tmp_path, size)
    assert fs.detect(path) is None
    fs.make(path, fs_type)
    assert fs.detect(path) == fs_type == blkid_type(path)
    assert fs.fs_size_bytes(path, fs_type) == size
    assert fs.device_size(path) == size


def test_ext_size_uses_the_64bit_high_word(tmp_path: Path) -> None:
    path = image(tmp_path)
    fs.make(path, "ext4", ["-O", "64bit", "-b", "4096"])
    assert fs.fs_size_bytes(path, "ext4") == 64 * MiB
    # Pretend 2^32 more blocks: only a reader that honours s_blocks_count_hi sees them.
    with open(path, "r+b") as fh:
        fh.seek(1024 + 0x150)
        fh.write(struct.pack("<I", 1))
    assert fs.fs_size_bytes(path, "ext4") == 64 * MiB + (1 << 32) * 4096


def test_other_signatures_are_not_blank(tmp_path: Path) -> None:
    swap = image(tmp_path, name="swap")
    run(["mkswap", swap])
    assert fs.detect(swap) == "swap"
    table = image(tmp_path, name="table")
    with open(table, "r+b") as fh:  # an MBR with one Linux partition
        fh.seek(446)
        fh.write(struct.pack("<B3sB3sII", 0, b"", 0x83, b"", 2048, 8192))
        fh.seek(510)
        fh.write(b"\x55\xaa")
    assert fs.detect(table) == "dos"
    luks = image(tmp_path, name="luks")
    with open(luks, "r+b") as fh:
        fh.write(b"LUKS\xba\xbe\x00\x01")
    assert fs.detect(luks) == "crypto_LUKS"


def test_data_without_a_signature_is_blank(tmp_path: Path) -> None:
    path = image(tmp_path)
    with open(path, "r+b") as fh:
        fh.seek(5 * MiB)
        fh.write(b"\x01" * 4096)
    assert fs.detect(path) is None  # asked blkid: nothing it knows


def test_make_refuses_unknown_types(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="ntfs"):
        fs.make(image(tmp_path), "ntfs")


def test_size_of_the_wrong_type(tmp_path: Path) -> None:
    path = image(tmp_path)
    fs.make(path, "ext4")
    with pytest.raises(FailedPrecondition):
        fs.fs_size_bytes(path, "xfs")


def test_ext_clean_state(tmp_path: Path) -> None:
    path = image(tmp_path)
    fs.make(path, "ext4")
    assert fs.ext_clean(path)
    with open(path, "r+b") as fh:  # mark "errors found"
        fh.seek(1024 + 58)
        fh.write(struct.pack("<H", 3))
    assert not fs.ext_clean(path)
    assert not fs.ext_clean(image(tmp_path, name="blank"))
    os.unlink(path)
