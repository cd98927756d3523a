"""Request builders and the error check shared by the servicer tests."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from elastivol.csi import csi_pb2
from elastivol.grpc_errors import status_for
from tests.unit.servicers.conftest import call
from tests.unit.servicers.fakes import FakeContext

C = grpc.StatusCode
MODE = csi_pb2.VolumeCapability.AccessMode
Req = TypeVar("Req", bound=Message)


def mount_cap(mode: int = MODE.SINGLE_NODE_WRITER, fs_type: str = "ext4") -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs_type), access_mode=MODE(mode=mode)
    )


def block_cap(mode: int = MODE.SINGLE_NODE_WRITER) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume(), access_mode=MODE(mode=mode))


def status(coro: Coroutine[Any, Any, Any]) -> tuple[grpc.StatusCode, str]:
    """The code and message the server's interceptor would send for this call (OK if it succeeds)."""
    try:
        call(coro)
    except Exception as exc:
        return status_for(exc)
    return grpc.StatusCode.OK, ""


def expect(code: grpc.StatusCode, coro: Coroutine[Any, Any, Any], *words: str) -> str:
    got, message = status(coro)
    assert got == code, f"expected {code.name}, got {got.name}: {message}"
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"
    return message


def expect_each_required(rpc: Callable[[Req, FakeContext], Coroutine[Any, Any, Any]], make_req: Callable[[], Req],
                         *fields: str) -> None:
    """Each field, cleared from an otherwise good request, makes the call INVALID_ARGUMENT naming it."""
    for name in fields:
        req = make_req()
        req.ClearField(name)
        expect(C.INVALID_ARGUMENT, rpc(req, FakeContext()), name)
