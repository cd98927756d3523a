"""Batching: many concurrent waiters share each Describe call. Measured through the gRPC socket.

100 volumes go through create -> attach -> detach -> delete at once, first with batching on, then
off, against moto with the fault layer's latency, lag and transitions. The API calls per operation
kind are printed (from the server's own metrics) and the Describe calls per volume compared.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.aws.support import AwsServer, lifecycle_steps, start_server

VOLUMES = 100
INSTANCES = 4
INTERVAL = 0.2  # the production default: at most one Describe of each kind per 200 ms
FAULTS = {"latency_ms": 20, "consistency_lag": 1, "creating_polls": 2, "attaching_polls": 2, "detaching_polls": 2,
          "attach_conflicts": False}


def lifecycle(srv: AwsServer, instances: list[str]) -> dict[str, Counter[str]]:
    """Run the phases; return the API calls each phase made, by operation."""
    phases: dict[str, Counter[str]] = {}
    client = srv.client()
    names = [f"pvc-{uuid.uuid4().hex[:10]}" for _ in range(VOLUMES)]
    where = {name: instances[i % len(instances)] for i, name in enumerate(names)}
    ids: dict[str, str] = {}

    def phase(label: str, fn: Callable[[str], Any]) -> None:
        before = srv.calls()
        with ThreadPoolExecutor(VOLUMES) as pool:
            list(pool.map(fn, names))
        phases[label] = srv.calls() - before

    for label, fn in lifecycle_steps(client, ids, where).items():
        phase(label, fn)
    client.close()
    return phases


def table(on: dict[str, Counter[str]], off: dict[str, Counter[str]]) -> str:
    total_on, total_off = sum(on.values(), Counter()), sum(off.values(), Counter())
    ops = sorted(set(total_on) | set(total_off), key=lambda op: -total_off[op])
    lines = [f"API calls for {VOLUMES} volumes (create, attach, detach, delete), by operation:",
             f"  {'operation':<22}{'batching on':>12}{'batching off':>14}"]
    lines += [f"  {op:<22}{total_on[op]:>12}{total_off[op]:>14}" for op in ops]
    lines.append(f"  {'total':<22}{sum(total_on.values()):>12}{sum(total_off.values()):>14}")
    lines.append(f"  {'per volume lifecycle':<22}{sum(total_on.values()) / VOLUMES:>12.2f}"
                 f"{sum(total_off.values()) / VOLUMES:>14.2f}")
    for label in on:
        lines.append(f"  Describe* per volume in {label:<7}{_describes(on[label]) / VOLUMES:>8.2f}"
                     f"{_describes(off[label]) / VOLUMES:>14.2f}")
    return "\n".join(lines)


def _describes(calls: Counter[str]) -> int:
    return sum(n for op, n in calls.items() if op.startswith("Describe"))


@pytest.mark.slow
def test_describe_calls_per_volume_fall_far_below_one(
    aws_work: Path, aws_env: dict[str, str], make_instance: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    work = aws_work / f"batching-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    instances = [make_instance() for _ in range(INSTANCES)]
    results: dict[str, dict[str, Counter[str]]] = {}
    for mode in ("on", "off"):
        srv = start_server(work, cluster=f"batch-{mode}-{uuid.uuid4().hex[:6]}", faults=FAULTS,
                           env={"ELASTIVOL_AWS_BATCHING": "true" if mode == "on" else "false",
                                "ELASTIVOL_AWS_BATCH_INTERVAL": str(INTERVAL)}, name=f"batch-{mode}")
        try:
            results[mode] = lifecycle(srv, instances)
        finally:
            srv.stop()
    on, off = results["on"], results["off"]
    with capsys.disabled():  # the numbers are the point of this test: always show them
        print("\n" + table(on, off))
    assert on["create"]["CreateVolume"] == VOLUMES == off["create"]["CreateVolume"]
    assert on["create"]["DescribeVolumes"] / VOLUMES <= 0.5, "waiters share DescribeVolumes"
    assert off["create"]["DescribeVolumes"] / VOLUMES >= 3, "without batching each waiter polls on its own"
    assert _describes(sum(on.values(), Counter())) * 5 < _describes(sum(off.values(), Counter()))
