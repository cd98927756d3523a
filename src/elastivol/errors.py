"""The domain's error vocabulary.

Providers and the host layer raise these; they never know about gRPC. The one table that
turns them into gRPC status codes lives in :mod:`elastivol.grpc_errors`. Every message is
meant for a person: it says what was wrong and, where it can, what to do about it.
"""

from __future__ import annotations


class ElastivolError(Exception):
    """Base of every expected failure. The message is shown to the user as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(ElastivolError):
    """The request itself is wrong; retrying it unchanged cannot succeed."""


class InvalidParameter(InvalidArgument):
    """One StorageClass/VolumeSnapshotClass parameter is wrong."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class NotFound(ElastivolError):
    """The named object (volume, snapshot, node, path...) does not exist."""


class AlreadyExists(ElastivolError):
    """An object with this name exists but is incompatible with the request."""


class OutOfRange(ElastivolError):
    """A size is outside what the volume type or the request's limits allow."""


class FailedPrecondition(ElastivolError):
    """The system is not in a state where the call can succeed; something must change first."""


class InUse(FailedPrecondition):
    """The object is used by a node or by another object."""

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class Exhausted(ElastivolError):
    """Out of a resource: space, zones that can serve, attachment slots, GIDs."""


class Aborted(ElastivolError):
    """Another operation on the same object is in progress; retry later."""


class Unavailable(ElastivolError):
    """A dependency (pool, cloud API) cannot be reached now; retrying may succeed."""


class Unauthenticated(ElastivolError):
    """The credentials are missing or not accepted."""


class PermissionDenied(ElastivolError):
    """The credentials are valid but lack a permission."""


class Unimplemented(ElastivolError):
    """The capability is not offered by this driver or provider."""


class Internal(ElastivolError):
    """A bug or an unexpected host failure; the message carries what is known."""
