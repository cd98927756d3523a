"""Servicer unit tests: no root, no loop device, no mount. These tests run as any user.

The servicers get a fake host (``FakeHost``) and fake providers. As a second line, the host's
real entry points (the mount syscalls and every external command: mkfs, losetup, resize...) are
replaced for the duration of each test by one that fails the test, so a servicer that went around its HostOps
would be caught here even when run as root.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from elastivol.locks import InFlight
from elastivol.node import _sys
from elastivol.node.paths import PathGuard
from tests.unit.servicers.fakes import FakeHost

T = TypeVar("T")


def call(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def no_real_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a servicer unit test reached the real host: {args!r}")

    for name in ("mount", "umount2", "block_device_size"):
        monkeypatch.setattr(_sys, name, refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    yield


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The kubelet directory stand-in: the one allowed root."""
    (tmp_path / "kubelet").mkdir()
    return tmp_path / "kubelet"


@pytest.fixture
def guard(root: Path) -> PathGuard:
    return PathGuard([root])


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def inflight() -> InFlight:
    return InFlight(None)
