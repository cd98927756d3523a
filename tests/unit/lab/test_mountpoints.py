"""The machine-wide registry of lab mount points: created on first use, removed after the last."""

from __future__ import annotations

from pathlib import Path

import pytest

from elastivol.lab import mountpoints


@pytest.fixture(autouse=True)
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    reg = tmp_path / "registry"
    monkeypatch.setattr(mountpoints, "REGISTRY", reg)
    return reg


def test_a_created_directory_lives_until_its_last_user_releases_it(tmp_path: Path) -> None:
    path = tmp_path / "host" / "a" / "data"
    (tmp_path / "host").mkdir()
    mountpoints.acquire(str(path), device=False, owner="pod-1")
    mountpoints.acquire(str(path), device=False, owner="pod-2")
    assert path.is_dir()
    assert mountpoints.users(str(path)) == ["pod-1", "pod-2"]
    assert mountpoints.release("pod-1") == []
    assert path.is_dir(), "removing it now would detach pod-2's bind in its namespace"
    assert mountpoints.release("pod-2") == [str(tmp_path / "host" / "a")]
    assert not (tmp_path / "host" / "a").exists()
    assert (tmp_path / "host").is_dir()
    assert mountpoints.users(str(path)) == []


def test_a_directory_that_was_there_before_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.mkdir()
    mountpoints.acquire(str(path), device=False, owner="pod-1")
    assert mountpoints.release("pod-1") == []
    assert path.is_dir()


def test_a_created_directory_with_data_in_it_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "made" / "data"
    mountpoints.acquire(str(path), device=False, owner="pod-1")
    (path / "written-on-the-host").write_text("x")
    assert mountpoints.release("pod-1") == []
    assert (path / "written-on-the-host").read_text() == "x"


def test_a_device_placeholder_is_a_file_and_goes_with_its_pod(tmp_path: Path) -> None:
    path = tmp_path / "dev" / "xvda"
    (tmp_path / "dev").mkdir()
    mountpoints.acquire(str(path), device=True, owner="pod-1")
    assert path.is_file()
    assert mountpoints.release("pod-1") == [str(path)]
    assert not path.exists()


def test_release_of_an_unknown_owner_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "made"
    mountpoints.acquire(str(path), device=False, owner="pod-1")
    assert mountpoints.release("nobody") == []
    assert path.is_dir() and mountpoints.users(str(path)) == ["pod-1"]
