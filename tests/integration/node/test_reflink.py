"""Reflink clones on a loop-mounted btrfs."""

from __future__ import annotations

import os
from pathlib import Path

from elastivol.node import copy, fs, loop, volume

from .conftest import Host

MiB = 1 << 20


def test_clone_file_reflinks_on_btrfs(host: Host) -> None:
    _, pool = host.mounted_image("btrfs.img", 512 * MiB, "btrfs", "pool")
    assert copy.reflink_supported(pool)
    assert sorted(os.listdir(pool)) == []
    src = pool / "src.img"
    with open(src, "wb") as fh:
        fh.truncate(64 * MiB)
        fh.seek(20 * MiB)
        fh.write(os.urandom(8 * MiB))
        os.fsync(fh.fileno())
    before = fs.statfs(str(pool)).used_bytes
    seen: list[tuple[int, int]] = []
    assert copy.clone_file(src, pool / "clone.img", progress=lambda d, t: seen.append((d, t))) == "reflink"
    clone = Path(pool / "clone.img")
    assert clone.read_bytes() == src.read_bytes()
    assert seen == [(64 * MiB, 64 * MiB)]
    os.sync()
    # Shared extents: the clone took (almost) no space.
    assert fs.statfs(str(pool)).used_bytes - before < 4 * MiB
    # Copy-on-write: changing the clone leaves the source alone.
    with open(clone, "r+b") as fh:
        fh.seek(20 * MiB)
        fh.write(b"changed")
    with open(src, "rb") as fh:
        fh.seek(20 * MiB)
        assert fh.read(7) != b"changed"
    assert copy.clone_file(src, pool / "strict.img", allow_fallback=False) == "reflink"


def test_clones_on_xfs_keep_512_byte_sectors_and_mount(host: Host) -> None:
    # On xfs a reflinked file wants 4096-byte aligned direct I/O; a loop device that followed
    # that would turn a 512-sector xfs volume unmountable after its first snapshot.
    _, pool = host.mounted_image("pool.img", 1024 * MiB, "xfs", "pool")
    assert copy.reflink_supported(pool)
    src = pool / "vol.img"
    with open(src, "wb") as fh:
        fh.truncate(512 * MiB)
    src_dev = loop.ensure_attached(src).path
    fs.make(src_dev, "xfs")
    assert copy.clone_file(src, pool / "clone.img") == "reflink"
    loop.detach_all(src)
    for image in (src, pool / "clone.img"):
        dev = loop.ensure_attached(image)
        assert Path(f"/sys/block/loop{dev.number}/queue/logical_block_size").read_text().strip() == "512"
        target = host.dir(image.name + ".mnt")
        volume.stage_filesystem(dev.path, str(target), "xfs")
        (target / "ok").write_text("mounted")
