"""The single table that turns domain errors into gRPC status codes."""

from __future__ import annotations

import errno

import grpc

from elastivol import errors
from elastivol.logs import scrub

# A path on a filesystem that no longer answers: a FUSE daemon that died, a network server gone.
# The host layer meets these wherever it touches a CO's path, so they are named once, here.
_DEAD_FILESYSTEM = {errno.ENOTCONN, errno.ESTALE, errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ETIMEDOUT}

_CODES: tuple[tuple[type[errors.ElastivolError], grpc.StatusCode], ...] = (
    # Order matters: subclasses before their bases.
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Exhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
    (errors.Internal, grpc.StatusCode.INTERNAL),
)


# gRPC sends the message in a trailer; clients drop the whole answer when trailers pass 16 KiB
# (8 KiB in some), and a message that echoes a 64 KiB parameter would. Non-ASCII bytes are
# percent-encoded (x3), so this keeps the worst case near 4.5 KiB.
MAX_MESSAGE_BYTES = 1500


def _bounded(message: str) -> str:
    raw = message.encode("utf-8", "surrogateescape")
    if len(raw) <= MAX_MESSAGE_BYTES:
        return message
    head = raw[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore")
    return f"{head}... (message cut: {len(message) - len(head)} more characters)"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The code and the message a client sees for ``exc``: secret values the process knows of
    scrubbed (a CO records messages in events and logs), and cut to a size gRPC carries."""
    code, message = _status_for(exc)
    return code, _bounded(scrub(message))


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, NotImplementedError):
        # The generated servicer base raises this for an RPC a driver does not offer.
        return grpc.StatusCode.UNIMPLEMENTED, "this driver does not offer this call"
    if isinstance(exc, errors.ElastivolError):
        for cls, code in _CODES:
            if isinstance(exc, cls):
                return code, exc.message
        return grpc.StatusCode.INTERNAL, exc.message
    if isinstance(exc, OSError) and exc.errno in _DEAD_FILESYSTEM:
        where = f" at {exc.filename}" if exc.filename else ""
        return grpc.StatusCode.FAILED_PRECONDITION, (
            f"the filesystem{where} does not answer ({exc.strerror}): a FUSE daemon or network filesystem "
            "under this path has died; unmount it (umount -l) or restart what serves it, then retry"
        )
    # Anything else is a bug: say so, without leaking internals beyond the exception's type.
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}: {exc}); see the plugin log"
