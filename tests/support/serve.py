"""``python -m tests.support.serve serve ARGS...``: the real `elastivol serve`, with test parts put in.

A test server runs in a child process, so what the test wants in it travels in environment
variables that only this module reads (the product has no such switch):

* ``ELASTIVOL_AWS_FAULTS``: a JSON :class:`~tests.support.aws_faults.FaultConfig`; the AWS clients
  of the server get a fault layer with it;
* ``ELASTIVOL_EFS_FAKE_ROOT``: a directory; EFS mounts become binds of directories under it and are
  recorded in ``mounts.jsonl`` there;
* ``ELASTIVOL_CRASH_AT`` / ``ELASTIVOL_PAUSE_AT``: crash or pause at named crash points
  (:mod:`tests.support.crash`).

The first two reach the product through :class:`elastivol.assembly.parts.Parts`, the CLI's context
object; the crash hook through :func:`elastivol.crashpoints.install`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from elastivol.assembly.parts import Parts
from elastivol.cli import main as cli_main
from elastivol.providers.aws.mounter import Mounter
from tests.support import aws_faults, crash
from tests.support.efs import FAKE_EFS_ENV, RecordingMounter


def parts_from_env() -> Parts:
    faults = aws_faults.from_env()
    fake_root = os.environ.get(FAKE_EFS_ENV, "").strip()

    def recording(region: str) -> Mounter:
        root = Path(fake_root)
        return RecordingMounter(root, region, root / "mounts.jsonl")

    return Parts(aws_client_hooks=faults, efs_mounter=recording if fake_root else None)


def main() -> None:
    crash.install_from_env()
    cli_main(args=sys.argv[1:], prog_name="elastivol", obj=parts_from_env())


if __name__ == "__main__":
    main()
