"""Hypothesis fuzzing of every unary CSI RPC through the real socket, with hostile values in every field.

Invariants: the code is one the CSI spec allows for that RPC (never UNKNOWN, never INTERNAL,
never a crash); no file appears or disappears outside the pool and the allowed roots; nothing is
mounted outside them; secrets never reach a log line or an error message; the server stays up
with bounded memory. ``ELASTIVOL_FUZZ_EXAMPLES`` sets the examples per RPC (default 100);
``ELASTIVOL_FUZZ_LONG=1`` runs 1000 per RPC.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elastivol.csi import csi_pb2
from elastivol.node import mount
from elastivol.process import ServerProcess, serve_args
from tests.reliability.conftest import NODE, ZONE

C = grpc.StatusCode
LONG = os.environ.get("ELASTIVOL_FUZZ_LONG") == "1"
EXAMPLES = 1000 if LONG else int(os.environ.get("ELASTIVOL_FUZZ_EXAMPLES", "100"))
SECRET = "Zq9-fuzz-secret-"  # every secret value starts with this; it must never be seen again
MiB = 1 << 20

# Codes the spec allows on any RPC (section 1.1) and the extra ones each RPC lists.
GENERAL = {C.OK, C.INVALID_ARGUMENT, C.PERMISSION_DENIED, C.UNAUTHENTICATED, C.ABORTED, C.UNIMPLEMENTED}
VOLUME = {C.NOT_FOUND, C.FAILED_PRECONDITION}
EXTRA: dict[str, set[C]] = {
    "Probe": {C.FAILED_PRECONDITION},
    "CreateVolume": {C.NOT_FOUND, C.ALREADY_EXISTS, C.RESOURCE_EXHAUSTED, C.OUT_OF_RANGE},
    "DeleteVolume": {C.FAILED_PRECONDITION},
    "ControllerPublishVolume": VOLUME | {C.ALREADY_EXISTS, C.RESOURCE_EXHAUSTED},
    "ControllerUnpublishVolume": {C.NOT_FOUND},
    "ValidateVolumeCapabilities": {C.NOT_FOUND},
    "ListVolumes": {C.ABORTED},
    "ListSnapshots": {C.ABORTED},
    "ControllerGetVolume": {C.NOT_FOUND},
    "ControllerModifyVolume": VOLUME | {C.OUT_OF_RANGE},
    "CreateSnapshot": {C.NOT_FOUND, C.ALREADY_EXISTS, C.RESOURCE_EXHAUSTED, C.FAILED_PRECONDITION},
    "DeleteSnapshot": {C.FAILED_PRECONDITION},
    "GetSnapshot": {C.NOT_FOUND},
    "ControllerExpandVolume": VOLUME | {C.OUT_OF_RANGE, C.RESOURCE_EXHAUSTED},
    "NodeStageVolume": VOLUME | {C.ALREADY_EXISTS, C.RESOURCE_EXHAUSTED},
    "NodeUnstageVolume": {C.NOT_FOUND},
    "NodePublishVolume": VOLUME | {C.ALREADY_EXISTS},
    "NodeUnpublishVolume": {C.NOT_FOUND},
    "NodeGetVolumeStats": {C.NOT_FOUND},
    "NodeExpandVolume": VOLUME | {C.OUT_OF_RANGE},
}
SKIP_SERVICES = {"SnapshotMetadata"}  # server-streaming only


def _rpcs() -> list[tuple[str, str, Descriptor]]:
    out = []
    for service in csi_pb2.DESCRIPTOR.services_by_name.values():
        if service.name in SKIP_SERVICES:
            continue
        for method in service.methods:
            if not method.server_streaming:
                out.append((service.full_name, method.name, method.input_type))
    return out


RPCS = _rpcs()
REAL_VOLUME = "vol-0000000000000000a"  # filled in with the fixture's real volume at run time


class Ctx:
    work = Path("/nonexistent")
    real_volume = ""


def _strings() -> st.SearchStrategy[str]:
    w = Ctx.work
    samples = [
        "", ".", "..", "../../etc", "/", "/etc", "/etc/passwd", "vol-../../../etc", "snap-..%2f..", "fs-/../x",
        "vol-0123456789abcdef0", "snap-0123456789abcdef0", "vol-0123456789ABCDEF0", "vol-0123456789abcdef0/..",
        "a" * 129, "b" * 5000, "x\x00y", "\x00", "vol-0123456789abcdef0\x00", "ext4", "xfs", "btrfs", "ntfs",
        "rw,suid", "dev", "exec", "nosuid,suid", "ro,remount", "context=x", "a=b,c=d", "uid=0",
        "topology.kubernetes.io/zone", ZONE, NODE, "node-../x", "\u202e\ufeff", "%s%n", "${jndi:x}",
        str(w / "outside"), str(w / "outside" / "victim"), str(w / "kubelet" / ".." / "outside"),
        str(w / "kubelet" / "fuzz"), str(w / "kubelet" / "fuzz" / "t"), str(w / "kubelet" / "link"),
        str(w / "pool"), str(w / "pool" / "images"), "relative/path", "/proc/self/root", "/dev/sda",
    ]
    return st.one_of(st.sampled_from(samples), st.text(max_size=64), st.sampled_from([Ctx.real_volume or "x"]))


INTS = st.one_of(st.sampled_from([0, -1, 1, 1 << 30, 4 << 30, (1 << 63) - 1, -(1 << 63), 1 << 50]),
                 st.integers(-(1 << 63), (1 << 63) - 1))


def _value(data: st.DataObject, field: FieldDescriptor, depth: int) -> Any:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return data.draw(_strings())
    if t == FieldDescriptor.TYPE_BYTES:
        return data.draw(st.binary(max_size=64))
    if t == FieldDescriptor.TYPE_BOOL:
        return data.draw(st.booleans())
    if t == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return data.draw(st.one_of(st.sampled_from(known), st.integers(-5, 1000)))
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return data.draw(INTS)
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return data.draw(st.integers(-(1 << 31), (1 << 31) - 1))
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return data.draw(st.integers(0, (1 << 32) - 1))
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return data.draw(st.integers(0, (1 << 64) - 1))
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return data.draw(st.floats(allow_nan=True, width=32))
    raise AssertionError(f"no strategy for {field.full_name}")


def _is_secret(field: FieldDescriptor) -> bool:
    opts = field.GetOptions()
    return any(ext.name == "csi_secret" and val for ext, val in opts.ListFields()) or field.name == "secrets"


def fill(data: st.DataObject, message: Message, depth: int = 0) -> None:
    for field in message.DESCRIPTOR.fields:
        if not data.draw(st.booleans()):
            continue
        target = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_f, val_f = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            if _is_secret(field):
                for i in range(data.draw(st.integers(1, 3))):
                    target[f"key{i}"] = f"{SECRET}{data.draw(st.integers(0, 10**6))}"
            elif data.draw(st.integers(0, 20)) == 0:
                for i in range(300):  # hundreds of keys
                    target[f"k{i}"] = "v" * 20
            else:
                for _ in range(data.draw(st.integers(0, 4))):
                    key = _value(data, key_f, depth)
                    if val_f.type == FieldDescriptor.TYPE_MESSAGE:
                        fill(data, target[key], depth + 1)
                    else:
                        target[key] = _value(data, val_f, depth)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            if field.is_repeated:
                for _ in range(data.draw(st.integers(0, 2))):
                    fill(data, target.add(), depth + 1)
            else:
                target.SetInParent()
                fill(data, target, depth + 1)
        elif field.is_repeated:
            target.extend(_value(data, field, depth) for _ in range(data.draw(st.integers(0, 3))))
        else:
            value = _value(data, field, depth)
            if _is_secret(field) and field.type == FieldDescriptor.TYPE_STRING:
                value = f"{SECRET}{data.draw(st.integers(0, 10**6))}"
            setattr(message, field.name, value)


def _tree(root: Path) -> set[str]:
    out = set()
    for dirpath, dirs, files in os.walk(root):
        out.update(os.path.join(dirpath, n) for n in dirs + files)
    return out


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.fixture(scope="module")
def fuzz_server(rel_pool: Path) -> Iterator[ServerProcess]:
    work = rel_pool.parent
    Ctx.work = work
    (work / "outside").mkdir(exist_ok=True)
    (work / "outside" / "victim").write_text("do not touch")
    (work / "kubelet" / "fuzz").mkdir(parents=True, exist_ok=True)
    link = work / "kubelet" / "link"
    if not link.is_symlink():
        link.symlink_to(work / "outside")  # a symlink swapped in at a target path
    server = ServerProcess(
        serve_args(pool=rel_pool, node_id=NODE, zone=ZONE, allowed_roots=[work / "kubelet"]),
        f"unix://{work}/fuzz.sock", work / "logs" / "fuzz.log",
    ).start()
    with grpc.insecure_channel(server.endpoint) as channel:
        call = channel.unary_unary("/csi.v1.Controller/CreateVolume",
                                   request_serializer=csi_pb2.CreateVolumeRequest.SerializeToString,
                                   response_deserializer=csi_pb2.CreateVolumeResponse.FromString)
        req = csi_pb2.CreateVolumeRequest(name="fuzz-real", capacity_range=csi_pb2.CapacityRange(required_bytes=64 * MiB))
        cap = req.volume_capabilities.add()
        cap.mount.fs_type = "ext4"
        cap.access_mode.mode = csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
        Ctx.real_volume = call(req, timeout=60).volume.volume_id
    yield server
    server.stop()


TALLY: Counter[str] = Counter()


@pytest.mark.parametrize("service,method,input_type", RPCS, ids=[f"{s.split('.')[-1]}.{m}" for s, m, _ in RPCS])
def test_fuzz_rpc(fuzz_server: ServerProcess, rel_pool: Path, service: str, method: str, input_type: Descriptor) -> None:
    work = rel_pool.parent
    outside_before = _tree(work / "outside")
    others_before = {p for p in os.listdir(work)}
    request_class = getattr(csi_pb2, input_type.name)
    rss_before = _rss(fuzz_server.pid)
    with grpc.insecure_channel(fuzz_server.endpoint) as channel:
        call = channel.unary_unary(f"/{service}/{method}", request_serializer=request_class.SerializeToString,
                                   response_deserializer=lambda b: b)

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def one(data: st.DataObject) -> None:
            request = request_class()
            fill(data, request)
            try:
                call(request, timeout=60)
                code, details = C.OK, ""
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
            TALLY[method] += 1
            allowed = GENERAL | EXTRA.get(method, set())
            assert code in allowed, f"{method} answered {code.name}: {details!r} to {request}"
            assert SECRET not in details, f"{method} leaked a secret in its error: {details!r}"
            assert fuzz_server.proc is not None and fuzz_server.proc.poll() is None, fuzz_server.log_tail()

        one()
    assert _tree(work / "outside") == outside_before
    assert (work / "outside" / "victim").read_text() == "do not touch"
    assert set(os.listdir(work)) <= others_before | {"kubelet"}
    for m in mount.mounts():
        if m.target.startswith(str(work) + "/"):
            assert m.target.startswith((str(work / "kubelet") + "/", str(work / "pool"))), f"mounted {m.target}"
    log = fuzz_server.log_path.read_text(errors="replace")
    assert SECRET not in log, "a secret reached the server's log"
    assert _rss(fuzz_server.pid) - rss_before < 64 * MiB
    print(f"{method}: {TALLY[method]} examples")
