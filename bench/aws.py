"""6. AWS API economy: calls per volume lifecycle against moto (fault layer latency on), batching on and off."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3

from bench.core import Result, Target
from tests.aws.support import REGION, ZONE_A, AwsServer, lifecycle_steps, start_moto, start_server, stop

PROFILE = {"smoke": 10, "quick": 40, "full": 100}  # concurrent volumes
THROTTLED = {"smoke": 5, "quick": 10, "full": 100}  # volumes in the throttling phase (its backoff is slow)
FAULTS: dict[str, Any] = {"latency_ms": 20, "consistency_lag": 1, "creating_polls": 2, "attaching_polls": 2,
                          "detaching_polls": 2, "attach_conflicts": False}
FAST = {"ELASTIVOL_AWS_POLL_INITIAL": "0.02", "ELASTIVOL_AWS_POLL_MAX": "0.1", "ELASTIVOL_AWS_ATTACH_TIMEOUT": "60",
        "ELASTIVOL_AWS_DETACH_TIMEOUT": "60", "ELASTIVOL_AWS_CREATE_TIMEOUT": "60", "ELASTIVOL_AWS_PROBE_CACHE": "0"}
INTERVAL = "0.2"  # the production batching interval


def _describes(c: Counter[str]) -> int:
    return sum(n for op, n in c.items() if op.startswith("Describe"))


def _lifecycle(srv: AwsServer, n: int, instances: list[str], phases: tuple[str, ...]) -> tuple[dict[str, Counter[str]], float]:
    client = srv.client()
    names = [f"pvc-{uuid.uuid4().hex[:10]}" for _ in range(n)]
    ids: dict[str, str] = {}
    where = {name: instances[i % len(instances)] for i, name in enumerate(names)}
    calls: dict[str, Counter[str]] = {}

    fns = lifecycle_steps(client, ids, where)
    t0 = time.perf_counter()
    for label in phases:
        before = srv.calls()
        with ThreadPoolExecutor(n) as ex:
            list(ex.map(fns[label], names))
        calls[label] = srv.calls() - before
    took = time.perf_counter() - t0
    client.close()
    return calls, took


def run(profile: str) -> Result:
    n = PROFILE[profile]
    nt = THROTTLED[profile]
    r = Result("aws", f"6. AWS API economy: EC2 calls, {n} concurrent volumes, moto + fault layer", profile)
    r.columns = ["measure", "batching on", "batching off", "off / on"]
    work = Path(tempfile.mkdtemp(prefix="elastivol-bench-aws-", dir="/var/tmp"))
    moto = start_moto(work)
    saved = dict(os.environ)
    env = {"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(work / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(work / "none"), **FAST}
    try:
        os.environ.update(env)
        ec2 = boto3.client("ec2", region_name=REGION)
        instances = [str(ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="m5.large",
                                           Placement={"AvailabilityZone": ZONE_A})["Instances"][0]["InstanceId"])
                     for _ in range(4)]
        results: dict[str, dict[str, Counter[str]]] = {}
        took: dict[str, float] = {}
        for mode in ("on", "off"):
            srv = start_server(work, cluster=f"bench-{mode}-{uuid.uuid4().hex[:6]}", faults=FAULTS, name=f"b-{mode}",
                               env={**env, "ELASTIVOL_AWS_BATCHING": "true" if mode == "on" else "false",
                                    "ELASTIVOL_AWS_BATCH_INTERVAL": INTERVAL})
            try:
                results[mode], took[mode] = _lifecycle(srv, n, instances, ("create", "attach", "detach", "delete"))
            finally:
                srv.stop()
        on, off = results["on"], results["off"]
        ton, toff = sum(on.values(), Counter()), sum(off.values(), Counter())

        def row(label: str, a: float, b: float) -> None:
            r.rows.append([label, a, b, b / a if a else float("nan")])

        row("EC2 calls per volume lifecycle (create, attach, detach, delete)", sum(ton.values()) / n,
            sum(toff.values()) / n)
        for phase in on:
            row(f"  Describe* per volume in {phase}", _describes(on[phase]) / n, _describes(off[phase]) / n)
        for op in sorted(set(ton) | set(toff), key=lambda o: -toff[o]):
            row(f"  {op} (total)", ton[op], toff[op])
        row("wall time of the 4 phases, s", took["on"], took["off"])
        describe_create = _describes(on["create"]) / n
        r.targets.append(Target(f"Describe calls per volume at {n} concurrent creates (batching)", describe_create,
                                "<=", 0.1))
        # Throttling: the same creates and deletes with a share of attempts throttled.
        throttled = {**FAULTS, "throttle_rate": 0.2, "seed": 7}
        times: dict[str, float] = {}
        retry: dict[str, dict[str, int]] = {}
        for label, faults in (("no throttling", FAULTS), ("20% throttled", throttled)):
            srv = start_server(work, cluster=f"bench-thr-{uuid.uuid4().hex[:6]}", faults=faults, name=f"t-{label[:2]}",
                               env={**env, "ELASTIVOL_AWS_BATCHING": "true", "ELASTIVOL_AWS_BATCH_INTERVAL": INTERVAL})
            try:
                _c, times[label] = _lifecycle(srv, nt, instances, ("create", "delete"))
                calls = sum(srv.calls().values())
                requests = sum(srv.calls("requests").values())
                retry[label] = {"calls": calls, "requests": requests, "retries": requests - calls,
                                "throttles": sum(srv.calls("throttles").values())}
            finally:
                srv.stop()
        a, b = times["no throttling"], times["20% throttled"]
        r.rows.append([f"{nt} creates + deletes: time, s (no throttling | 20% throttled)", a, b, b / a])
        r.rows.append(["  throttled attempts | retries (requests - calls), 20% throttled",
                       retry["20% throttled"]["throttles"], retry["20% throttled"]["retries"], float("nan")])
        r.figures = {"volumes": n, "faults": FAULTS, "calls": {m: {p: dict(c) for p, c in res.items()}
                                                                for m, res in results.items()},
                     "seconds": took, "throttling": {"seconds": times, "counts": retry}}
    finally:
        os.environ.clear()
        os.environ.update(saved)
        stop(moto.proc)
        shutil.rmtree(work, ignore_errors=True)
    r.notes.append(f"moto server with the fault layer: {FAULTS}; batching interval {INTERVAL} s (production default)")
    r.notes.append("calls counted by the server's own elastivol_aws_api_calls_total / _requests_total / _throttles_total")
    r.notes.append("EFS (file driver on aws) calls are not measured yet")
    if profile != "full":
        r.notes.append(f"{profile} profile: {n} concurrent volumes instead of 100 ({nt} in the throttling phase)")
    return r
