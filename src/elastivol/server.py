"""The gRPC server: a unix socket, one interceptor layer, graceful shutdown.

The interceptor is the single place where exceptions become gRPC status codes; it also
writes one structured log line per call (request id, method, duration, code) with secrets
redacted, and feeds the Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from elastivol.csi import csi_pb2
from elastivol.csi.secrets import redact
from elastivol.errors import FailedPrecondition, InvalidArgument, Unimplemented
from elastivol.grpc_errors import status_for
from elastivol.locks import InFlight
from elastivol.logs import remember_secrets
from elastivol.metrics import Metrics

log = logging.getLogger("elastivol.server")

# What the log line names as "the object" of a call, when the request has it.
_OBJECT_FIELDS = ("volume_id", "snapshot_id", "source_volume_id", "name", "node_id")


@dataclass
class Services:
    """What a driver contributes to one server process."""

    identity: Any
    controller: Any | None = None
    node: Any | None = None
    group_controller: Any | None = None
    # The process's in-flight registry: shutdown waits for the work it owns.
    inflight: InFlight | None = None
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = details.method.rsplit("/", 1)[-1]
        metrics = self.metrics

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            request_id = uuid.uuid4().hex[:12]
            start = time.perf_counter()
            secrets = getattr(request, "secrets", None)
            if secrets:
                remember_secrets(secrets.values())
            def record(code: grpc.StatusCode, message: str = "") -> None:
                # Called before the status leaves (abort sends it at once), so a client that has its
                # answer also finds the call in the metrics and the log.
                elapsed = time.perf_counter() - start
                metrics.observe(method, code.name, elapsed)
                fields: dict[str, Any] = {
                    "request_id": request_id,
                    "method": method,
                    "code": code.name,
                    "duration_ms": round(elapsed * 1000, 2),
                }
                for f in _OBJECT_FIELDS:
                    value = getattr(request, f, None)
                    if isinstance(value, str) and value:
                        fields[f] = value[:128]
                        break
                if message:
                    fields["error"] = message
                if log.isEnabledFor(logging.DEBUG):
                    fields["request"] = redact(request)
                level = logging.INFO if code in (grpc.StatusCode.OK,) else logging.WARNING
                if method in ("Probe", "NodeGetCapabilities", "GetPluginInfo") and code is grpc.StatusCode.OK:
                    level = logging.DEBUG
                log.log(level, "%s %s", method, code.name, extra={"fields": fields})

            try:
                response = await inner(request, context)
            except asyncio.CancelledError:
                record(grpc.StatusCode.CANCELLED, "cancelled by the client")
                raise
            except Exception as exc:  # the one place that maps failures to codes
                if _is_abort(exc):
                    record(context.code() or grpc.StatusCode.UNKNOWN)
                    raise
                code, message = status_for(exc)
                if code is grpc.StatusCode.INTERNAL:
                    log.error("internal error in %s", method, exc_info=exc, extra={"fields": {"request_id": request_id}})
                record(code, message)
                await context.abort(code, message)
            record(grpc.StatusCode.OK)
            return response

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _is_abort(exc: BaseException) -> bool:
    # context.abort raises grpc.aio.AbortError; it has already set the status.
    return type(exc).__name__ == "AbortError"


def socket_path(endpoint: str) -> Path:
    if not endpoint.startswith("unix://"):
        raise InvalidArgument(f"--endpoint {endpoint!r} must be a unix socket: unix:///path/to/csi.sock")
    path = endpoint[len("unix://"):]
    if not path.startswith("/"):
        raise InvalidArgument(f"--endpoint {endpoint!r} must use an absolute path (unix:///...)")
    return Path(path)


def prepare_socket(path: Path, *, force_unsafe_dir: bool = False) -> None:
    """Make ``path`` ready to bind: refuse unsafe or busy places, remove a stale socket."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.parent.stat().st_mode
    if mode & stat.S_IWOTH and not force_unsafe_dir:
        raise FailedPrecondition(
            f"socket directory {path.parent} is world-writable, so anyone could replace the socket: "
            "use a private directory, or pass --force-unsafe-socket-dir"
        )
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise FailedPrecondition(f"{path} exists and is not a socket; remove it or choose another --endpoint")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        log.info("removing stale socket %s", path)
        path.unlink()
        return
    finally:
        probe.close()
    raise FailedPrecondition(f"another server is already listening on {path}; stop it or choose another --endpoint")


