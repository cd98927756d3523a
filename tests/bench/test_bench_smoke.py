"""CI smoke test for bench/: runs the tiniest profile and checks the output's shape, never timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from elastivol.node import loop, mount

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("lifecycle", "snapshots")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the benchmarks need root (loop devices, mounts)")


def _ours() -> tuple[set[str], set[str]]:
    loops = {d.path for d in loop.list_all() if "elastivol-bench-" in d.backing_file}
    mounts = {m.target for m in mount.mounts() if "elastivol-bench-" in m.target}
    return loops, mounts


@pytest.mark.timeout(100)
def test_smoke_profile_prints_tables_writes_json_and_charts(tmp_path: Path) -> None:
    results = tmp_path / "results"  # never overwrite the committed full-run results
    # Other worktrees run benchmarks on this machine too: only what appears during this run is ours.
    loops_before, mounts_before = _ours()
    dirs_before = set(Path("/var/tmp").glob("elastivol-bench-*"))
    proc = subprocess.run(
        [sys.executable, "-m", "elastivol", "bench", *NAMES, "--smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=90, env={**os.environ, "COLUMNS": "160", "ELASTIVOL_BENCH_RESULTS": str(results)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "1. Lifecycle overhead" in out and "2. Snapshot" in out
    assert "targets:" in out and ("met" in out or "MISSED" in out)
    for name in NAMES:
        path = results / f"{name}.json"
        data = json.loads(path.read_text())
        assert data["name"] == name and data["profile"] == "smoke"
        assert {"columns", "rows", "figures", "targets", "notes", "charts", "host"} <= data.keys()
        assert data["rows"] and all(len(row) == len(data["columns"]) for row in data["rows"])
        for t in data["targets"]:
            assert {"name", "value", "op", "threshold", "met"} <= t.keys() and isinstance(t["met"], bool)
        for chart in data["charts"]:
            png = Path(chart) if Path(chart).is_absolute() else ROOT / chart
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (results / "lifecycle.png").exists() and (results / "snapshots.png").exists()
    loops, mounts = _ours()
    loops, mounts = loops - loops_before, mounts - mounts_before
    assert not loops and not mounts, f"left behind: {loops} {mounts}"
    assert not set(Path("/var/tmp").glob("elastivol-bench-*")) - dirs_before
