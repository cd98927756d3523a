"""PathGuard: paths must really lead inside an allowed root."""

from __future__ import annotations

from pathlib import Path

import pytest

from elastivol.errors import InvalidArgument, NotFound
from elastivol.node.paths import PathGuard


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "root" / "pods").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return tmp_path


def test_paths_inside_are_returned_resolved(tree: Path) -> None:
    guard = PathGuard([str(tree / "root")])
    assert guard.check(str(tree / "root" / "pods")) == tree / "root" / "pods"
    # The target itself (and its parents) need not exist yet.
    assert guard.check(str(tree / "root" / "new" / "mount")) == tree / "root" / "new" / "mount"
    assert guard.check(str(tree / "root" / "pods" / ".." / "x")) == tree / "root" / "x"
    (tree / "root" / "inner").symlink_to(tree / "root" / "pods")
    assert guard.check(str(tree / "root" / "inner" / "v")) == tree / "root" / "pods" / "v"


@pytest.mark.parametrize("bad", ["", "relative/path", "/a/\0/b"])
def test_malformed_paths(tree: Path, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        PathGuard([str(tree / "root")]).check(bad)


def test_symlinks_escaping_the_root(tree: Path) -> None:
    root = tree / "root"
    guard = PathGuard([str(root)])
    (root / "escape").symlink_to(tree / "outside")
    with pytest.raises(InvalidArgument) as info:
        guard.check(str(root / "escape" / "mount"))
    message = info.value.message
    assert str(root / "escape" / "mount") in message and str(tree / "outside" / "mount") in message
    assert str(root) in message and "--allowed-root" in message
    (root / "abs").symlink_to("/etc")
    with pytest.raises(InvalidArgument):
        guard.check(str(root / "abs"))
    with pytest.raises(InvalidArgument):
        guard.check(str(root / ".." / "outside" / "x"))
    # The root itself is not inside the root.
    with pytest.raises(InvalidArgument):
        guard.check(str(root))
    # A sibling sharing the root's name as a prefix is not inside it.
    (tree / "root2").mkdir()
    with pytest.raises(InvalidArgument):
        guard.check(str(tree / "root2" / "x"))


def test_root_that_is_a_symlink(tree: Path) -> None:
    (tree / "kubelet").symlink_to(tree / "root")
    guard = PathGuard([str(tree / "kubelet")])
    assert guard.check(str(tree / "kubelet" / "pods" / "v")) == tree / "root" / "pods" / "v"
    assert guard.check(str(tree / "root" / "pods" / "v")) == tree / "root" / "pods" / "v"


def test_must_exist(tree: Path) -> None:
    guard = PathGuard([str(tree / "root")])
    assert guard.check(str(tree / "root" / "pods"), must_exist=True) == tree / "root" / "pods"
    with pytest.raises(NotFound):
        guard.check(str(tree / "root" / "nope"), must_exist=True)


def test_several_roots_and_none(tree: Path) -> None:
    guard = PathGuard([str(tree / "root"), str(tree / "outside")])
    assert guard.check(str(tree / "outside" / "x")) == tree / "outside" / "x"
    with pytest.raises(InvalidArgument, match=r"\(none\)"):
        PathGuard([]).check(str(tree / "root" / "x"))
    with pytest.raises(InvalidArgument):
        PathGuard(["relative"])


def test_component_and_path_length_limits(tree: Path) -> None:
    """NAME_MAX and PATH_MAX are checked in bytes, before the kernel answers ENAMETOOLONG."""
    root = tree / "root"
    guard = PathGuard([str(root)])
    assert guard.check(str(root / ("a" * 255))) == root / ("a" * 255)
    with pytest.raises(InvalidArgument, match=r"staging_target_path has a component of 256 bytes.*NAME_MAX \(255"):
        guard.check(str(root / ("a" * 256)), field="staging_target_path")
    # 128 two-byte characters: 256 bytes although only 128 characters.
    with pytest.raises(InvalidArgument, match="component of 256 bytes"):
        guard.check(str(root / ("\u00e9" * 128)))
    head = str(root) + "/"
    fill = 4095 - len(head)
    longest = head + "/".join("b" * 200 for _ in range(fill // 201)) + "/" + "c" * (fill % 201 - 1 or 1)
    longest = longest + "d" * (4095 - len(longest))
    assert len(longest) == 4095
    assert str(guard.check(longest)) == longest
    with pytest.raises(InvalidArgument, match=r"target_path is 4096 bytes long.*PATH_MAX \(4096"):
        guard.check(longest + "e", field="target_path")


def test_a_file_where_a_directory_is_needed(tree: Path) -> None:
    root = tree / "root"
    (root / "pods" / "file").write_text("x")
    guard = PathGuard([str(root)])
    assert guard.check(str(root / "pods" / "file")) == root / "pods" / "file"
    with pytest.raises(InvalidArgument, match=r"target_path: .*/pods/file is not a directory"):
        guard.check(str(root / "pods" / "file" / "deeper" / "mount"), field="target_path")


def test_messages_name_the_field(tree: Path) -> None:
    guard = PathGuard([str(tree / "root")])
    for bad in ("", "rel", "/a\0b", str(tree / "outside" / "x")):
        with pytest.raises(InvalidArgument, match=r"^volume_path"):
            guard.check(bad, field="volume_path")


def test_new_mount_refused_inside_a_volume_bind_but_not_inside_a_bind_in_place(tree: Path) -> None:
    """A file volume is a bind of another directory of the same filesystem: a mount inside it is
    refused. A directory bound onto itself (the shared kubelet dir of a pod) is the host's tree."""
    from elastivol.errors import FailedPrecondition
    from elastivol.node import mount

    root = tree / "root"
    in_place, volume, data = root / "kubelet", root / "pods" / "vol", tree / "outside" / "data"
    for d in (in_place, volume, data):
        d.mkdir(parents=True, exist_ok=True)
    guard = PathGuard([str(root)])
    mount.bind(str(in_place), str(in_place))
    try:
        assert guard.check(str(in_place / "staging" / "v"), new_mount=True) == in_place / "staging" / "v"
        mount.bind(str(data), str(volume))
        try:
            with pytest.raises(FailedPrecondition) as info:
                guard.check(str(volume / "nested"), field="target_path", new_mount=True)
            assert "target_path" in str(info.value) and str(volume) in str(info.value)
        finally:
            mount.unmount(str(volume))
    finally:
        mount.unmount(str(in_place))
