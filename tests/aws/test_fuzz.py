"""Boundary fuzzing of every unary CSI RPC of both drivers on the aws provider (moto + fault layer).

The same strategies and invariants as the local provider's fuzz test (tests/reliability/
fuzzing.py); here the state a refused call must not change is also the cloud's: EBS volumes,
their attachments and snapshots, EFS access points, as moto holds them. Reading those is slow,
so they are read again only when moto received a call that could change them (every request
moto gets is recorded); the mounts and loop devices under the work dir are read every time.
The examples per RPC are fewer than on the local provider (each call that reaches moto costs
tens of milliseconds): see the profiles in tests/reliability/fuzzing.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor

from elastivol.client import CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.params import block as block_params
from elastivol.params import file as file_params
from tests.aws.support import ZONE_A, Disks, FakeImds, Moto, imds_env, start_server
from tests.reliability import fuzzing

GiB = 1 << 30
TRANSITIONS = {"latency_ms": 2, "consistency_lag": 1, "creating_polls": 1, "attaching_polls": 1, "detaching_polls": 1,
               "snapshot_pending_polls": 1, "modifying_polls": 1, "optimizing_polls": 1}
READ_PREFIXES = ("Describe", "Get", "List")
BLOCK_INT_KEYS = (block_params.IOPS, block_params.THROUGHPUT, block_params.IOPS_PER_GB, *block_params.MKFS_KEYS)
FILE_INT_KEYS = (file_params.UID, file_params.GID, file_params.GID_RANGE_START, file_params.GID_RANGE_END,
                 file_params.DIRECTORY_PERMS)


def cloud_state(moto: Moto, ec2: Any, efs: Any, work: Path) -> Callable[[], tuple[Any, ...]]:
    """A fingerprint of the cloud and the host, re-reading the cloud only after a writing call."""
    cache: dict[str, Any] = {"mark": moto.mark(), "cloud": None}

    def read_cloud() -> tuple[Any, ...]:
        volumes = sorted(
            (v["VolumeId"], v["State"], v["Size"], v.get("VolumeType"), v.get("Iops"), v.get("Throughput"),
             tuple(sorted((a["InstanceId"], a["State"], a["Device"]) for a in v.get("Attachments", []))),
             tuple(sorted((t["Key"], t["Value"]) for t in v.get("Tags", []))))
            for v in ec2.describe_volumes()["Volumes"])
        snapshots = sorted((s["SnapshotId"], s["VolumeId"], s["State"]) for s in
                           ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])
        points = sorted((a["AccessPointId"], a["FileSystemId"], str(a.get("RootDirectory")), str(a.get("PosixUser")))
                        for a in efs.describe_access_points()["AccessPoints"])
        return tuple(volumes), tuple(snapshots), tuple(points)

    def state() -> tuple[Any, ...]:
        mark = moto.mark()
        writes = [r for r in moto.requests(cache["mark"]) if r.key != "fault-layer"
                  and not r.action.startswith(READ_PREFIXES)]
        cache["mark"] = mark
        if cache["cloud"] is None or writes:
            cache["cloud"] = read_cloud()
        return (cache["cloud"], *fuzzing.host_state(work))

    return state


@pytest.fixture(scope="module")
def fuzz_work(aws_work: Path) -> Path:
    work = aws_work / f"fuzz-{uuid.uuid4().hex[:6]}"
    (work / "kubelet").mkdir(parents=True)
    return work


@pytest.fixture(scope="module")
def aws_block_target(fuzz_work: Path, aws_env: dict[str, str], moto: Moto, raw_ec2: Any, raw_efs: Any
                     ) -> Iterator[fuzzing.Target]:
    work, root = fuzz_work, fuzz_work / "kubelet"
    fuzzing.make_outside(work, root)
    node = str(raw_ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="m5.large",
                                     Placement={"AvailabilityZone": ZONE_A})["Instances"][0]["InstanceId"])
    disks = Disks(work / "fake")
    imds = FakeImds(instance_id=node, zone=ZONE_A).start()
    env = {"ELASTIVOL_AWS_DEV_ROOT": str(disks.dev), "ELASTIVOL_AWS_SYS_ROOT": str(disks.sys), **imds_env(imds)}
    # The server's allowed root is ``root`` (its socket and log live there too); ``work`` holds
    # the victim outside it.
    server = start_server(root, cluster=f"fuzz-{uuid.uuid4().hex[:8]}", faults=TRANSITIONS, env=env,
                          name="fuzz-block")
    cap = volume_capability()
    with CsiClient(server.endpoint, timeout=120) as client:
        volume = client.create_volume("fuzz-real", GiB, cap=cap, zone=ZONE_A, parameters={"type": "gp3"})
        published = client.controller.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id=volume.volume_id, node_id=node, volume_capability=cap))
        disks.attach(volume.volume_id)
        snapshot = client.controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
            name="fuzz-snap", source_volume_id=volume.volume_id)).snapshot

    def publish() -> None:
        with CsiClient(server.endpoint, timeout=120) as client:
            fuzzing.restage(client, volume, node, cap, root)

    yield fuzzing.Target(
        name="block-aws", driver="block", endpoint=server.endpoint, work=work, root=root, node_id=node, zone=ZONE_A,
        volume=volume, snapshot_id=snapshot.snapshot_id, publish_context=dict(published.publish_context),
        parameters={"type": "gp3", "csi.storage.k8s.io/fstype": "ext4"}, cap=cap,
        foreign_ids=["fs-0123456789abcdef0::fsap-0123456789abcdef0", "vol-4d10ededc27e99027", "i-0fedcba9876543210"],
        state=cloud_state(moto, raw_ec2, raw_efs, work), server=server.process,
        mounts_allowed=(str(root), str(work / "kubelet-file")),
        param_keys=(*block_params.ACCEPTED_KEYS, block_params.LEGACY_FS_TYPE_KEY, "tagSpecification_1"),
        int_keys=BLOCK_INT_KEYS, prepare=publish, examples=fuzzing.AWS_EXAMPLES,
    )
    server.stop()
    imds.stop()
    fuzzing.unmount_below(root)
    disks.cleanup()


@pytest.fixture(scope="module")
def aws_file_target(fuzz_work: Path, aws_env: dict[str, str], moto: Moto, raw_ec2: Any, raw_efs: Any,
                    aws_block_target: fuzzing.Target) -> Iterator[fuzzing.Target]:
    work, root = fuzz_work, fuzz_work / "kubelet-file"
    fuzzing.make_outside(work, root)
    (work / "efs").mkdir(exist_ok=True)  # where the recording mounter's fake EFS lives
    fs_id = str(raw_efs.create_file_system(CreationToken=uuid.uuid4().hex)["FileSystemId"])
    imds = FakeImds(instance_id="i-0aaaaaaaaaaaaaaaa", zone=ZONE_A).start()
    env = {"ELASTIVOL_EFS_FAKE_ROOT": str(work / "efs"), **imds_env(imds)}
    server = start_server(root, cluster=f"fuzz-{uuid.uuid4().hex[:8]}", driver="file", env=env,
                          faults={"latency_ms": 2, "consistency_lag": 1}, name="fuzz-file")
    cap = volume_capability(mode="MULTI_NODE_MULTI_WRITER")
    params = {"provisioningMode": "efs-ap", "fileSystemId": fs_id, "directoryPerms": "700"}
    with CsiClient(server.endpoint, timeout=120) as client:
        volume = client.create_volume("fuzz-real-file", GiB, cap=cap, parameters=params)
    aws_block_target.foreign_ids.append(volume.volume_id)

    def again() -> None:
        with CsiClient(server.endpoint, timeout=120) as client:
            fuzzing.recreate_if_gone(client, target, "fuzz-real-file")

    target = fuzzing.Target(
        name="file-aws", driver="file", endpoint=server.endpoint, work=work, root=root,
        node_id="i-0aaaaaaaaaaaaaaaa", zone=ZONE_A, volume=volume, snapshot_id="snap-0123456789abcdef0",
        publish_context={}, parameters=params, cap=cap,
        foreign_ids=[aws_block_target.volume.volume_id, aws_block_target.snapshot_id, "vol-0fedcba9876543210"],
        state=cloud_state(moto, raw_ec2, raw_efs, work), server=server.process,
        mounts_allowed=(str(root), str(work / "kubelet")),
        param_keys=file_params.ACCEPTED_KEYS, int_keys=FILE_INT_KEYS, examples=fuzzing.AWS_EXAMPLES,
        prepare=again,
    )
    yield target
    server.stop()
    imds.stop()
    fuzzing.unmount_below(root)


@pytest.fixture(params=["block", "file"])
def aws_target(request: pytest.FixtureRequest) -> fuzzing.Target:
    return request.getfixturevalue(f"aws_{request.param}_target")  # type: ignore[no-any-return]


@pytest.mark.parametrize("service,method,input_type", fuzzing.RPCS, ids=fuzzing.RPC_IDS)
def test_fuzz_rpc(aws_target: fuzzing.Target, service: str, method: str, input_type: Descriptor) -> None:
    fuzzing.run_rpc(aws_target, service, method, input_type)


# -- what the fuzzing found, named --------------------------------------------------------------------
def test_a_refused_clone_leaves_no_temporary_snapshot(aws_block_target: fuzzing.Target, raw_ec2: Any) -> None:
    """Cloning under a name already used with other parameters is ALREADY_EXISTS; the snapshot the
    clone was being made from used to stay behind."""
    t = aws_block_target

    def snapshots() -> set[str]:
        return {s["SnapshotId"] for s in raw_ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}

    with CsiClient(t.endpoint, timeout=120) as client:
        # A source of its own: the fuzzing may have grown the shared volume past the clone's size.
        source = client.create_volume("fuzz-clone-source", GiB, cap=t.cap, zone=ZONE_A, parameters={"type": "gp3"})
        client.create_volume("fuzz-taken", GiB, cap=t.cap, zone=ZONE_A, parameters={"type": "gp3"})
        before = snapshots()
        request = csi_pb2.CreateVolumeRequest(
            name="fuzz-taken", capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GiB),
            volume_capabilities=[t.cap], parameters={"type": "gp3"},
            volume_content_source=csi_pb2.VolumeContentSource(
                volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=source.volume_id)))
        with pytest.raises(grpc.RpcError) as info:
            client.controller.CreateVolume(request, timeout=120)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS, info.value.details()
    assert snapshots() == before
