"""Calling like a CO: a deadline that expires mid-call, then the same request again at once.

external-provisioner, -attacher, -resizer, -snapshotter and the kubelet all give every RPC a
deadline and, when it expires, send the identical request again. The first attempt's work
goes on in the plugin. The retry must then get ABORTED (still running) or the finished
result, never a second volume, a second mkfs, or INTERNAL.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

C = grpc.StatusCode
# Codes the first attempt may end with: its deadline (or the work's own result).
FIRST_OK = {C.OK, C.DEADLINE_EXCEEDED, C.ABORTED}
RETRY_PATIENCE_S = 60.0


@dataclass
class Tally:
    """What the attempts ended with, per RPC: first attempts and retries separately."""

    first: dict[str, Counter[str]] = field(default_factory=dict)
    retries: dict[str, Counter[str]] = field(default_factory=dict)
    durations: dict[str, list[float]] = field(default_factory=dict)

    def count(self, table: dict[str, Counter[str]], rpc: str, code: grpc.StatusCode) -> None:
        table.setdefault(rpc, Counter())[code.name] += 1

    def expired(self, rpc: str) -> int:
        return self.first.get(rpc, Counter())["DEADLINE_EXCEEDED"]

    def report(self) -> str:
        lines = []
        for rpc in self.first:
            first = ", ".join(f"{k} {v}" for k, v in sorted(self.first[rpc].items()))
            retry = ", ".join(f"{k} {v}" for k, v in sorted(self.retries.get(rpc, Counter()).items()))
            lines.append(f"{rpc:28s} first: {first:45s} retries: {retry}")
        return "\n".join(lines)


def _code(exc: grpc.RpcError) -> grpc.StatusCode:
    return exc.code()  # type: ignore[no-any-return]


def measure(call: Callable[..., Any], request: Any, undo: Callable[[], None] | None = None, n: int = 3) -> float:
    """The median duration of ``call(request)`` (undoing it between runs when it is not repeatable)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call(request, timeout=60)
        times.append(time.perf_counter() - start)
        if undo is not None:
            undo()
    return statistics.median(times)


def deadline_then_retry(tally: Tally, rpc: str, call: Callable[..., Any], request: Any, deadline: float) -> Any:
    """``call`` with ``deadline`` seconds, then the same request without one until it is not ABORTED."""
    try:
        call(request, timeout=deadline)
        tally.count(tally.first, rpc, C.OK)
    except grpc.RpcError as exc:
        code = _code(exc)
        tally.count(tally.first, rpc, code)
        assert code in FIRST_OK, f"{rpc} first attempt: {code.name}: {exc.details()}"
    # The CO's retry comes at once; ABORTED means "the first attempt still runs": retry again.
    end = time.monotonic() + RETRY_PATIENCE_S
    while True:
        try:
            response = call(request, timeout=60)
            tally.count(tally.retries, rpc, C.OK)
            return response
        except grpc.RpcError as exc:
            code = _code(exc)
            tally.count(tally.retries, rpc, code)
            assert code is C.ABORTED, f"{rpc} retry: {code.name}: {exc.details()}"
            assert time.monotonic() < end, f"{rpc}: still ABORTED after {RETRY_PATIENCE_S}s"
            time.sleep(0.002)


def spread(duration: float, round_no: int, rounds: int) -> float:
    """A deadline from 5 % to 150 % of the call's usual duration, spread evenly over the rounds."""
    fraction = 0.05 + 1.45 * (round_no % rounds) / max(rounds - 1, 1)
    return max(duration * fraction, 0.0005)


Send = Callable[[str, Callable[..., Any], Any], Any]


def deadline_rounds(one_round: Callable[[int, Send], None], rounds: int, warmups: int = 1) -> set[str]:
    """Drive ``one_round(i, send)`` (a lifecycle that makes each RPC through ``send(rpc, method,
    request)``): ``warmups`` plain rounds (i = -1, -2, ...) to learn each RPC's usual duration,
    then ``rounds`` rounds where every call gets a deadline spread over it and is retried as a CO
    does. Prints what happened; returns the RPCs whose deadline expired mid-call at least once."""
    durations: dict[str, float] = {}

    def timed(rpc: str, method: Callable[..., Any], request: Any) -> Any:
        start = time.perf_counter()
        response = method(request, timeout=60)
        durations[rpc] = min(durations.get(rpc, 1e9), time.perf_counter() - start)
        return response

    for warm in range(warmups):
        one_round(-1 - warm, timed)
    tally = Tally()
    for i in range(rounds):
        def co(rpc: str, method: Callable[..., Any], request: Any, i: int = i) -> Any:
            return deadline_then_retry(tally, rpc, method, request, spread(durations[rpc], i, rounds))

        one_round(i, co)
    print("\nusual durations (ms): " + ", ".join(f"{k} {v * 1000:.1f}" for k, v in durations.items()))
    print(tally.report())
    return {rpc for rpc in tally.first if tally.expired(rpc)}
