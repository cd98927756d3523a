"""Fixtures for the lab's end-to-end tests: a real `elastivol lab` in a fresh directory per test.

``lab_dir`` brings a lab up under /var/tmp, yields its directory, and at teardown always runs
``elastivol lab down --purge`` and checks that nothing of the lab is left on the host: no mount
under the directory (/proc/mounts), no loop device backed by a file under it
(/sys/block/loop*/loop/backing_file), and no process of it (the daemon, the plugins, the pods'
containers, or anything whose command line, working directory or root is under it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ELASTIVOL = [sys.executable, "-m", "elastivol"]


def lab_env(directory: Path) -> dict[str, str]:
    return {**os.environ, "ELASTIVOL_LAB_DIR": str(directory), "PYTHONUNBUFFERED": "1"}


def lab(directory: Path, *args: str, timeout: float = 180, check: bool = False,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``elastivol lab ARGS...`` against the lab in ``directory``, from the repository root."""
    result = subprocess.run([*ELASTIVOL, "lab", *args], env=lab_env(directory), cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout, input=input, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"`elastivol lab {' '.join(args)}` exited {result.returncode}:\n"
                             f"stdout: {result.stdout}\nstderr: {result.stderr}")
    return result


def _start_time(pid: int) -> str | None:
    """The start time of a live process; None when there is none (a zombie is no longer running:
    it only waits for init, its adoptive parent, to reap it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if len(fields) < 20 or fields[0] in ("Z", "X") else fields[19]


def _recorded_processes(directory: Path) -> dict[int, tuple[str, str | None]]:
    """The lab's processes as it records them: pid -> (what, start time)."""
    found: dict[int, tuple[str, str | None]] = {}
    try:
        pid = int((directory / "daemon.pid").read_text().strip())
        found[pid] = ("lab daemon", _start_time(pid))
    except (OSError, ValueError):
        pass
    try:
        status = json.loads((directory / "status.json").read_text())
    except (OSError, ValueError):
        status = {}
    for name, p in (status.get("processes") or {}).items():
        found[int(p["pid"])] = (f"plugin {name}", _start_time(int(p["pid"])))
    for state_file in (directory / "pods").glob("*/state.json"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        for cname, info in (state.get("containers") or {}).items():
            if info.get("pid"):
                found[int(info["pid"])] = (f"container {cname} of pod {state_file.parent.name}", info.get("start"))
    return found


def leftovers(directory: Path, recorded: dict[int, tuple[str, str | None]]) -> list[str]:
    """What of the lab in ``directory`` is still on the host."""
    prefix = str(directory)
    under = (prefix, prefix + "/")

    def is_under(path: str) -> bool:
        return path == prefix or path.startswith(prefix + "/")

    left: list[str] = []
    with open("/proc/mounts") as fh:
        for line in fh:
            target = line.split()[1].replace("\\040", " ")
            if is_under(target):
                left.append(f"mount {target}")
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            path = backing.read_text().strip()
        except OSError:
            continue
        if path.startswith(under):
            left.append(f"loop device /dev/{backing.parent.parent.name} backed by {path}")
    for pid, (what, start) in recorded.items():
        now = _start_time(pid)
        if now is not None and (start is None or now == start):
            left.append(f"{what} (pid {pid}) still runs")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        if _start_time(int(proc.name)) is None:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        paths = []
        for link in ("cwd", "root"):
            try:
                paths.append(os.readlink(proc / link))
            except OSError:
                pass
        if prefix in cmdline or any(is_under(p.removesuffix(" (deleted)")) for p in paths):
            if int(proc.name) not in recorded:
                left.append(f"process {proc.name}: {cmdline.strip()[:200]}")
    return left


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab_zones(zones): bring the lab_dir lab up with `--zones zones`")


@pytest.fixture
def lab_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A lab up in a fresh directory under /var/tmp; always `lab down --purge` at teardown, which must
    leave no mount, loop device or process behind. A ``lab_zones`` mark names its zones."""
    directory = Path(tempfile.mkdtemp(prefix="elastivol-lab-", dir="/var/tmp"))
    zones = request.node.get_closest_marker("lab_zones")
    try:
        lab(directory, "up", *(("--zones", zones.args[0]) if zones else ()), timeout=120, check=True)
        yield directory
    finally:
        recorded = _recorded_processes(directory)
        down = lab(directory, "down", "--purge", timeout=240)
        left = leftovers(directory, recorded)
        still_there = directory.exists()
        if left:
            # Release what we can so that the next test starts clean, then fail this one.
            lab(directory, "down", "--purge", timeout=240)
        if not any(item.startswith("mount ") for item in leftovers(directory, recorded)):
            shutil.rmtree(directory, ignore_errors=True)
        assert down.returncode == 0, f"`lab down --purge` exited {down.returncode}:\n{down.stdout}{down.stderr}"
        assert not left, "the lab left these behind after `lab down --purge`:\n  " + "\n  ".join(left)
        assert not still_there, f"{directory} is still there after `lab down --purge`"
