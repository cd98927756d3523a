"""run(): argv lists, timeouts and typed errors."""

from __future__ import annotations

import pytest

from elastivol.errors import FailedPrecondition, Internal, Unavailable
from elastivol.node.run import CommandNotFound, HostCommandError, HostCommandTimeout, run


def test_success_and_input() -> None:
    assert run(["cat"], input="hello").stdout == "hello"
    assert run(["sh", "-c", "exit 3"], check=False).returncode == 3


def test_failure_carries_argv_code_and_stderr_tail() -> None:
    script = "for i in $(seq 1 20); do echo line$i >&2; done; exit 4"
    with pytest.raises(HostCommandError) as info:
        run(["sh", "-c", script])
    err = info.value
    assert isinstance(err, Internal)
    assert err.argv == ["sh", "-c", script] and err.returncode == 4
    assert "line20" in err.stderr and "line1\n" in err.stderr
    assert "exit code 4" in err.message and "line20" in err.message and "line10" not in err.message


def test_timeout() -> None:
    with pytest.raises(HostCommandTimeout) as info:
        run(["sleep", "5"], timeout=0.2)
    assert isinstance(info.value, Unavailable)
    assert "sleep 5" in info.value.message and "0.2 s" in info.value.message


def test_missing_command_names_the_package() -> None:
    with pytest.raises(CommandNotFound) as info:
        run(["xfs_growfs_not_here"])
    assert isinstance(info.value, FailedPrecondition)
    assert "xfs_growfs_not_here is not installed" in info.value.message


def test_no_shell() -> None:
    # An argument is an argument, never shell syntax.
    assert run(["echo", "$(id); rm -rf /"]).stdout == "$(id); rm -rf /\n"
