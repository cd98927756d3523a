"""The guard of conftest.py holds: within these tests, nothing reaches the real host."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from elastivol.node import fs, mount
from elastivol.node.host import RealHost


def test_external_commands_and_mount_syscalls_fail_the_test(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="reached the real host"):
        subprocess.run(["true"], check=False)
    with pytest.raises(AssertionError, match="reached the real host"):
        fs.make("/dev/null", "ext4")  # mkfs through elastivol's own runner
    with pytest.raises(AssertionError, match="reached the real host"):
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        mount.bind(str(tmp_path / "a"), str(tmp_path / "b"), readonly=True)


def test_the_real_host_reads_the_mount_table_without_root() -> None:
    # Reads are allowed (and need no root): the mount table of this process.
    assert RealHost().find_by_target("/") is not None
