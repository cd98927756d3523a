"""The one table from domain errors to gRPC codes, and the size of what it sends."""

from __future__ import annotations

import grpc

from elastivol.errors import InvalidArgument, OutOfRange
from elastivol.grpc_errors import MAX_MESSAGE_BYTES, status_for


def test_codes_and_short_messages_pass_unchanged() -> None:
    assert status_for(OutOfRange("too big")) == (grpc.StatusCode.OUT_OF_RANGE, "too big")
    code, message = status_for(ValueError("boom"))
    assert code is grpc.StatusCode.INTERNAL and "ValueError: boom" in message


def test_long_messages_are_cut_to_what_a_grpc_trailer_carries() -> None:
    for filler in ("x", "\u00e9", "\U0001f600"):
        code, message = status_for(InvalidArgument("parameter type: " + filler * 70000))
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        head, _, tail = message.partition("... (message cut: ")
        assert head.startswith("parameter type: ") and len(head.encode()) <= MAX_MESSAGE_BYTES
        assert tail.endswith(" more characters)") and int(tail.split()[0]) == 70016 - len(head)
