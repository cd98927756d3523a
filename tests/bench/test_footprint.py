"""The footprint benchmark in its smoke profile: the table has a row per role and plausible figures
(the targets are measured figures for the notes, not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.footprint import AWS_ROW, HOSTPATH_ROW, NODE_ROW, hostpath_binary
from elastivol.node import loop, mount

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the benchmark needs root (loop devices, mounts)")


@pytest.mark.timeout(150)
def test_footprint_smoke_has_every_role_with_plausible_figures(tmp_path: Path) -> None:
    dirs_before = set(Path("/var/tmp").glob("elastivol-bench-footprint-*"))
    proc = subprocess.run(
        [sys.executable, "-m", "elastivol", "bench", "footprint", "--smoke"], cwd=ROOT, capture_output=True,
        text=True, timeout=140, env={**os.environ, "COLUMNS": "200", "ELASTIVOL_BENCH_RESULTS": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "footprint.json").read_text())
    assert data["figures"]["lifecycles"] == 3
    rows = {row[0]: dict(zip(data["columns"], row, strict=True)) for row in data["rows"]}
    expected = {NODE_ROW, "block controller (local)", "file node (local)", "file controller (local)"}
    if hostpath_binary() is not None:
        expected.add(HOSTPATH_ROW)
    if "moto" not in " ".join(data["notes"]):  # measured unless moto is missing, which the notes say
        expected.add(AWS_ROW)
    assert set(rows) == expected
    for role, row in rows.items():
        assert 1 < row["ready, ms"] < 20_000, role
        # A Python gRPC server holds more than an empty interpreter (~9 MiB) and far less than 1 GiB.
        assert 5 < row["RSS ready, MiB"] <= row["RSS after 3, MiB"] * 1.2 < 1024, role
        assert 0 < row["of which private, MiB"] < row["RSS after 3, MiB"], role
        if HOSTPATH_ROW in rows:
            assert row["RSS / hostpath"] == pytest.approx(row["RSS after 3, MiB"] / rows[HOSTPATH_ROW]["RSS after 3, MiB"],
                                                          rel=1e-6)
    assert {t["name"].split(":")[0] for t in data["targets"]} >= {NODE_ROW}
    assert "Footprint" in proc.stdout and NODE_ROW in proc.stdout
    assert not [d for d in loop.list_all() if "elastivol-bench-footprint-" in d.backing_file]
    assert not [m for m in mount.mounts() if "elastivol-bench-footprint-" in m.target]
    assert not set(Path("/var/tmp").glob("elastivol-bench-footprint-*")) - dirs_before
