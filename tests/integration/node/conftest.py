"""A scratch directory per test whose loop devices and mounts are undone afterwards.

Other suites attach loop devices on this machine at the same time, so cleanup touches only
devices backed by files under this test's directory and mounts under it; never all loops.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from elastivol.errors import InUse
from elastivol.node import fs, loop, mount


class Host:
    """Helpers bound to one test's directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def image(self, name: str, size: int) -> Path:
        path = self.root / name
        with open(path, "wb") as fh:
            fh.truncate(size)
        return path

    def dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mounted_image(self, name: str, size: int, fs_type: str, target: str) -> tuple[loop.LoopDevice, Path]:
        """A new image ``name`` of ``size`` on a loop device, made ``fs_type`` and mounted at the dir ``target``."""
        dev = loop.ensure_attached(self.image(name, size))
        fs.make(dev.path, fs_type)
        mount_dir = self.dir(target)
        mount.mount(dev.path, str(mount_dir), fs_type)
        return dev, mount_dir

    def mounts(self) -> list[str]:
        prefix = str(self.root) + "/"
        return [m.target for m in mount.mounts() if m.target.startswith(prefix)]

    def loops(self) -> list[loop.LoopDevice]:
        return loop.under(self.root)

    def cleanup(self) -> None:
        # Rounds, because mounts and loops nest both ways: a mounted pool holds the images
        # of loop devices whose filesystems are mounted elsewhere.
        for _ in range(5):
            for target in sorted(set(self.mounts()), key=len, reverse=True):
                with contextlib.suppress(Exception):
                    fs.thaw(target)  # a test that failed while frozen must not hang the unmount
                with contextlib.suppress(InUse):
                    mount.unmount_all(target)
            for dev in self.loops():
                with contextlib.suppress(InUse):
                    loop.detach(dev.path, expect=dev.backing)
            if not self.mounts() and not self.loops():
                return


def new_host() -> Iterator[Host]:
    host = Host(Path(tempfile.mkdtemp(prefix="elastivol-node-", dir="/var/tmp")))
    try:
        yield host
    finally:
        host.cleanup()
        left = [f"{d.path} -> {d.backing_file}" for d in host.loops()] + host.mounts()
        shutil.rmtree(host.root, ignore_errors=True)
        assert left == [], f"the test left loop devices or mounts behind: {left}"


@pytest.fixture
def host() -> Iterator[Host]:
    yield from new_host()


def has_capability(bit: int) -> bool:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    return False


CAP_SYS_RESOURCE = 24

