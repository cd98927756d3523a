"""The sparse fallback copy and atomic writes, on this machine's ext4 (no reflink)."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from elastivol.errors import FailedPrecondition
from elastivol.node import copy

MiB = 1 << 20


def sparse_file(path: Path) -> list[tuple[int, bytes]]:
    """64 MiB, mostly holes, with data at a few places (one extent crossing 1 MiB)."""
    pieces = [(0, os.urandom(4096)), (MiB - 4096, os.urandom(3 * 4096)), (40 * MiB, os.urandom(2 * MiB))]
    with open(path, "wb") as fh:
        fh.truncate(64 * MiB)
        for offset, data in pieces:
            fh.seek(offset)
            fh.write(data)
    return pieces


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def test_no_reflink_on_ext4(tmp_path: Path) -> None:
    assert copy.reflink_supported(tmp_path) is False
    assert list(tmp_path.iterdir()) == []  # probe files removed


def test_fallback_copy_preserves_content_and_holes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    sparse_file(src)
    os.chmod(src, 0o640)
    calls: list[tuple[int, int]] = []
    assert copy.clone_file(src, dst, progress=lambda done, total: calls.append((done, total))) == "copy"
    assert digest(src) == digest(dst)
    assert os.path.getsize(dst) == 64 * MiB
    assert copy.allocated_bytes(dst) <= copy.allocated_bytes(src) + 64 * 1024
    assert copy.allocated_bytes(dst) < 4 * MiB  # the holes stayed holes
    assert calls[-1] == (64 * MiB, 64 * MiB)
    assert os.stat(dst).st_mode & 0o777 == 0o640
    assert not (tmp_path / "dst.img.partial").exists()


def test_copy_of_an_empty_and_a_dense_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.touch()
    copy.clone_file(empty, tmp_path / "empty2")
    assert (tmp_path / "empty2").read_bytes() == b""
    dense = tmp_path / "dense"
    dense.write_bytes(os.urandom(3 * MiB + 17))
    copy.clone_file(dense, tmp_path / "dense2")
    assert (tmp_path / "dense2").read_bytes() == dense.read_bytes()


def test_no_fallback_when_not_allowed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x" * 4096)
    with pytest.raises(FailedPrecondition, match="reflink"):
        copy.clone_file(src, tmp_path / "dst", allow_fallback=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_failure_leaves_no_file_under_either_name(tmp_path: Path) -> None:
    src = tmp_path / "src"
    sparse_file(src)

    def fail(done: int, total: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        copy.clone_file(src, tmp_path / "dst", progress=fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_stale_partial_is_replaced(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"new")
    (tmp_path / "dst.partial").write_bytes(b"half of an old copy" * 1000)
    copy.clone_file(src, tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == b"new"
    assert not (tmp_path / "dst.partial").exists()


def test_atomic_write_bytes(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    copy.atomic_write_bytes(target, b"one")
    copy.atomic_write_bytes(target, b"two", mode=0o600)
    assert target.read_bytes() == b"two"
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]
    copy.fsync_dir(tmp_path)


def test_scratch_files_are_new_private_and_readable(tmp_path: Path) -> None:
    made = [copy.scratch_file(tmp_path, ".x-", ".tmp") for _ in range(50)]
    try:
        names = {name for _fd, name in made}
        assert len(names) == 50 and all(os.path.basename(n).startswith(".x-") and n.endswith(".tmp") for n in names)
        fd = made[0][0]
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        os.write(fd, b"abc")
        assert os.pread(fd, 3, 0) == b"abc"  # FICLONE's source must be readable
    finally:
        for fd, _name in made:
            os.close(fd)
