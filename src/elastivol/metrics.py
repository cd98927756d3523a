"""Prometheus metrics: per-RPC counts and latency by status code, and pool capacity."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "elastivol_csi_operations", "CSI calls handled, by method and gRPC status code",
            ["driver", "method", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "elastivol_csi_operation_seconds", "CSI call latency, by method and gRPC status code",
            ["driver", "method", "code"], registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.pool_bytes = Gauge(
            "elastivol_pool_bytes", "Pool capacity figures in bytes (total, free, provisioned, allocated)",
            ["driver", "kind"], registry=self.registry,
        )
        self.pool_objects = Gauge(
            "elastivol_pool_objects", "Objects in the pool (volumes, snapshots)",
            ["driver", "kind"], registry=self.registry,
        )

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.calls.labels(self.driver, method, code).inc()
        self.latency.labels(self.driver, method, code).observe(seconds)

    def serve(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
