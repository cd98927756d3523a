"""Shared fixtures: a real reflink pool on a loop-mounted filesystem, a real server process."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from elastivol.node import _sys, loop, mount

MNT_DETACH = 2

ROOT = Path(__file__).resolve().parent.parent


# Suites that need no root (they run against fakes); run alone, they may run as any user.
ROOTLESS = (ROOT / "tests" / "unit" / "servicers",)


def _only_rootless(config: pytest.Config) -> bool:
    paths = [Path(a.split("::")[0]).resolve() for a in config.args]
    return bool(paths) and all(any(p == r or r in p.parents for r in ROOTLESS) for p in paths)


def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() != 0 and not _only_rootless(config):
        raise pytest.UsageError("elastivol's tests use real loop devices and mounts: run them as root (make test)")


def _cleanup_pool(pool: Path) -> None:
    # Unmount anything left under the work dir (deepest first), then the pool, then its loops.
    work = pool.parent
    # Found by identity before anything is unmounted (the pool's files are reachable only while
    # it is mounted), so devices attached from another mount namespace are found too.
    devices = loop.under(work)
    for m in sorted(mount.mounts(), key=lambda m: len(m.target), reverse=True):
        if m.target.startswith(str(work) + "/"):
            try:
                mount.unmount(m.target)
            except Exception:
                # A failed test may have left a file open; detach lazily so the run can end clean.
                _sys.umount2(m.target, MNT_DETACH)
    # Volume images first (they live on the pool), then the pool's own image.
    for d in sorted(devices, key=lambda d: d.backing_file.endswith("pool.img")):
        try:
            loop.detach(d.path, expect=d.backing)
        except Exception as exc:
            print(f"could not detach {d.path}: {exc}")


@pytest.fixture(scope="session")
def pool_dir() -> Iterator[Path]:
    """An xfs pool (reflink) in a sparse image, shared by the session's tests."""
    from elastivol.providers.local.pool import init_pool

    work = Path(tempfile.mkdtemp(prefix="elastivol-test-", dir="/var/tmp"))
    pool = work / "pool"
    init_pool(pool, 16 << 30, "xfs")
    yield pool
    _cleanup_pool(pool)
    shutil.rmtree(work, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The boundary fuzzer's code distribution per RPC (tests/reliability/fuzzing.py), when it ran."""
    import sys

    fuzzing = sys.modules.get("tests.reliability.fuzzing")
    lines = fuzzing.report() if fuzzing is not None else []
    if lines:
        terminalreporter.section("boundary fuzzing: codes per RPC")
        for line in lines:
            terminalreporter.write_line(line)
