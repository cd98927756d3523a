"""SIGKILL the server at every block crash point, restart it, finish the CO's sequence, check invariants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elastivol import crashpoints
from elastivol.client import CsiClient
from elastivol.node import volume as _node_volume  # noqa: F401  (registers the stage points)
from elastivol.providers.local import block as _block  # noqa: F401  (registers the provider points)
from tests.reliability.conftest import ServerFactory
from tests.reliability.invariants import all_clean
from tests.reliability.sequence import STEPS, Run, run_all

NOT_BLOCK = ("aws.", "accesspoint.", "filesnapshot.")
BLOCK_POINTS = sorted(p for p in crashpoints.KNOWN if not p.startswith(NOT_BLOCK))


def test_matrix_covers_every_block_point() -> None:
    # A point added to the code without a matrix entry would silently go untested.
    assert {"create.after_image", "delete.after_image", "snapshot.after_copy", "expand.after_image",
            "attach.before_record", "stage.after_mkfs", "stage.after_mount"} <= set(BLOCK_POINTS)


@pytest.mark.parametrize("point", BLOCK_POINTS)
def test_crash_at(point: str, server_factory: ServerFactory, rel_pool: Path) -> None:
    server = server_factory(f"crash-{point}", env={crashpoints.ENV: point}).start()
    prefix = "c-" + point.replace(".", "-").replace("_", "-")
    with CsiClient(server.endpoint) as client:
        run = Run(server, rel_pool.parent, prefix, client)
        try:
            run_all(run)
        finally:
            run.client.close()
    assert len(run.crashes) == 1, f"{point} was never hit by {[s for s, _ in STEPS]}"
    assert all_clean(rel_pool) == []
    repairs = [json.loads(line) for line in server.log_path.read_text().splitlines() if "start-up recovery" in line]
    if point == "create.after_image":
        assert any("orphan-image" in r.get("message", r.get("msg", "")) for r in repairs), repairs
