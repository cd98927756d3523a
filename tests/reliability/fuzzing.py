"""The boundary fuzzer shared by the local (tests/reliability) and aws (tests/aws) fuzz tests.

Every unary CSI RPC is called through a real server's socket with requests that hypothesis
builds in two ways, mixed: a *valid* request (the real volume, a staging path inside the
allowed root, a capability the driver accepts) with up to three fields replaced by boundary
values, which reaches the code behind the first validation line; and a request filled at
random, field by field, from the same boundary values mixed with random ones.

The invariants, checked for every example: the code is OK or one the CSI spec documents for
the RPC, never INTERNAL or UNKNOWN; an INVALID_ARGUMENT or OUT_OF_RANGE message names a field
or a parameter of the request; a secret never comes back; a refused call changes no state (the
target's cheap fingerprint - records, mounts, loop devices or the cloud's objects - is compared
after each refused call, ListVolumes and ListSnapshots every few refusals; a read-only RPC is
compared once, after its run). Per RPC test: nothing appeared outside the allowed roots, nothing
is mounted outside them, no secret reached the server's log, the server is alive and its
memory grew by less than 64 MiB.

How many examples: the hypothesis profile named by ``ELASTIVOL_FUZZ_PROFILE`` (``default``:
360 per RPC on the local provider and 110 on the aws one, about 21,600 in all; ``long``: ten
times as many; ``quick``: a smoke run). ``ELASTIVOL_FUZZ_EXAMPLES`` overrides the per-RPC count.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elastivol.csi import csi_pb2
from elastivol.node import mount
from elastivol.process import ServerProcess

C = grpc.StatusCode
SECRET = "Zq9-fuzz-secret-"  # every secret value starts with this; it must never be seen again
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

PROFILE = os.environ.get("ELASTIVOL_FUZZ_PROFILE", "default")
# Examples per RPC on the local provider, and on the aws one (where a call that reaches moto
# costs tens of milliseconds). default: about 21,600 examples in all, under 3 minutes here.
_COUNTS = {"default": (360, 110), "long": (3600, 1100), "quick": (30, 10)}
for _name, (_count, _aws) in _COUNTS.items():
    settings.register_profile(f"elastivol-fuzz-{_name}", max_examples=_count, deadline=None, database=None,
                              suppress_health_check=list(HealthCheck), print_blob=True)
if PROFILE not in _COUNTS:
    raise ValueError(f"ELASTIVOL_FUZZ_PROFILE={PROFILE!r}: use {', '.join(_COUNTS)}")
BASE = settings.get_profile(f"elastivol-fuzz-{PROFILE}")
_OVERRIDE = int(os.environ.get("ELASTIVOL_FUZZ_EXAMPLES", "0"))
EXAMPLES = _OVERRIDE or _COUNTS[PROFILE][0]
AWS_EXAMPLES = _OVERRIDE or _COUNTS[PROFILE][1]

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
    # The spec names no code for "still published"; FAILED_PRECONDITION is its code for "in use"
    # elsewhere (DeleteVolume), and the call is refused before anything is unmounted.
    "NodeUnstageVolume": {C.NOT_FOUND, C.FAILED_PRECONDITION},
    "NodePublishVolume": VOLUME | {C.ALREADY_EXISTS},
    "NodeUnpublishVolume": {C.NOT_FOUND},
    "NodeGetVolumeStats": {C.NOT_FOUND},
    "NodeExpandVolume": VOLUME | {C.OUT_OF_RANGE},
    "CreateVolumeGroupSnapshot": {C.NOT_FOUND, C.ALREADY_EXISTS, C.RESOURCE_EXHAUSTED, C.FAILED_PRECONDITION},
    "DeleteVolumeGroupSnapshot": {C.FAILED_PRECONDITION},
    "GetVolumeGroupSnapshot": {C.NOT_FOUND},
}
# Calls that must not change anything at all, whatever they answer.
READ_ONLY = {"GetPluginInfo", "GetPluginCapabilities", "Probe", "ValidateVolumeCapabilities", "ListVolumes",
             "GetCapacity", "ControllerGetCapabilities", "ListSnapshots", "GetSnapshot", "ControllerGetVolume",
             "GroupControllerGetCapabilities", "GetVolumeGroupSnapshot", "NodeGetVolumeStats",
             "NodeGetCapabilities", "NodeGetInfo"}
NAMED_CODES = {C.INVALID_ARGUMENT, C.OUT_OF_RANGE}  # their message must name what to fix
SKIP_SERVICES = {"SnapshotMetadata"}  # server-streaming only
LIST_EVERY = 25  # refusals in a row between two ListVolumes/ListSnapshots comparisons


def rpcs() -> list[tuple[str, str, Descriptor]]:
    out = []
    for service in csi_pb2.DESCRIPTOR.services_by_name.values():
        if service.name in SKIP_SERVICES:
            continue
        for method in service.methods:
            if not method.server_streaming:
                out.append((service.full_name, method.name, method.input_type))
    return out


RPCS = rpcs()
RPC_IDS = [f"{s.split('.')[-1]}.{m}" for s, m, _ in RPCS]


# -- the target ------------------------------------------------------------------------------------
@dataclass
class Target:
    """One server under test and what the fuzzer knows about it."""

    name: str  # "block-local", "file-aws", ...
    driver: str  # "block" or "file"
    endpoint: str
    work: Path  # the test's work dir: "outside" and "kubelet" live here
    root: Path  # the allowed root the valid paths use
    node_id: str
    zone: str
    volume: csi_pb2.Volume  # a real volume, published to node_id
    snapshot_id: str  # a real snapshot of it
    publish_context: dict[str, str]
    parameters: dict[str, str]  # a StorageClass the driver accepts
    cap: csi_pb2.VolumeCapability
    foreign_ids: list[str]  # real-looking ids of the other driver or provider
    state: Callable[[], Any]  # a cheap fingerprint of everything a call could change
    server: ServerProcess  # its log and its process are checked after each RPC's run
    examples: int = EXAMPLES
    mounts_allowed: tuple[str, ...] = ()  # prefixes a mount under work may have
    param_keys: tuple[str, ...] = ()
    int_keys: tuple[str, ...] = ()  # parameters that hold numbers
    prepare: Callable[[], None] = lambda: None  # before each RPC's run: undo what earlier runs did

    @property
    def staging(self) -> str:
        return str(self.root / "fuzz" / "staging")

    @property
    def target_path(self) -> str:
        return str(self.root / "fuzz" / "publish" / "mount")


TALLY: dict[tuple[str, str], Counter[str]] = {}
TIMES: dict[tuple[str, str], float] = {}


def report() -> list[str]:
    """The code distribution per target and RPC, as lines of a table."""
    if not TALLY:
        return []
    codes = sorted({c for counter in TALLY.values() for c in counter}, key=lambda c: (c != "OK", c))
    short = {c: c.replace("INVALID_ARGUMENT", "INVALID_ARG").replace("FAILED_PRECONDITION", "FAILED_PRECOND")
             .replace("RESOURCE_EXHAUSTED", "EXHAUSTED") for c in codes}
    head = f"{'target':<12} {'rpc':<32} {'secs':>6} {'total':>6} " + " ".join(f"{short[c]:>14}" for c in codes)
    lines = [head, "-" * len(head)]
    totals: Counter[str] = Counter()
    for (target, rpc), counter in sorted(TALLY.items()):
        totals.update(counter)
        lines.append(f"{target:<12} {rpc:<32} {TIMES.get((target, rpc), 0.0):>6.1f} {sum(counter.values()):>6} "
                     + " ".join(f"{counter.get(c, 0):>14}" for c in codes))
    lines.append("-" * len(head))
    lines.append(f"{'all':<12} {'':<32} {sum(TIMES.values()):>6.1f} {sum(totals.values()):>6} "
                 + " ".join(f"{totals.get(c, 0):>14}" for c in codes))
    for target in sorted({t for t, _ in TIMES}):
        seconds = sum(s for (t, _), s in TIMES.items() if t == target)
        n = sum(sum(c.values()) for (t, _), c in TALLY.items() if t == target)
        lines.append(f"{target}: {n} examples in {seconds:.1f} s ({n / max(seconds, 1e-9):.0f}/s)")
    return lines


# -- boundary values -------------------------------------------------------------------------------
INT64_EDGES = [0, 1, -1, (1 << 31) - 1, 1 << 31, (1 << 31) + 1, -(1 << 31), -(1 << 31) - 1, (1 << 32) - 1, 1 << 32,
               1 << 53, (1 << 53) + 1, 1 << 62, (1 << 63) - 1, -(1 << 63), -(1 << 63) + 1, 4095, 4096, MiB - 1,
               GiB - 1, GiB, GiB + 1, 4 * GiB, 1024 * GiB, 1024 * GiB + 1, 16384 * GiB, 16384 * GiB + 1,
               65536 * GiB, 65536 * GiB + 1, 47 * (1 << 40)]
INT32_EDGES = [0, 1, -1, 2, (1 << 31) - 1, -(1 << 31), 1 << 30, 1000]
INT64 = st.one_of(st.sampled_from(INT64_EDGES), st.integers(-(1 << 63), (1 << 63) - 1),
                  st.integers(0, 64 * GiB))
INT32 = st.one_of(st.sampled_from(INT32_EDGES), st.integers(-(1 << 31), (1 << 31) - 1))
# Numbers as StorageClass strings: every integer edge, and spellings a lax parser might take.
NUMBER_TEXT = st.one_of(
    st.sampled_from(INT64_EDGES).map(str),
    st.sampled_from([str(1 << 64), str(-(1 << 64)), "9" * 40, "", " ", "3000 ", " 3000", "+3000", "-0", "0x10",
                     "1e3", "3000.0", "3_000", "\u0663\u0660\u0660\u0660", "\uff13\uff10\uff10\uff10", "NaN",
                     "inf", "0777", "0o777", "777", "700", "7777", "10000", "8", "-700", "3000\x00", "--5", "-+5",
                     "0" * 5000 + "7", "-" + "0" * 5000 + "1"]),
    st.integers(-(1 << 64), 1 << 64).map(str),
)
CONTROL = "".join(chr(c) for c in range(1, 32)) + "\x7f\x85\u2028\u2029"


def _long(n: int, ch: str = "a") -> str:
    return ch * n


_EDGES: dict[tuple[int, str], list[str]] = {}


def _cached(target: Target, kind: str, make: Callable[[Target], list[str]]) -> list[str]:
    """Edge lists are built once per target: some hold 64 KiB strings."""
    key = (id(target), kind)
    if key not in _EDGES:
        _EDGES[key] = make(target)
    return _EDGES[key]


def ids_edges(target: Target) -> list[str]:
    return _cached(target, "ids", _ids_edges)


def path_edges(target: Target) -> list[str]:
    return _cached(target, "paths", _path_edges)


def _ids_edges(target: Target) -> list[str]:
    real = target.volume.volume_id
    return ["", " ", _long(64 * KiB), _long(129), _long(256), "\u00e9\u4e2d\U0001f600", CONTROL, "vol-\n", "vol-\r",
            real + "\x00", real + "\n", real + " ", real.upper(), real + "/..", "../" + real, real[:-1], real + "0",
            target.snapshot_id, target.snapshot_id + "\x00", "vol-0123456789abcdef0", "vol-0123456789ABCDEF0",
            "snap-0123456789abcdef0", "fs-0123456789abcdef0", "fs-0123456789abcdef0::fsap-0123456789abcdef0",
            "fs-0123456789abcdef0:/a/../../etc", "fs-0123456789abcdef0:/" + _long(300), "fsap-0123456789abcdef0",
            "i-0123456789abcdef0", "vol-" + _long(17, "0"), "snap-../../etc", "%s%n", "${jndi:x}",
            *target.foreign_ids]


def _path_edges(target: Target) -> list[str]:
    root, work = str(target.root), str(target.work)
    head = root + "/fuzz/"
    deep = head + "/".join(_long(200, "d") for _ in range(19))
    return [
        "", "/", ".", "..", "relative/path", "fuzz/x", root, root + "/", root + "/..", root + "/../outside",
        head + "../../outside/x", work + "/outside", work + "/outside/victim", root + "/link", root + "/link/x",
        root + "/link/victim", head + _long(255, "n"), head + _long(256, "n"), head + _long(255, "n") + "/x",
        head + "\u00e9" * 127, head + "\u00e9" * 128, (deep + "/" + _long(4095, "e"))[:4095],
        (deep + "/" + _long(4096, "e"))[:4096], (deep + "/" + _long(5000, "e"))[:5000], head + "a\x00b",
        head + "a\nb", head + "a\rb", head + "a\tb", head + "a b", head + "a\\012b", head + CONTROL,
        head + "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),  # protobuf strings are UTF-8
        root + "/file", root + "/file/x", root + "/dir", root + "/fuzz", "/proc/self/root" + root + "/x",
        "/etc", "/etc/passwd", "/dev/null", "/dev/sda", "//" + root.lstrip("/") + "/fuzz/y",
        head + "./././x", head + "x/../../../outside", target.staging, target.target_path,
        target.staging + "/", target.target_path + "/..", head + "publish", head + "publish/mount/deeper",
    ]


def names_edges() -> list[str]:
    return _NAMES


_NAMES = ["", " ", _long(64 * KiB), _long(63), _long(64), _long(128), _long(129), _long(253), _long(255),
            _long(256), _long(257), "\u00e9\u4e2d\U0001f600", CONTROL, "a\x00b", "a\nb", "../x", "/", "pvc-" + "0" * 36,
            "fz-0", "fz-1", "FZ-0", "fz-0 ", "vol-0123456789abcdef0", "fs-0123456789abcdef0", "%s%n"]



def _word(names: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(names), st.text(max_size=40))


def param_value(target: Target, key: str) -> st.SearchStrategy[str]:
    numeric = key.lower() in {k.lower() for k in target.int_keys}
    edges = st.sampled_from(["", "true", "false", "TRUE", "1", "0", "yes", _long(64 * KiB), CONTROL, "gp3", "io2",
                             "sc1", "standard", "gp1", "efs-ap", "xfs", "ext4", "btrfs", "${.PVC.name}",
                             "${.PVC.namespace}/${.PV.name}", "${.Other}", "/", "/a/../b", "../..", "a/b",
                             "key=value", "k=v=w", "=v", "k=", "\u00e9\u4e2d"])
    valid = st.sampled_from(sorted({v for v in target.parameters.values()}) or [""])
    return st.one_of(NUMBER_TEXT, edges, valid, st.text(max_size=20)) if numeric else \
        st.one_of(edges, valid, NUMBER_TEXT, st.text(max_size=20))


@st.composite
def parameters(draw: st.DrawFn, target: Target) -> dict[str, str]:
    keys = list(target.param_keys)
    shape = draw(st.integers(0, 9))
    if shape == 0:  # a thousand parameters
        return {**target.parameters, **{f"k{i}": "v" * 8 for i in range(1000)}}
    if shape == 1:  # one huge value
        key = draw(st.sampled_from(keys))
        return {**target.parameters, key: draw(st.sampled_from([_long(64 * KiB), _long(1 * MiB // 4, "9")]))}
    if shape == 2:  # the same key twice, spelled differently
        key = draw(st.sampled_from(keys))
        v1, v2 = draw(param_value(target, key)), draw(param_value(target, key))
        variant = draw(st.sampled_from([key.upper(), key.lower(), key.swapcase(), key.capitalize(), key + " "]))
        return {**target.parameters, key: v1, variant: v2}
    if shape == 3:  # random keys
        return draw(st.dictionaries(_word(keys), st.text(max_size=20), max_size=4))
    # the valid class with some keys set to edge values, or some removed
    out = dict(target.parameters)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(keys))
        if draw(st.integers(0, 5)) == 0:
            out.pop(key, None)
        else:
            out[key] = draw(param_value(target, key))
    return out


def string_for(target: Target, fd: FieldDescriptor) -> st.SearchStrategy[str]:
    name = fd.name
    if name.endswith("_path"):
        return st.one_of(st.sampled_from(path_edges(target)),
                         st.text(max_size=40).map(lambda t: f"{target.root}/fuzz/{t}"))
    if name.endswith(("_id", "_ids")) or name == "starting_token":
        return st.one_of(st.sampled_from(ids_edges(target)), st.text(max_size=40),
                         st.sampled_from([target.volume.volume_id, target.snapshot_id, target.node_id]))
    if name == "name":
        return st.one_of(st.sampled_from(names_edges()), st.text(max_size=40))
    if name in ("fs_type",):
        return st.sampled_from(["", "ext4", "xfs", "ext2", "ext3", "btrfs", "ntfs", "EXT4", "nfs", "nfs4", "efs",
                                "ext4\x00", _long(64 * KiB), CONTROL])
    if name == "mount_flags":
        return st.sampled_from(["", "ro", "rw", "noatime", "suid", "dev", "exec", "nosuid", "remount", "bind",
                                "rbind", "context=x", "uid=0", "a=b,c=d", "ro,remount", "tls", "iam", "nfsvers=4.1",
                                "discard", "sync", _long(64 * KiB), CONTROL, "\u00e9"])
    if name == "volume_mount_group":
        return st.sampled_from(["", "0", "1000", "-1", str(1 << 32), str((1 << 32) - 1), "abc", _long(64 * KiB)])
    return st.one_of(st.sampled_from([*names_edges(), target.zone, target.node_id]), st.text(max_size=40))


def map_for(target: Target, fd: FieldDescriptor, draw: st.DrawFn) -> dict[str, str]:
    name = fd.name
    if name == "secrets" or _is_secret(fd):
        return {f"key{i}": f"{SECRET}{draw(st.integers(0, 10**6))}" for i in range(draw(st.integers(1, 3)))}
    if name in ("parameters", "mutable_parameters"):
        return draw(parameters(target))
    if name == "segments":
        return draw(st.sampled_from([{}, {"topology.kubernetes.io/zone": target.zone},
                                     {"topology.elastivol.io/zone": "nowhere"},
                                     {"topology.kubernetes.io/zone": "a", "topology.elastivol.io/zone": "b"},
                                     {"topology.kubernetes.io/zone": ""}, {"x" * 300: "y"},
                                     {f"k{i}": "v" for i in range(1000)}]))
    base = target.publish_context if name == "publish_context" else dict(target.volume.volume_context)
    shape = draw(st.integers(0, 5))
    if shape == 0:
        return {f"k{i}": "v" * 8 for i in range(1000)}
    if shape == 1:
        return {}
    out = dict(base)
    for _ in range(draw(st.integers(1, 3))):
        keys = sorted(out) or ["fsType"]
        key = draw(st.one_of(st.sampled_from(keys), st.sampled_from([k.upper() for k in keys]), st.text(max_size=10)))
        out[key] = draw(st.one_of(st.sampled_from(ids_edges(target) + path_edges(target)), NUMBER_TEXT))
    return out


def _is_secret(fd: FieldDescriptor) -> bool:
    opts = fd.GetOptions()
    return any(ext.name == "csi_secret" and val for ext, val in opts.ListFields()) or fd.name == "secrets"


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def scalar(target: Target, fd: FieldDescriptor, draw: st.DrawFn) -> Any:
    t = fd.type
    if t == FieldDescriptor.TYPE_STRING:
        value = draw(string_for(target, fd))
        return f"{SECRET}{draw(st.integers(0, 10**6))}" if _is_secret(fd) else value
    if t == FieldDescriptor.TYPE_BYTES:
        return draw(st.binary(max_size=64))
    if t == FieldDescriptor.TYPE_BOOL:
        return draw(st.booleans())
    if t == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in fd.enum_type.values]
        return draw(st.one_of(st.sampled_from(known), st.sampled_from([-1, 1 << 20, (1 << 31) - 1, -(1 << 31)])))
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return draw(INT64)
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return draw(INT32)
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return draw(st.sampled_from([0, 1, (1 << 32) - 1]))
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return draw(st.sampled_from([0, 1, (1 << 64) - 1, 1 << 63]))
    raise AssertionError(f"no strategy for {fd.full_name}")


# -- building requests -----------------------------------------------------------------------------
FUZZ_NAMES = ["fz-0", "fz-1", "fz-2"]  # few names: a CreateVolume that succeeds makes at most these


def template(target: Target, method: str, message: Message) -> None:
    """Fill ``message`` with values the driver accepts (the real volume, valid paths...)."""
    real = target.volume
    valid: dict[str, Callable[[], Any]] = {
        "volume_id": lambda: real.volume_id if method not in ("DeleteVolume",) else "vol-0123456789abcdef0",
        "source_volume_id": lambda: real.volume_id,
        "node_id": lambda: target.node_id,
        "snapshot_id": lambda: target.snapshot_id if method != "DeleteSnapshot" else "snap-0123456789abcdef0",
        "staging_target_path": lambda: target.staging,
        "target_path": lambda: target.target_path,
        "volume_path": lambda: target.target_path,
        "name": lambda: FUZZ_NAMES[0],
    }
    for fd in message.DESCRIPTOR.fields:
        value = getattr(message, fd.name)
        if fd.name in valid:
            setattr(message, fd.name, valid[fd.name]())
        elif fd.name == "volume_capability":
            value.CopyFrom(target.cap)
        elif fd.name == "volume_capabilities":
            value.add().CopyFrom(target.cap)
        elif fd.name == "capacity_range":
            value.required_bytes = GiB
        elif fd.name == "parameters" and method in ("CreateVolume", "GetCapacity", "ValidateVolumeCapabilities"):
            value.update(target.parameters)
        elif fd.name == "publish_context":
            value.update(target.publish_context)
        elif fd.name == "volume_context":
            value.update(real.volume_context)
        elif fd.name == "source_volume_ids":
            value.append(real.volume_id)


_LEAVES: dict[str, list[tuple[str, ...]]] = {}


def leaves(desc: Descriptor) -> list[tuple[str, ...]]:
    if desc.full_name not in _LEAVES:
        _LEAVES[desc.full_name] = _leaves(desc)
    return _LEAVES[desc.full_name]


def _leaves(desc: Descriptor, prefix: tuple[str, ...] = (), depth: int = 0) -> list[tuple[str, ...]]:
    """Paths to every scalar, repeated scalar and map field, to depth 3."""
    out: list[tuple[str, ...]] = []
    for fd in desc.fields:
        path = (*prefix, fd.name)
        if fd.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(fd):
            if depth < 3:
                out += _leaves(fd.message_type, path, depth + 1)
        else:
            out.append(path)
    return out


def _container(message: Message, path: tuple[str, ...]) -> tuple[Message, FieldDescriptor]:
    for name in path[:-1]:
        fd = message.DESCRIPTOR.fields_by_name[name]
        child = getattr(message, name)
        if fd.is_repeated:
            message = child[0] if len(child) else child.add()
        else:
            child.SetInParent()
            message = child
    return message, message.DESCRIPTOR.fields_by_name[path[-1]]


def mutate(target: Target, message: Message, path: tuple[str, ...], draw: st.DrawFn) -> None:
    parent, fd = _container(message, path)
    current = getattr(parent, fd.name)
    if _is_map(fd):
        current.clear()
        value_fd = fd.message_type.fields_by_name["value"]
        if value_fd.type == FieldDescriptor.TYPE_MESSAGE:  # no such map in CSI today; fill a few at random
            for i in range(draw(st.integers(0, 2))):
                fill(target, current[f"k{i}"], draw, 2)
        else:
            current.update(map_for(target, fd, draw))
    elif fd.is_repeated:
        del current[:]
        n = draw(st.sampled_from([0, 1, 1, 2, 3, 100]))
        if n <= 3:
            current.extend(scalar(target, fd, draw) for _ in range(n))
        else:  # many copies of one value: a long list costs one draw
            value = scalar(target, fd, draw)
            # Under gRPC's 4 MiB request limit, so that the handler, not the transport, answers.
            current.extend([value] * (n if len(str(value)) < 4 * KiB else 3))
    else:
        setattr(parent, fd.name, scalar(target, fd, draw))


def fill(target: Target, message: Message, draw: st.DrawFn, depth: int = 0) -> None:
    """Random values in random fields (the old fuzzer's way), from the same boundary strategies."""
    for fd in message.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        current = getattr(message, fd.name)
        if _is_map(fd):
            if fd.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                continue
            current.update(map_for(target, fd, draw))
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            if fd.is_repeated:
                for _ in range(draw(st.integers(0, 2))):
                    fill(target, current.add(), draw, depth + 1)
            else:
                current.SetInParent()
                fill(target, current, draw, depth + 1)
        elif fd.is_repeated:
            current.extend(scalar(target, fd, draw) for _ in range(draw(st.integers(0, 3))))
        else:
            setattr(message, fd.name, scalar(target, fd, draw))


@st.composite
def requests(draw: st.DrawFn, target: Target, method: str, request_class: type[Message]) -> Message:
    message = request_class()
    paths = leaves(message.DESCRIPTOR)
    if not paths:
        return message
    if draw(st.integers(0, 3)) == 0:
        fill(target, message, draw)
        return message
    template(target, method, message)
    for path in draw(st.lists(st.sampled_from(paths), min_size=0, max_size=3, unique=True)):
        mutate(target, message, path, draw)
    return message


_WORDS: dict[str, set[str]] = {}


def field_words(desc: Descriptor) -> set[str]:
    if desc.full_name not in _WORDS:
        _WORDS[desc.full_name] = _field_words(desc)
    return _WORDS[desc.full_name]


def _field_words(desc: Descriptor, seen: set[str] | None = None) -> set[str]:
    """Every field name of a message type, to any depth."""
    seen = set() if seen is None else seen
    for fd in desc.fields:
        seen.add(fd.name)
        if fd.message_type is not None and fd.message_type.full_name not in seen:
            seen.add(fd.message_type.full_name)
            _field_words(fd.message_type, seen)
    return {w for w in seen if "." not in w}


def map_keys(message: Message) -> set[str]:
    out: set[str] = set()
    for fd, value in message.ListFields():
        if _is_map(fd):
            out.update(value.keys())
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            for item in (value if fd.is_repeated else [value]):
                out |= map_keys(item)
    return out


def names_a_field(details: str, request: Message, param_keys: tuple[str, ...] = ()) -> bool:
    """Whether ``details`` names a field of the request, one of its map keys or a StorageClass
    parameter of the driver (a defaulted parameter is still what the user changes)."""
    words = field_words(request.DESCRIPTOR) | set(param_keys) | {"capacity", "parameter", "StorageClass", "mount flag",
                                               "access mode", "access type", "fs type", "topology"}
    lowered = details.lower()
    if any(w.lower() in lowered for w in words):
        return True
    return any(key and key in details for key in map_keys(request))


# -- running ---------------------------------------------------------------------------------------
def tree(root: Path) -> set[str]:
    out = set()
    for dirpath, dirs, files in os.walk(root):
        out.update(os.path.join(dirpath, n) for n in dirs + files)
    return out


def host_state(work: Path) -> tuple[Any, ...]:
    """Mounts under ``work`` and loop devices backed by files under it."""
    prefix = str(work) + "/"
    with open("/proc/self/mountinfo", "rb") as fh:  # the raw lines: parsing every mount of the host is slow
        raw = fh.read()
    needle = os.fsencode(prefix)
    mounts = sorted(line.split(b" ", 1)[1] for line in raw.split(b"\n") if needle in line)
    loops = []
    for entry in os.scandir("/sys/block"):  # only the backing file: loop.list_all reads much more
        if entry.name.startswith("loop"):
            try:
                with open(f"/sys/block/{entry.name}/loop/backing_file", "rb") as fh:
                    backing = fh.read().strip()
            except OSError:
                continue  # not attached
            if backing.startswith(needle):
                loops.append((entry.name, backing))
    loops.sort()
    return tuple(mounts), tuple(loops)


def listing(channel: grpc.Channel, driver_has_snapshots: bool = True) -> tuple[Any, ...]:
    """What a CO sees: ListVolumes and ListSnapshots (an error counts as what was seen)."""
    out = []
    for method, req, resp in (("ListVolumes", csi_pb2.ListVolumesRequest, csi_pb2.ListVolumesResponse),
                              ("ListSnapshots", csi_pb2.ListSnapshotsRequest, csi_pb2.ListSnapshotsResponse)):
        call = channel.unary_unary(f"/csi.v1.Controller/{method}", request_serializer=req.SerializeToString,
                                   response_deserializer=resp.FromString)
        try:
            answer = call(req(), timeout=60)
            out.append(sorted(str(e).replace("\n", " ") for e in answer.entries))
        except grpc.RpcError as exc:
            out.append([exc.code().name])
    return tuple(out)


def stable_listing(channel: grpc.Channel) -> tuple[Any, ...]:
    """A listing that two calls in a row agree on: the aws provider's lists lag behind a change."""
    seen = listing(channel)
    for _ in range(5):
        again = listing(channel)
        if again == seen:
            return seen
        seen = again
    return seen


def run_rpc(target: Target, service: str, method: str, input_type: Descriptor) -> None:
    """Fuzz one RPC of ``target`` with ``target.examples`` examples; assert the invariants."""
    work = target.work
    target.prepare()
    outside_before = tree(work / "outside")
    work_before = set(os.listdir(work))
    request_class = getattr(csi_pb2, input_type.name)
    tally = TALLY.setdefault((target.name, method), Counter())
    rss_before = _rss(target.server.pid)
    started = time.monotonic()
    with grpc.insecure_channel(target.endpoint) as channel:
        call = channel.unary_unary(f"/{service}/{method}", request_serializer=request_class.SerializeToString,
                                   response_deserializer=lambda b: b)
        listed = {"now": stable_listing(channel)}
        state = {"last": target.state(), "refusals": 0}

        @settings(BASE, max_examples=target.examples)
        @given(request=requests(target, method, request_class))
        def one(request: Message) -> None:
            try:
                call(request, timeout=60)
                code, details = C.OK, ""
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
            tally[code.name] += 1
            shown = _Shown(request)
            allowed = GENERAL | EXTRA.get(method, set())
            assert code in allowed, f"{target.name} {method} answered {code.name}: {details[:2000]!r} to {shown}"
            assert SECRET not in details, f"{method} leaked a secret in its error: {details!r}"
            if code in NAMED_CODES:
                assert names_a_field(details, request, target.param_keys), f"{method} {code.name} names no field: {details!r} ({shown})"
            if method in READ_ONLY:
                return
            now = target.state()
            if code is not C.OK:
                assert now == state["last"], f"{target.name} {method} refused ({code.name}: {details[:300]}) " \
                                             f"but changed the state: {_diff(state['last'], now)} by {shown}"
                state["refusals"] += 1
                if state["refusals"] % LIST_EVERY == 0:
                    seen = listing(channel)
                    assert seen == listed["now"], f"{target.name} {method}: ListVolumes/ListSnapshots changed " \
                                                  f"during refused calls (last: {shown})"
            else:
                state["refusals"] = 0
                listed["now"] = stable_listing(channel) if now != state["last"] else listed["now"]
            state["last"] = now

        one()
        if method in READ_ONLY:
            assert target.state() == state["last"], f"{target.name} {method} (read only) changed the state"
            assert stable_listing(channel) == listed["now"], f"{target.name} {method} (read only) changed ListVolumes"
    TIMES[target.name, method] = TIMES.get((target.name, method), 0.0) + time.monotonic() - started
    server = target.server
    assert server.proc is not None and server.proc.poll() is None, f"the server died: {server.log_tail()}"
    assert _rss(server.pid) - rss_before < 64 * MiB, "the server's memory grew by 64 MiB or more in one RPC's run"
    assert SECRET not in server.log_path.read_text(errors="replace"), "a secret reached the server's log"
    assert tree(work / "outside") == outside_before, "something appeared or vanished outside the allowed roots"
    assert (work / "outside" / "victim").read_text() == "do not touch"
    assert set(os.listdir(work)) <= work_before, f"new entries in the work dir: {set(os.listdir(work)) - work_before}"
    for m in mount.mounts():
        if m.target.startswith(str(work) + "/"):
            assert m.target.startswith(target.mounts_allowed), f"mounted {m.target} outside the allowed roots"


class _Shown:
    """A request as text, made only when a message needs it (printing a big request is slow)."""

    def __init__(self, request: Message) -> None:
        self.request = request

    def __str__(self) -> str:
        return str(self.request)[:2000]

    def __format__(self, spec: str) -> str:  # f-strings call this
        return format(str(self), spec)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _diff(a: Any, b: Any) -> str:
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        parts = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                xs, ys = set(x) if isinstance(x, (tuple, list)) else {x}, set(y) if isinstance(y, (tuple, list)) else {y}
                parts.append(f"part {i}: gone {sorted(map(str, xs - ys))[:5]}, new {sorted(map(str, ys - xs))[:5]}")
        return "; ".join(parts)
    return f"{a!r} -> {b!r}"[:1000]


def recreate_if_gone(client: Any, target: Target, name: str, snapshot_name: str = "") -> None:
    """The fuzzing may delete the real volume (a file volume is not protected by an attachment) or
    its snapshot; make new ones (new names: a CO never reuses the name of a deleted volume), so
    later RPCs reach past NOT_FOUND."""
    try:
        client.controller.ValidateVolumeCapabilities(csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=target.volume.volume_id, volume_capabilities=[target.cap]), timeout=60)
    except grpc.RpcError as exc:
        if exc.code() != C.NOT_FOUND:
            raise
        target.volume = client.controller.CreateVolume(csi_pb2.CreateVolumeRequest(
            name=f"{name}-{uuid.uuid4().hex[:8]}", capacity_range=csi_pb2.CapacityRange(required_bytes=GiB),
            volume_capabilities=[target.cap],
            parameters=target.parameters), timeout=120).volume
        _EDGES.pop((id(target), "ids"), None)
    if snapshot_name:
        found = client.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest(snapshot_id=target.snapshot_id),
                                                timeout=60).entries
        if not found:
            target.snapshot_id = client.controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
                name=f"{snapshot_name}-{uuid.uuid4().hex[:8]}", source_volume_id=target.volume.volume_id),
                timeout=120).snapshot.snapshot_id
            _EDGES.pop((id(target), "ids"), None)


