"""What tests and benchmarks put into elastivol that the installed package does not ship: the AWS
fault layer, a stand-in for EFS mounts, and the `serve` entry point that installs them."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `python -m` this in place of `elastivol` (ServerProcess.module) to get a server with the test parts.
SERVE_MODULE = "tests.support.serve"


def serve_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` with the repository root on PYTHONPATH, so that a child server finds this package."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**(env or {}), "PYTHONPATH": os.pathsep.join(paths)}
