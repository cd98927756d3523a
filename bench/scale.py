"""4. Control-plane scale: Create/Delete throughput by concurrency, ListVolumes and start-up with many volumes."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.core import Result, Target, median, p90
from bench.env import ZONE, served_pool
from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.process import ServerProcess

PROFILE = {  # ops per concurrency level, volumes in the pool, probe calls
    "smoke": (8, 50, 200),
    "quick": (32, 300, 1000),
    "full": (96, 1000, 4000),
}
SIZE = 1 << 30


def _parallel(n: int, conc: int, fn: Callable[[int], Any]) -> tuple[float, list[float]]:
    lat: list[float] = []

    def one(i: int) -> None:
        t0 = time.perf_counter()
        fn(i)
        lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(conc) as ex:
        list(ex.map(one, range(n)))
    return time.perf_counter() - t0, lat


def _restart_seconds(server: ServerProcess) -> float:
    server.stop()
    t0 = time.perf_counter()
    server.start(timeout=120)  # returns when Probe answers ready
    return time.perf_counter() - t0


def run(profile: str) -> Result:
    ops, fill, probes = PROFILE[profile]
    r = Result("scale", "4. Control-plane scale (controller calls only, no node operations)", profile)
    r.columns = ["measure", "value", "unit"]
    figures: dict[str, Any] = {}
    with served_pool("scale", 8 << 30, extra=["--overcommit-ratio", "10000"]) as env:
        client: CsiClient = env.client
        env.client.close()
        empty_start = _restart_seconds(env.server)
        env.client = client = CsiClient(env.server.endpoint, timeout=300)
        for conc in (1, 8, 32):
            def create(i: int, c: int = conc) -> None:
                client.create_volume(f"tp-{c}-{i}", SIZE, parameters={"type": "gp3"}, zone=ZONE)
            took, lat = _parallel(ops, conc, create)
            ids = [v.volume.volume_id for v in client.controller.ListVolumes(csi_pb2.ListVolumesRequest()).entries]

            def delete(i: int, ids: list[str] = ids) -> None:
                client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=ids[i]), timeout=60)
            dtook, dlat = _parallel(len(ids), conc, delete)
            r.rows.append([f"CreateVolume, concurrency {conc}", ops / took, "ops/s"])
            r.rows.append([f"  latency median / p90, concurrency {conc}", f"{median(lat) * 1e3:.1f} / {p90(lat) * 1e3:.1f}", "ms"])
            r.rows.append([f"DeleteVolume, concurrency {conc}", len(ids) / dtook, "ops/s"])
            figures[f"create_c{conc}"] = {"ops_per_s": ops / took, "latency_s": lat}
            figures[f"delete_c{conc}"] = {"ops_per_s": len(ids) / dtook, "latency_s": dlat}
        # Fill the pool, then list and restart.
        _parallel(fill, 32, lambda i: client.create_volume(f"fill-{i}", SIZE, parameters={"type": "gp3"}, zone=ZONE))
        page_t: list[float] = []
        for _ in range(20):
            token = ""
            while True:
                t0 = time.perf_counter()
                resp = client.controller.ListVolumes(csi_pb2.ListVolumesRequest(max_entries=100, starting_token=token))
                page_t.append(time.perf_counter() - t0)
                token = resp.next_token
                if not token:
                    break
            if len(page_t) >= 50:
                break
        full_t: list[float] = []
        for _ in range(5):
            t0 = time.perf_counter()
            n = len(client.controller.ListVolumes(csi_pb2.ListVolumesRequest()).entries)
            full_t.append(time.perf_counter() - t0)
        client.close()
        start_full = [_restart_seconds(env.server) for _ in range(3)]
        env.client = client = CsiClient(env.server.endpoint, timeout=300)
        ptook, plat = _parallel(probes, 32, lambda i: client.identity.Probe(csi_pb2.ProbeRequest(), timeout=30))
        r.rows.append([f"ListVolumes page of 100, {n} volumes (median / p90)",
                       f"{median(page_t) * 1e3:.1f} / {p90(page_t) * 1e3:.1f}", "ms"])
        r.rows.append([f"ListVolumes all {n} in one reply (median)", median(full_t) * 1e3, "ms"])
        r.rows.append(["server start → ready, empty pool", empty_start, "s"])
        r.rows.append([f"server start → ready, {n} volumes (median of 3)", median(start_full), "s"])
        r.rows.append(["Probe at concurrency 32: throughput", probes / ptook, "calls/s"])
        r.rows.append(["Probe at concurrency 32: latency median / p90",
                       f"{median(plat) * 1e3:.2f} / {p90(plat) * 1e3:.2f}", "ms"])
        r.targets.append(Target(f"start-up recovery with {n} volumes", median(start_full), "<=", 2.0, " s"))
        r.targets.append(Target(f"ListVolumes page (100 of {n}), p90", p90(page_t) * 1e3, "<=", 50.0, " ms"))
        figures.update({"volumes": n, "list_page_s": page_t, "list_all_s": full_t, "start_empty_s": empty_start,
                        "start_full_s": start_full, "probe_latency_s": plat, "probe_calls_per_s": probes / ptook})
    r.figures = figures
    r.notes.append(f"{ops} creates then deletes per concurrency level (1 GiB gp3, controller only); "
                   f"start-up = stop, spawn `elastivol serve`, until Probe says ready (includes Python start-up)")
    if profile != "full":
        r.notes.append(f"{profile} profile: {fill} volumes instead of 1,000")
    return r
