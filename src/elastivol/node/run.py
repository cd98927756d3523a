"""The one way elastivol runs a host command.

Only the tools with no syscall equivalent are spawned (mkfs, resize2fs, xfs_growfs, blkid,
btrfs); everything else in :mod:`elastivol.node` is an ioctl or a syscall. Every command is
an argv list (never a shell), has a timeout, and fails with a typed error that carries what a
person needs to see: the command, its exit code and the end of its stderr.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Sequence

from elastivol.errors import FailedPrecondition, Internal, Unavailable

log = logging.getLogger("elastivol.node.run")

# Which Debian package brings a tool, for the "not installed" message.
_PACKAGES = {
    "mkfs.ext2": "e2fsprogs",
    "mkfs.ext3": "e2fsprogs",
    "mkfs.ext4": "e2fsprogs",
    "resize2fs": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "xfs_growfs": "xfsprogs",
    "mkfs.btrfs": "btrfs-progs",
    "btrfs": "btrfs-progs",
    "blkid": "util-linux",
}
# A fixed environment so the tools' messages are in English and parseable.
_ENV = {**os.environ, "LC_ALL": "C"}
_TAIL_LINES = 6
_TAIL_CHARS = 1500


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-_TAIL_LINES:])[-_TAIL_CHARS:]


class HostCommandError(Internal):
    """A host command ran and failed."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, stdout: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout
        tail = _tail(stderr) or _tail(stdout) or "(no output)"
        super().__init__(f"`{shlex.join(self.argv)}` failed with exit code {returncode}: {tail}")


class HostCommandTimeout(Unavailable):
    """A host command did not finish in time (it has been killed)."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        super().__init__(
            f"`{shlex.join(self.argv)}` did not finish within {timeout:g} s and was killed; retry later"
        )


class CommandNotFound(FailedPrecondition):
    """The tool is not installed on this host."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        package = _PACKAGES.get(os.path.basename(self.argv[0]))
        hint = f" (install the {package} package)" if package else ""
        super().__init__(
            f"{self.argv[0]} is not installed on this host{hint}; it is needed to run `{shlex.join(self.argv)}`"
        )


def run(
    argv: Sequence[str],
    *,
    timeout: float = 120.0,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; with ``check`` a non-zero exit raises :class:`HostCommandError`."""
    args = [os.fspath(a) for a in argv]
    if not args:
        raise Internal("run() needs a command")
    started = time.monotonic()
    try:
        result = subprocess.run(  # an argv list, never a shell
            args,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=_ENV,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HostCommandTimeout(args, timeout) from None
    except FileNotFoundError:
        raise CommandNotFound(args) from None
    log.debug("ran %s: exit %d in %.3f s", shlex.join(args), result.returncode, time.monotonic() - started)
    if check and result.returncode != 0:
        raise HostCommandError(args, result.returncode, result.stderr, result.stdout)
    return result
