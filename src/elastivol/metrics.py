"""Prometheus metrics: per-RPC counts and latency by status code, and pool capacity."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The driver's metrics. prometheus_client (whose exposition pulls in http.server, email and wsgiref,
    about 5 MiB) is imported on first use, not at start. A server started without a metrics address
    (``kept=False``) has no /metrics for anyone to read, so it does not count calls: a lean node plugin
    never loads the library at all."""

    def __init__(self, driver: str, *, kept: bool = True) -> None:
        self.driver = driver
        self.kept = kept

    @cached_property
    def registry(self) -> CollectorRegistry:
        from prometheus_client import CollectorRegistry

        return CollectorRegistry()

    @cached_property
    def calls(self) -> Counter:
        from prometheus_client import Counter

        return Counter(
            "elastivol_csi_operations", "CSI calls handled, by method and gRPC status code",
            ["driver", "method", "code"], registry=self.registry,
        )

    @cached_property
    def latency(self) -> Histogram:
        from prometheus_client import Histogram

        return Histogram(
            "elastivol_csi_operation_seconds", "CSI call latency, by method and gRPC status code",
            ["driver", "method", "code"], registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )

    @cached_property
    def pool_bytes(self) -> Gauge:
        from prometheus_client import Gauge

        return Gauge(
            "elastivol_pool_bytes", "Pool capacity figures in bytes (total, free, provisioned, allocated)",
            ["driver", "kind"], registry=self.registry,
        )

    @cached_property
    def pool_objects(self) -> Gauge:
        from prometheus_client import Gauge

        return Gauge(
            "elastivol_pool_objects", "Objects in the pool (volumes, snapshots)",
            ["driver", "kind"], registry=self.registry,
        )

    def observe(self, method: str, code: str, seconds: float) -> None:
        if not self.kept:
            return
        self.calls.labels(self.driver, method, code).inc()
        self.latency.labels(self.driver, method, code).observe(seconds)

    def serve(self, address: str) -> None:
        from prometheus_client import start_http_server

        # Every family exists (with no samples yet) before the first scrape, as when they were built eagerly.
        _ = (self.calls, self.latency, self.pool_bytes, self.pool_objects)
        host, _sep, port = address.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