def restage(client: Any, volume: csi_pb2.Volume, node_id: str, cap: csi_pb2.VolumeCapability, root: Path) -> None:
    """Attach and stage the real volume again before an RPC's run, as a CO would after cleaning up:
    the publications an earlier run left are unpublished first (a volume still mounted elsewhere
    cannot be staged again), so that publish, stats and expand reach past "stage it first"."""
    staging = str(root / "fuzz" / "staging")
    for m in sorted(mount.mounts(), key=lambda m: len(m.target), reverse=True):
        if m.target.startswith(str(root) + "/") and m.target != staging:
            try:
                client.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
                    volume_id=volume.volume_id, target_path=m.target), timeout=60)
            except grpc.RpcError:
                pass  # not ours to unpublish (another volume's test mount): staging will say so
    context = client.controller.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
        volume_id=volume.volume_id, node_id=node_id, volume_capability=cap), timeout=120).publish_context
    client.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
        volume_id=volume.volume_id, staging_target_path=staging, volume_capability=cap,
        publish_context=context, volume_context=dict(volume.volume_context)), timeout=120)


def unmount_below(root: Path) -> list[str]:
    """After a target's server stopped: unmount what its publications left under ``root``
    (deepest first), so that no run leaves a mount behind; returns what was found."""
    left = sorted((m.target for m in mount.mounts() if m.target.startswith(f"{root}/")), key=len, reverse=True)
    for target in left:
        mount.unmount_all(target)
    return left


def make_outside(work: Path, root: Path) -> None:
    """The scenery the path edges aim at: a victim outside, a link out, a file and a dir inside."""
    (work / "outside").mkdir(exist_ok=True)
    (work / "outside" / "victim").write_text("do not touch")
    (root / "fuzz").mkdir(parents=True, exist_ok=True)
    (root / "dir").mkdir(exist_ok=True)
    (root / "file").write_text("a file where a directory is expected")
    link = root / "link"
    if not link.is_symlink():
        link.symlink_to(work / "outside")
