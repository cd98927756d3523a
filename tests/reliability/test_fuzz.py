"""Boundary fuzzing of every unary CSI RPC of both drivers on the local provider, through the socket.

The strategies and the invariants are in :mod:`tests.reliability.fuzzing` (shared with the aws
provider's test, tests/aws/test_fuzz.py). The servers here have a real volume, staged paths
under their allowed roots, a symlink out of them, and a victim file outside that must never
change. A table of the codes each RPC answered is printed at the end of the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor

from elastivol.client import CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.node import mount
from elastivol.params import block as block_params
from elastivol.params import file as file_params
from elastivol.process import ServerProcess, serve_args
from elastivol.providers.local.file.registry import FileRegistry
from elastivol.providers.local.pool import Pool
from tests.helpers import new_volume
from tests.reliability import fuzzing
from tests.reliability.conftest import NODE, ZONE

MiB = 1 << 20
BLOCK_INT_KEYS = (block_params.IOPS, block_params.THROUGHPUT, block_params.IOPS_PER_GB, *block_params.MKFS_KEYS)
FILE_INT_KEYS = (file_params.UID, file_params.GID, file_params.GID_RANGE_START, file_params.GID_RANGE_END,
                 file_params.DIRECTORY_PERMS)


def local_state(pool: Path, work: Path, trees: tuple[Path, ...] = ()) -> tuple[Any, ...]:
    """Pool records (by content), images and snapshots (by size), the file trees, mounts and loops."""
    # Node records are heartbeats a server rewrites on its own; the rest changes only with a call.
    # A record rewritten, even with the same content, counts as a change (its mtime moves).
    records = []
    for dirpath, _dirs, files in os.walk(pool / "meta"):
        if os.path.basename(dirpath) != "nodes":
            for name in files:
                st = os.stat(os.path.join(dirpath, name))
                records.append((dirpath, name, st.st_size, st.st_mtime_ns))
    images = []
    for d in (pool / "images", pool / "snapshots"):
        if d.is_dir():
            images += [(e.path, e.stat(follow_symlinks=False).st_size) for e in os.scandir(d)]
    files = tuple(sorted(p for t in trees for p in fuzzing.tree(t)))
    return (tuple(sorted(records)), tuple(sorted(images)), files, *fuzzing.host_state(work))


def _start(work: Path, name: str, args: list[str]) -> ServerProcess:
    return ServerProcess(args, f"unix://{work}/{name}.sock", work / "logs" / f"{name}.log").start()


@pytest.fixture(scope="module")
def block_target(rel_pool: Path) -> Iterator[fuzzing.Target]:
    work = rel_pool.parent
    root = work / "kubelet"
    fuzzing.make_outside(work, root)
    server = _start(work, "fuzz-block", serve_args(pool=rel_pool, node_id=NODE, zone=ZONE, allowed_roots=[root]))
    cap = volume_capability()
    with CsiClient(server.endpoint, timeout=60) as client:
        volume = client.create_volume("fuzz-real", 64 * MiB, cap=cap)
        published = client.controller.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id=volume.volume_id, node_id=NODE, volume_capability=cap))
        snapshot = client.controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
            name="fuzz-snap", source_volume_id=volume.volume_id)).snapshot

    def publish() -> None:
        with CsiClient(server.endpoint, timeout=60) as client:
            fuzzing.recreate_if_gone(client, target, "fuzz-real", "fuzz-snap")
            fuzzing.restage(client, target.volume, NODE, cap, root)

    target = fuzzing.Target(
        name="block-local", driver="block", endpoint=server.endpoint, work=work, root=root, node_id=NODE, zone=ZONE,
        volume=volume, snapshot_id=snapshot.snapshot_id, publish_context=dict(published.publish_context),
        parameters={"type": "gp3", "csi.storage.k8s.io/fstype": "ext4"}, cap=cap,
        foreign_ids=["fs-0123456789abcdef0::fsap-0123456789abcdef0", "vol-0fedcba9876543210"],
        state=lambda: local_state(rel_pool, work), server=server, mounts_allowed=(str(work / "kubelet"), str(rel_pool)),
        param_keys=(*block_params.ACCEPTED_KEYS, block_params.LEGACY_FS_TYPE_KEY, "tagSpecification_1"),
        int_keys=BLOCK_INT_KEYS, prepare=publish,
    )
    yield target
    server.stop()


@pytest.fixture(scope="module")
def file_target(rel_pool: Path, block_target: fuzzing.Target) -> Iterator[fuzzing.Target]:
    work = rel_pool.parent
    root = work / "kubelet-file"
    fuzzing.make_outside(work, root)
    fs_root = rel_pool / "fuzz-fs"
    fs_root.mkdir(exist_ok=True)
    fs = FileRegistry(Pool(rel_pool)).register("fuzz", str(fs_root))
    server = _start(work, "fuzz-file", serve_args(driver="file", pool=rel_pool, node_id=NODE, zone=ZONE,
                                                  allowed_roots=[root]))
    cap = volume_capability(mode="MULTI_NODE_MULTI_WRITER")
    params = {"provisioningMode": "efs-ap", "fileSystemId": fs.id, "directoryPerms": "700"}
    with CsiClient(server.endpoint, timeout=60) as client:
        volume = client.create_volume("fuzz-real-file", 1 << 30, cap=cap, parameters=params)
        snapshot = client.controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
            name="fuzz-snap-file", source_volume_id=volume.volume_id)).snapshot
    # The block target's ids are the "other driver's" ids here, and the reverse.
    block_target.foreign_ids.append(volume.volume_id)
    def again() -> None:
        with CsiClient(server.endpoint, timeout=60) as client:
            fuzzing.recreate_if_gone(client, target, "fuzz-real-file", "fuzz-snap-file")

    target = fuzzing.Target(
        name="file-local", driver="file", endpoint=server.endpoint, work=work, root=root, node_id=NODE, zone=ZONE,
        volume=volume, snapshot_id=snapshot.snapshot_id, publish_context={}, parameters=params, cap=cap,
        foreign_ids=[block_target.volume.volume_id, block_target.snapshot_id, "vol-0fedcba9876543210"],
        state=lambda: local_state(rel_pool, work, (fs_root,)), server=server,
        mounts_allowed=(str(work / "kubelet"), str(root), str(rel_pool)),
        param_keys=file_params.ACCEPTED_KEYS, int_keys=FILE_INT_KEYS, prepare=again,
    )
    yield target
    server.stop()


@pytest.fixture(params=["block", "file"])
def target(request: pytest.FixtureRequest) -> fuzzing.Target:
    return request.getfixturevalue(f"{request.param}_target")  # type: ignore[no-any-return]


# -- the cases of issue 17 and what the fuzzing found, named ------------------------------------
def _code(fn: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    try:
        fn(request, timeout=60)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("size", [1 << 62, (1 << 63) - 1])
def test_a_huge_size_is_out_of_range_naming_the_maximum(block_target: fuzzing.Target, size: int) -> None:
    with CsiClient(block_target.endpoint) as client:
        code, details = _code(client.controller.CreateVolume, csi_pb2.CreateVolumeRequest(
            name="fuzz-huge", capacity_range=csi_pb2.CapacityRange(required_bytes=size),
            volume_capabilities=[volume_capability()]))
    assert code == grpc.StatusCode.OUT_OF_RANGE, details
    assert f"required_bytes {size}" in details and "at most 16384 GiB" in details


def test_a_component_longer_than_name_max_is_invalid_argument(block_target: fuzzing.Target) -> None:
    t = block_target
    t.prepare()
    with CsiClient(t.endpoint) as client:
        for staging, limit in ((t.root / ("s" * 500), "NAME_MAX (255"), (t.root / ("s" * 256), "NAME_MAX (255"),
                               (t.root / "file" / "staging", "is not a directory")):
            code, details = _code(client.node.NodeStageVolume, csi_pb2.NodeStageVolumeRequest(
                volume_id=t.volume.volume_id, staging_target_path=str(staging), volume_capability=t.cap,
                publish_context=t.publish_context, volume_context=dict(t.volume.volume_context)))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, details
            assert "staging_target_path" in details and limit in details


def test_what_the_fuzzing_found_on_a_published_volume(block_target: fuzzing.Target) -> None:
    """A volume of its own (the fuzzing may leave the shared one anywhere), staged and published."""
    t = block_target
    base = t.root / "found"
    odd = base / "a\rb"
    with CsiClient(t.endpoint) as client:
        vol = new_volume(client, base, "fuzz-found", node_id=t.node_id)
        vol.up()
        staged = {m.target for m in mount.mounts() if m.target.startswith(str(base))}
        try:
            # Unstaging while published used to unmount the staging path, then fail on the device.
            code, details = _code(client.node.NodeUnstageVolume, csi_pb2.NodeUnstageVolumeRequest(
                volume_id=vol.id, staging_target_path=str(vol.staging)))
            assert code == grpc.StatusCode.FAILED_PRECONDITION and str(vol.target) in details, details
            # A second staging path used to mount the same filesystem twice.
            again = csi_pb2.NodeStageVolumeRequest(volume_id=vol.id, staging_target_path=str(base / "second"),
                                                   volume_capability=vol.cap)
            code, details = _code(client.node.NodeStageVolume, again)
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "staging_target_path" in details, details
            # A target inside the staging path would bind the volume into itself; one inside a
            # published target would write into that volume and make it impossible to unpublish.
            for where in (vol.staging / "x", vol.target / "y"):
                inside = csi_pb2.NodePublishVolumeRequest(volume_id=vol.id, staging_target_path=str(vol.staging),
                                                          target_path=str(where), volume_capability=vol.cap)
                code, details = _code(client.node.NodePublishVolume, inside)
                assert code == grpc.StatusCode.FAILED_PRECONDITION and "is inside" in details, details
            # Nor may the target hold the staging path (nothing is mounted inside it yet here).
            around = csi_pb2.NodePublishVolumeRequest(volume_id=vol.id, staging_target_path=str(vol.staging),
                                                      target_path=str(vol.staging.parent), volume_capability=vol.cap)
            code, details = _code(client.node.NodePublishVolume, around)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "must be apart" in details, details
            assert {m.target for m in mount.mounts() if m.target.startswith(str(base))} == staged
            # A mount at a path with "\r" (which mountinfo does not escape) used to make every call that
            # reads the mount table INTERNAL, CreateVolume included.
            vol.publish(odd)
            assert any(m.target == str(odd) for m in mount.mounts())
            code, details = _code(client.controller.CreateVolume, csi_pb2.CreateVolumeRequest(
                name="fuzz-huge", capacity_range=csi_pb2.CapacityRange(required_bytes=1 << 62),
                volume_capabilities=[volume_capability()]))
            assert code == grpc.StatusCode.OUT_OF_RANGE, details
            vol.unpublish(odd)
        finally:
            vol.down()
            vol.delete()
    assert not any(m.target.startswith(str(base)) for m in mount.mounts())


def test_a_message_echoing_a_huge_value_still_reaches_the_client(block_target: fuzzing.Target) -> None:
    """A 64 KiB parameter value used to come back inside the message, past gRPC's trailer limit:
    the client saw RESOURCE_EXHAUSTED from its own transport instead of the answer."""
    with CsiClient(block_target.endpoint) as client:
        for params in ({"type": "x" * 65536}, {"iops": "9" * 65536}, {"tagSpecification_" + "1" * 5000: "a=b"}):
            code, details = _code(client.controller.CreateVolume, csi_pb2.CreateVolumeRequest(
                name="fuzz-echo", volume_capabilities=[volume_capability()], parameters=params))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, details
            assert len(details.encode()) < 1600 and next(iter(params))[:17] in details


def test_a_file_volume_is_published_below_directories_not_made_yet(file_target: fuzzing.Target) -> None:
    t = file_target
    target = t.root / "found" / "pods" / "p1" / "mount"
    with CsiClient(t.endpoint) as client:
        client.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
            volume_id=t.volume.volume_id, target_path=str(target), volume_capability=t.cap), timeout=60)
        assert any(m.target == str(target) for m in mount.mounts())
        client.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
            volume_id=t.volume.volume_id, target_path=str(target)), timeout=60)
    assert not any(m.target == str(target) for m in mount.mounts())


# -- the fuzzing (after the named cases: it fills the pool) ---------------------------------------
@pytest.mark.parametrize("service,method,input_type", fuzzing.RPCS, ids=fuzzing.RPC_IDS)
def test_fuzz_rpc(target: fuzzing.Target, service: str, method: str, input_type: Descriptor) -> None:
    fuzzing.run_rpc(target, service, method, input_type)
