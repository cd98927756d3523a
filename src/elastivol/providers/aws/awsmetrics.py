"""AWS API metrics, on the server's Prometheus registry, fed by botocore event hooks.

``calls`` counts logical API calls (what the code asked for), ``requests`` every HTTP attempt
(retries included), ``throttles`` the attempts AWS throttled, ``errors`` the calls that failed in
the end, by error code. Hooks are registered on the botocore session, so every client made from it
(including the STS client that IRSA uses behind the scenes) is counted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

from elastivol.providers.aws.awserrors import THROTTLING

_lock = threading.Lock()
_by_registry: dict[int, AwsMetrics] = {}


class AwsMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        from prometheus_client import Counter, Histogram  # only where metrics are kept (see Metrics.kept)

        labels = ["service", "operation"]
        self.calls = Counter("elastivol_aws_api_calls", "AWS API calls made, by operation",
                             labels, registry=registry)
        self.requests = Counter("elastivol_aws_api_requests", "HTTP requests sent to AWS (retries included)",
                                labels, registry=registry)
        self.throttles = Counter("elastivol_aws_api_throttles", "AWS API attempts that were throttled",
                                 labels, registry=registry)
        self.errors = Counter("elastivol_aws_api_errors", "AWS API calls that failed after retries, by code",
                              [*labels, "code"], registry=registry)
        self.latency = Histogram("elastivol_aws_api_seconds", "AWS API call latency, retries included",
                                 labels, registry=registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        # A plain in-process tally as well, for tests and benchmarks that run providers directly.
        self.tally: Tally[str] = Tally()
        self._tally_lock = threading.Lock()

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None) -> AwsMetrics:
        """One instance per registry: a registry refuses a second collector with the same name."""
        with _lock:
            key = id(registry)
            found = _by_registry.get(key)
            if found is None:
                found = _by_registry[key] = cls(registry)
            return found

    def _count(self, key: str) -> None:
        with self._tally_lock:
            self.tally[key] += 1

    def install(self, events: Any) -> None:
        """Register the hooks on a botocore event emitter (a session's or a client's)."""
        events.register_first("before-call", self._before_call, unique_id="elastivol-metrics-call")
        events.register_first("before-send", self._before_send, unique_id="elastivol-metrics-send")
        events.register("needs-retry", self._needs_retry, unique_id="elastivol-metrics-retry")
        events.register("after-call", self._after_call, unique_id="elastivol-metrics-after")
        events.register("after-call-error", self._after_call_error, unique_id="elastivol-metrics-after-error")

    @staticmethod
    def _names(model: Any) -> tuple[str, str]:
        return model.service_model.service_name, model.name

    def _before_call(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        service, op = self._names(model)
        context["elastivol_started"] = time.perf_counter()
        self.calls.labels(service, op).inc()
        self._count(f"call:{op}")

    def _before_send(self, request: Any, **_: Any) -> None:
        context = getattr(request, "context", None) or {}
        model = context.get("elastivol_model")
        service, op = self._names(model) if model is not None else ("?", "?")
        self.requests.labels(service, op).inc()
        self._count(f"request:{op}")

    def _needs_retry(self, response: Any = None, operation: Any = None, **_: Any) -> None:
        if response is None or operation is None:
            return
        parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else {}
        code = parsed.get("Error", {}).get("Code", "") if isinstance(parsed, dict) else ""
        if code in THROTTLING:
            service, op = self._names(operation)
            self.throttles.labels(service, op).inc()
            self._count(f"throttle:{op}")

    def _after_call(self, http_response: Any, parsed: dict[str, Any], model: Any,
                    context: dict[str, Any], **_: Any) -> None:
        service, op = self._names(model)
        self._observe(service, op, context)
        if http_response is not None and http_response.status_code >= 300:
            code = str(parsed.get("Error", {}).get("Code", "") or http_response.status_code)
            self.errors.labels(service, op, code).inc()
            self._count(f"error:{op}:{code}")

    def _after_call_error(self, exception: BaseException, context: dict[str, Any], **_: Any) -> None:
        model = context.get("elastivol_model")
        service, op = self._names(model) if model is not None else ("?", "?")
        self._observe(service, op, context)
        self.errors.labels(service, op, type(exception).__name__).inc()
        self._count(f"error:{op}:{type(exception).__name__}")

    def _observe(self, service: str, op: str, context: dict[str, Any]) -> None:
        started = context.get("elastivol_started")
        if isinstance(started, float):
            self.latency.labels(service, op).observe(time.perf_counter() - started)


def remember_model(model: Any, context: dict[str, Any], **_: Any) -> None:
    """Keep the operation model in the request context, where per-attempt hooks can read it."""
    context["elastivol_model"] = model