def register(server: grpc.aio.Server, service: str, servicer: object) -> None:
    """Serve ``servicer``'s methods as the CSI service ``service`` ("Node", "Controller", ...).

    The method table comes from csi.proto's descriptors rather than the generated csi_pb2_grpc
    module: a server needs none of its client stubs, which cost a node plugin ~1.9 MiB resident
    and ~20 ms of start-up. A method the servicer does not define answers UNIMPLEMENTED.
    """
    described = csi_pb2.DESCRIPTOR.services_by_name[service]
    handlers = {}
    for method in described.methods:
        behaviour = getattr(servicer, method.name, None) or _unimplemented(described.full_name, method.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=getattr(csi_pb2, method.input_type.name).FromString,
            response_serializer=getattr(csi_pb2, method.output_type.name).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(described.full_name, handlers),))
    server.add_registered_method_handlers(described.full_name, handlers)


def _unimplemented(service: str, method: str) -> Callable[[Any, Any], Coroutine[Any, Any, Any]]:
    async def refuse(request: Any, context: Any) -> Any:
        raise Unimplemented(f"{service}/{method} is not offered by this plugin: its capabilities "
                            "(GetPluginCapabilities, ControllerGetCapabilities) list what it serves")

    return refuse


async def serve(
    services: Services,
    endpoint: str,
    *,
    metrics: Metrics,
    socket_mode: int = 0o660,
    force_unsafe_socket_dir: bool = False,
    grace_seconds: float = 30.0,
    ready: Callable[[], None] | None = None,
) -> None:
    path = socket_path(endpoint)
    prepare_socket(path, force_unsafe_dir=force_unsafe_socket_dir)
    loop = asyncio.get_running_loop()
    # Blocking host work runs in threads; make room for a CO's parallel workers.
    executor = ThreadPoolExecutor(max_workers=48, thread_name_prefix=_WORKER_PREFIX)
    loop.set_default_executor(executor)
    server = grpc.aio.server(interceptors=[CallInterceptor(metrics)], options=[("grpc.so_reuseport", 0)])
    for name, servicer in (("Identity", services.identity), ("Controller", services.controller),
                           ("Node", services.node), ("GroupController", services.group_controller)):
        if servicer is not None:
            register(server, name, servicer)
    server.add_insecure_port(f"unix://{path}")
    # Bind with a tight umask so the socket is never briefly open to others, then set the mode.
    old_umask = os.umask(0o177)
    try:
        await server.start()
    finally:
        os.umask(old_umask)
    os.chmod(path, socket_mode)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(job()) for job in services.background]
    log.info("listening on %s", path, extra={"fields": {"endpoint": endpoint, "mode": oct(socket_mode)}})
    if ready is not None:
        ready()
    await stop.wait()
    log.info("shutting down: no new calls; finishing in-flight work (up to %ss)", grace_seconds)
    for t in tasks:
        t.cancel()
    deadline = loop.time() + grace_seconds
    # Stops accepting at once, lets running calls answer within the grace period, then
    # cancels their handlers; the work those handlers started is owned by the registry.
    await server.stop(grace_seconds)
    stuck = await services.inflight.drain(deadline - loop.time()) if services.inflight else []
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    for work in stuck:
        log.error(
            "%s on %s did not finish within the %ss grace period; exiting without it (the next "
            "call on it repairs or reports what it left)",
            work.what, ", ".join(work.keys), grace_seconds,
        )
    executor.shutdown(wait=False, cancel_futures=True)
    blocked = _workers_still_running(1.0)  # the executor is shut down; a second at exit is fine
    if stuck or blocked:
        if blocked and not stuck:
            log.error("%d worker thread(s) are blocked on the host (a hung mount?); exiting without them", blocked)
        # A thread blocked in the kernel cannot be stopped, and the interpreter would wait for
        # it forever at exit: leave now, as the grace period promised.
        logging.shutdown()
        os._exit(EXIT_WORK_ABANDONED)
    log.info("stopped")


_WORKER_PREFIX = "elastivol-worker"


def _workers_still_running(wait: float) -> int:
    """How many executor threads are still alive after ``wait`` seconds (idle ones exit at once)."""
    end = time.monotonic() + wait
    alive = [t for t in threading.enumerate() if t.name.startswith(_WORKER_PREFIX)]
    for t in alive:
        t.join(max(0.0, end - time.monotonic()))
    return sum(t.is_alive() for t in alive)


# Exit status when the grace period ended with work still running.
EXIT_WORK_ABANDONED = 3
