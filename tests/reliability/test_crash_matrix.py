"""SIGKILL the server at every block crash point, restart it, finish the CO's sequence, check invariants.

Each point twice: the plugin restarted as a process in the same mount namespace, and as a new
pod (a new mount namespace, the pool mounted at another path). After every step no pool image
may have two loop devices; at the end no loop device, mount or pool object may be left.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from elastivol import crashpoints
from elastivol.client import CsiClient
from elastivol.node import volume as _node_volume  # noqa: F401  (registers the stage points)
from elastivol.providers.local import block as _block  # noqa: F401  (registers the provider points)
from tests.reliability.conftest import PodFactory, ServerFactory
from tests.reliability.invariants import all_clean
from tests.reliability.pods import pod_clean, shared_images
from tests.reliability.sequence import STEPS, Run, run_steps
from tests.support import crash

NOT_BLOCK = ("aws.", "accesspoint.", "filesnapshot.", "group.")  # group.*: test_group_crash_matrix.py
BLOCK_POINTS = sorted(p for p in crashpoints.KNOWN if not p.startswith(NOT_BLOCK))


def test_matrix_covers_every_block_point() -> None:
    # A point added to the code without a matrix entry would silently go untested.
    assert {"create.after_image", "delete.after_image", "snapshot.after_copy", "expand.after_image",
            "attach.before_record", "stage.after_mkfs", "stage.after_mount"} <= set(BLOCK_POINTS)


def _checked(steps: list[tuple[str, Callable[[Run], None]]], pool: Path) -> list[tuple[str, Callable[[Run], None]]]:
    """The steps, each followed by the check that no pool image has two loop devices."""

    def wrap(name: str, step: Callable[[Run], None]) -> Callable[[Run], None]:
        def checked(run: Run) -> None:
            step(run)
            assert shared_images(pool) == [], f"after {name} (crashed: {run.crashes})"
        return checked
    return [(name, wrap(name, step)) for name, step in steps]


@pytest.mark.parametrize("restart", ["same-namespace", "new-namespace"])
@pytest.mark.parametrize("point", BLOCK_POINTS)
def test_crash_at(point: str, restart: str, request: pytest.FixtureRequest, rel_pool: Path) -> None:
    """``new-namespace``: the plugin runs as a pod would and comes back in a new mount namespace
    with the pool at another path, so every device it attached before the crash is known to
    the new process only by its backing file's identity."""
    pod = restart == "new-namespace"
    name = f"crash-{point}-{restart}"
    factory: ServerFactory | PodFactory = request.getfixturevalue("pods" if pod else "server_factory")
    server = factory(name, env={crash.ENV: point}).start()
    prefix = "c-" + point.replace(".", "-").replace("_", "-") + ("-ns" if pod else "")
    with CsiClient(server.endpoint) as client:
        run = Run(server, rel_pool.parent, prefix, client)
        try:
            run_steps(_checked(STEPS, rel_pool), run)
        finally:
            run.client.close()
    assert len(run.crashes) == 1, f"{point} was never hit by {[s for s, _ in STEPS]}"
    assert (pod_clean if pod else all_clean)(rel_pool) == []
    repairs = [json.loads(line) for line in server.log_path.read_text().splitlines() if "start-up recovery" in line]
    if point == "create.after_image":
        assert any("orphan-image" in r.get("message", r.get("msg", "")) for r in repairs), repairs
