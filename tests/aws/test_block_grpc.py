"""The block driver with --provider aws, through the real gRPC socket of a child `elastivol serve`.

The child talks HTTP to moto through the fault layer (latency, lag, transitions); this test plays
EBS's data plane and udev with a fake NVMe device tree over real loop devices, so stage, format,
mount, publish and resize run for real.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from elastivol.client import volume_capability
from elastivol.csi import csi_pb2
from elastivol.node import fs as hostfs
from elastivol.node import mount as hostmount
from elastivol.providers.aws.controller.ebs_model import client_token
from tests.aws.support import ZONE_A, AwsServer, Disks, FakeImds, Moto, imds_env, start_server, sub_work
from tests.helpers import Vol, expect_error, new_volume
from tests.support import crash

GiB = 1 << 30
TRANSITIONS = {"latency_ms": 5, "consistency_lag": 1, "creating_polls": 2, "attaching_polls": 2, "detaching_polls": 2,
               "snapshot_pending_polls": 2, "modifying_polls": 1, "optimizing_polls": 1}
SEED_001_GP3 = {"csi.storage.k8s.io/fstype": "xfs", "type": "gp3", "iopsPerGB": "3000", "encrypted": "true"}
SEED_000_GP3 = {"type": "gp3", "allowAutoIOPSPerGBIncrease": "true", "encrypted": "true"}
PROVISIONER = {"csi.storage.k8s.io/pvc/name": "ebs-claim", "csi.storage.k8s.io/pvc/namespace": "default",
               "csi.storage.k8s.io/pv/name": "pvc-3bd12eac"}


@pytest.fixture(scope="module")
def node(raw_ec2: Any) -> str:
    resp = raw_ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="m5.large",
                                 Placement={"AvailabilityZone": ZONE_A})
    return str(resp["Instances"][0]["InstanceId"])


@pytest.fixture(scope="module")
def work(aws_work: Path) -> Path:
    return sub_work(aws_work, "block")


@pytest.fixture(scope="module")
def disks(work: Path) -> Iterator[Disks]:
    d = Disks(work / "fake")
    yield d
    d.cleanup()


@pytest.fixture(scope="module")
def cluster_id() -> str:
    return f"grpc-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(work: Path, disks: Disks, node: str, aws_env: dict[str, str], cluster_id: str) -> Iterator[AwsServer]:
    imds = FakeImds(instance_id=node, zone=ZONE_A, instance_type="m5.large").start()
    env = {"ELASTIVOL_AWS_DEV_ROOT": str(disks.dev), "ELASTIVOL_AWS_SYS_ROOT": str(disks.sys), **imds_env(imds)}
    # --node-id says otherwise: IMDS is what a node trusts for its identity.
    srv = start_server(work, cluster=cluster_id, node_id="i-0ffffffffffffffff", faults=TRANSITIONS, env=env)
    yield srv
    srv.stop()
    imds.stop()


def _vol(server: AwsServer, work: Path, node: str, name: str, **kw: Any) -> Vol:
    return new_volume(server.client(), work, name, node_id=node, zone=ZONE_A, **kw)


def _ready(client: Any, snapshot_id: str) -> csi_pb2.Snapshot:
    for _ in range(100):
        entries = client.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest(snapshot_id=snapshot_id)).entries
        if entries and entries[0].snapshot.ready_to_use:
            snapshot: csi_pb2.Snapshot = entries[0].snapshot
            return snapshot
        time.sleep(0.05)
    raise AssertionError(f"snapshot {snapshot_id} never became ready")


def test_node_info_comes_from_imds_and_the_limits_table(server: AwsServer, node: str) -> None:
    info = server.client().node.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
    assert info.node_id == node and info.max_volumes_per_node == 26
    assert info.accessible_topology.segments["topology.kubernetes.io/zone"] == ZONE_A


def test_seed_storage_classes_produce_the_expected_ec2_fields(
    server: AwsServer, work: Path, node: str, moto: Moto, raw_ec2: Any, cluster_id: str
) -> None:
    mark = moto.mark()
    name = f"pvc-{uuid.uuid4().hex[:8]}"
    vol = _vol(server, work, node, name, kind="xfs", size=10 * GiB, parameters={**SEED_001_GP3, **PROVISIONER})
    assert vol.volume.volume_context["fsType"] == "xfs"
    (create,) = [r for r in moto.requests(mark) if r.action == "CreateVolume"]
    p = create.params
    assert (p["VolumeType"], p["Size"], p["Iops"], p["Throughput"], p["Encrypted"]) == ("gp3", "10", "5000", "125", "true")
    assert p["AvailabilityZone"] == ZONE_A and p["ClientToken"] == client_token(name)
    assert p["TagSpecification.1.ResourceType"] == "volume"
    tags = {p[k]: p[k.replace(".Key", ".Value")] for k in p if k.startswith("TagSpecification.1.Tag.") and k.endswith(".Key")}
    assert tags["CSIVolumeName"] == name and tags["elastivol.io/cluster"] == cluster_id
    assert tags["kubernetes.io/created-for/pvc/name"] == "ebs-claim"
    assert tags["kubernetes.io/created-for/pvc/namespace"] == "default"
    assert tags["kubernetes.io/created-for/pv/name"] == "pvc-3bd12eac"
    made = raw_ec2.describe_volumes(VolumeIds=[vol.id])["Volumes"][0]
    assert made["Iops"] == 5000 and made["Encrypted"] and made["KmsKeyId"]
    # Seed 000's class: the gp3 baseline, encrypted.
    mark = moto.mark()
    other = _vol(server, work, node, f"pvc-{uuid.uuid4().hex[:8]}", size=4 * GiB, parameters=SEED_000_GP3)
    (create,) = [r for r in moto.requests(mark) if r.action == "CreateVolume"]
    assert (create.params["Iops"], create.params["Throughput"], create.params["Encrypted"]) == ("3000", "125", "true")
    vol.delete()
    other.delete()


def test_the_whole_lifecycle(server: AwsServer, work: Path, disks: Disks, node: str, raw_ec2: Any) -> None:
    client = server.client()
    # xfs: it grows online without CAP_SYS_RESOURCE, which this sandbox lacks (ext4's resize ioctl needs it).
    vol = _vol(server, work, node, f"pvc-{uuid.uuid4().hex[:8]}", kind="xfs", size=4 * GiB, parameters={"type": "gp3"})
    vol.controller_publish()
    assert vol.publish_context["devicePath"].startswith("/dev/xvd")
    attachment = raw_ec2.describe_volumes(VolumeIds=[vol.id])["Volumes"][0]["Attachments"][0]
    assert attachment["InstanceId"] == node and attachment["Device"] == vol.publish_context["devicePath"]
    disks.attach(vol.id, size_gib=4)
    vol.stage()
    vol.publish()
    digest = vol.write(1 << 20)
    listed = {e.volume.volume_id: e for e in client.controller.ListVolumes(csi_pb2.ListVolumesRequest()).entries}
    assert list(listed[vol.id].status.published_node_ids) == [node]
    got = client.controller.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id=vol.id))
    assert got.volume.capacity_bytes == 4 * GiB and got.volume.volume_context["elastivol.io/param.type"] == "gp3"

    # Snapshot: ready only once completed.
    snap = client.controller.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
        source_volume_id=vol.id, name=f"snapshot-{uuid.uuid4().hex[:8]}")).snapshot
    disks.snapshot(snap.snapshot_id, vol.id)
    assert not snap.ready_to_use
    assert _ready(client, snap.snapshot_id).size_bytes == 4 * GiB

    # Expansion: EBS grows the disk, the node grows the filesystem online.
    resp = client.controller.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id=vol.id, capacity_range=csi_pb2.CapacityRange(required_bytes=6 * GiB)))
    assert resp.capacity_bytes == 6 * GiB and resp.node_expansion_required
    disks.grow(vol.id, 6)
    client.node.NodeExpandVolume(csi_pb2.NodeExpandVolumeRequest(
        volume_id=vol.id, volume_path=str(vol.target), staging_target_path=str(vol.staging),
        capacity_range=csi_pb2.CapacityRange(required_bytes=6 * GiB)))
    assert hostfs.statfs(str(vol.target)).total_bytes > 5 * GiB
    assert raw_ec2.describe_volumes(VolumeIds=[vol.id])["Volumes"][0]["Size"] == 6

    # Deleting an attached volume explains itself (seed 004's PV stuck Terminating).
    message = expect_error(grpc.StatusCode.FAILED_PRECONDITION, vol.delete)
    assert node in message and "kubectl get volumeattachment" in message

    vol.down()
    disks.detach(vol.id)
    assert raw_ec2.describe_volumes(VolumeIds=[vol.id])["Volumes"][0]["Attachments"] == []
    vol.controller_unpublish()  # already detached: OK

    # Restore: the data written before the snapshot is there.
    source = csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snap.snapshot_id))
    cap = volume_capability(fs_type="xfs")
    made = client.create_volume(f"pvc-{uuid.uuid4().hex[:8]}", 4 * GiB, zone=ZONE_A, source=source, cap=cap)
    assert made.content_source.snapshot.snapshot_id == snap.snapshot_id
    restored = Vol(client, made, cap, work / "kubelet" / "staging" / made.volume_id,
                   work / "kubelet" / "pods" / made.volume_id / "mount", node, {})
    restored.controller_publish()
    disks.restore(restored.id, snap.snapshot_id)
    disks.attach(restored.id, size_gib=4)
    restored.stage()
    restored.publish()
    assert restored.checksum(1 << 20) == digest
    restored.down()
    disks.detach(restored.id)

    # Clone: CopyVolumes is not in moto, so this goes through a snapshot.
    clone_source = csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=vol.id))
    clone = client.create_volume(f"pvc-{uuid.uuid4().hex[:8]}", 6 * GiB, zone=ZONE_A, source=clone_source)
    assert clone.content_source.volume.volume_id == vol.id

    for volume_id in (vol.id, restored.id, clone.volume_id):
        client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))
        client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))  # gone: still OK
    client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    client.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))


def test_a_device_of_another_volume_is_never_formatted(server: AwsServer, work: Path, disks: Disks, node: str) -> None:
    vol = _vol(server, work, node, f"pvc-{uuid.uuid4().hex[:8]}")
    vol.controller_publish()
    disks.attach(vol.id, serial_for="vol-0bbbbbbbbbbbbbbbb")  # the slot shows another volume's serial
    message = expect_error(grpc.StatusCode.FAILED_PRECONDITION, vol.stage)
    assert "vol-0bbbbbbbbbbbbbbbb" in message
    assert hostfs.detect(disks.loops[vol.id]) is None, "nothing was formatted"
    disks.detach(vol.id)
    vol.controller_unpublish()
    vol.delete()


def test_idempotent_parameter_mismatch(server: AwsServer) -> None:
    client = server.client()
    name = f"pvc-{uuid.uuid4().hex[:8]}"
    first = client.create_volume(name, 1 * GiB, zone=ZONE_A)
    assert client.create_volume(name, 1 * GiB, zone=ZONE_A).volume_id == first.volume_id
    message = expect_error(grpc.StatusCode.ALREADY_EXISTS, client.create_volume, name, 2 * GiB, zone=ZONE_A)
    assert "IdempotentParameterMismatch" in message and "new name" in message
    client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=first.volume_id))


def test_crash_mid_create_then_retry_yields_one_volume(work: Path, raw_ec2: Any, cluster_id: str) -> None:
    state = {**TRANSITIONS, "state_file": str(work / f"crash-{uuid.uuid4().hex[:6]}.json")}
    name = f"pvc-{uuid.uuid4().hex[:8]}"
    crashing = start_server(work, cluster=cluster_id, faults=state, env={crash.ENV: "aws.create.after_call"})
    with crashing.client() as client:
        expect_error(grpc.StatusCode.UNAVAILABLE, client.create_volume, name, 1 * GiB, zone=ZONE_A)
    assert crashing.process.proc is not None and crashing.process.proc.wait(10) != 0
    again = start_server(work, cluster=cluster_id, faults=state)
    try:
        with again.client() as client:
            made = client.create_volume(name, 1 * GiB, zone=ZONE_A)
            found = raw_ec2.describe_volumes(Filters=[{"Name": "tag:CSIVolumeName", "Values": [name]}])["Volumes"]
            assert [v["VolumeId"] for v in found] == [made.volume_id]
            client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=made.volume_id))
    finally:
        again.stop()


def as_sidecars_do(call: Callable[[], Any], attempts: int = 5) -> Any:
    """Retry UNAVAILABLE (and ABORTED) with backoff, as external-provisioner and -attacher do."""
    for attempt in range(attempts):
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def test_throttling_storm_succeeds_with_bounded_calls(work: Path, cluster_id: str, make_instance: Callable[..., str]) -> None:
    # A third of all attempts throttled. botocore's adaptive mode backs off (1 s base for throttles) and
    # slows its own send rate, so this test is slow by nature; one volume's lifecycle shows enough.
    storm = {**TRANSITIONS, "throttle_rate": 0.3, "seed": 5}
    srv = start_server(work, cluster=cluster_id, faults=storm)
    instance = make_instance()

    def lifecycle(i: int) -> None:
        with srv.client() as client:
            c = client.controller
            v = as_sidecars_do(lambda: client.create_volume(f"pvc-storm-{i}", GiB, zone=ZONE_A))
            as_sidecars_do(lambda: c.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
                volume_id=v.volume_id, node_id=instance, volume_capability=volume_capability())))
            as_sidecars_do(lambda: c.ControllerUnpublishVolume(csi_pb2.ControllerUnpublishVolumeRequest(
                volume_id=v.volume_id, node_id=instance)))
            as_sidecars_do(lambda: c.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=v.volume_id)))

    try:
        lifecycle(0)
        calls, requests, throttles = srv.calls(), srv.calls("requests"), srv.calls("throttles")
        print(f"\nthrottling storm: {sum(calls.values())} calls, {sum(requests.values())} requests, "
              f"{sum(throttles.values())} throttled: {dict(throttles)}")
        assert sum(throttles.values()) > 0
        assert sum(requests.values()) == sum(calls.values()) + sum(throttles.values())
        assert sum(requests.values()) <= 8 * sum(calls.values()), "retries are bounded by max_attempts"
        assert sum(calls.values()) <= 30, "throttling does not multiply the calls the driver makes"
    finally:
        srv.stop()


# -- credentials: the messages people need --------------------------------------------------------------
NO_STATIC_KEYS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}


def _refused(srv: AwsServer, code: grpc.StatusCode) -> tuple[str, str]:
    with srv.client() as client:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.identity.Probe(csi_pb2.ProbeRequest(), timeout=5)
                raise AssertionError("Probe should fail")
            except grpc.RpcError as exc:
                if exc.code() == code or time.monotonic() > deadline:
                    probe = exc.details() or ""
                    assert exc.code() == code, f"{exc.code()}: {probe}"
                    break
                time.sleep(0.1)  # the socket is not up yet
        create = expect_error(code, client.create_volume, f"pvc-{uuid.uuid4().hex[:8]}", GiB, zone=ZONE_A)
    return probe, create


def test_missing_credentials_say_how_to_give_them(work: Path, cluster_id: str) -> None:
    srv = start_server(work, cluster=cluster_id, env=NO_STATIC_KEYS, wait=False)
    try:
        probe, create = _refused(srv, grpc.StatusCode.UNAUTHENTICATED)
        for message in (probe, create):
            assert "no AWS credentials were found" in message and "eks.amazonaws.com/role-arn" in message
        assert create.startswith("CreateVolume (ec2:CreateVolume)")
    finally:
        srv.stop()


def test_seed_004_web_identity_failure(work: Path, cluster_id: str) -> None:
    token = work / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.test.token")
    oidc = "No OpenIDConnect provider found in your account for https://oidc.eks.ap-northeast-2.amazonaws.com/id/ABC"
    faults = {"errors": [{"operation": "AssumeRoleWithWebIdentity", "code": "InvalidIdentityToken", "message": oidc}]}
    env = {**NO_STATIC_KEYS, "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/AmazonEKS_EBS_CSI_DriverRole",
           "AWS_WEB_IDENTITY_TOKEN_FILE": str(token)}
    srv = start_server(work, cluster=cluster_id, env=env, faults=faults, wait=False)
    try:
        probe, create = _refused(srv, grpc.StatusCode.UNAUTHENTICATED)
        for message in (probe, create):
            assert oidc in message and "associate-iam-oidc-provider" in message
        assert "eyJhbGci" not in probe + create, "the token never appears in a message"
    finally:
        srv.stop()


def test_rejected_and_denied_credentials(work: Path, cluster_id: str) -> None:
    rejected = {"errors": [{"operation": "*", "code": "AuthFailure", "status": 401,
                            "message": "AWS was not able to validate the provided access credentials"}]}
    srv = start_server(work, cluster=cluster_id, faults=rejected, wait=False)
    try:
        probe, _ = _refused(srv, grpc.StatusCode.UNAUTHENTICATED)
        assert "AWS rejected the credentials" in probe
    finally:
        srv.stop()
    denied = {"errors": [{"operation": "CreateVolume", "code": "UnauthorizedOperation", "status": 403,
                          "message": "You are not authorized to perform this operation."}]}
    srv = start_server(work, cluster=cluster_id, faults=denied, wait=False)
    try:
        probe, create = _refused(srv, grpc.StatusCode.PERMISSION_DENIED)
        assert "ec2:CreateVolume" in probe and "ec2:CreateTags" in create
    finally:
        srv.stop()


# -- the spec's tables on the aws provider (issue 13, item 3; the local side: tests/integration/test_spec_tables.py)
def test_readonly_attach_is_dropped_as_the_ebs_driver_does(
    server: AwsServer, work: Path, disks: Disks, node: str, raw_ec2: Any
) -> None:
    """EBS has no read-only attachment: PUBLISH_READONLY is not offered, ControllerPublishVolume's
    readonly is ignored, and a blank volume published that way is formatted and staged read-write."""
    client = server.client()
    caps = client.controller.ControllerGetCapabilities(csi_pb2.ControllerGetCapabilitiesRequest()).capabilities
    offered = {c.rpc.type for c in caps}
    rpc = csi_pb2.ControllerServiceCapability.RPC
    assert rpc.PUBLISH_UNPUBLISH_VOLUME in offered and rpc.PUBLISH_READONLY not in offered
    vol = _vol(server, work, node, f"pvc-{uuid.uuid4().hex[:8]}", kind="xfs")
    vol.controller_publish(readonly=True)
    vol.controller_publish(readonly=False)  # the same attachment: no conflict to report
    assert [a["InstanceId"] for a in raw_ec2.describe_volumes(VolumeIds=[vol.id])["Volumes"][0]["Attachments"]] == [node]
    disks.attach(vol.id)
    vol.stage()
    vol.publish()
    staged = hostmount.find_by_target(vol.staging)
    assert staged is not None and not staged.read_only and hostfs.detect(disks.loops[vol.id]) == "xfs"
    vol.down()
    disks.detach(vol.id)
    vol.delete()


def test_node_calls_and_expansion_follow_the_spec_tables(server: AwsServer, work: Path, disks: Disks, node: str) -> None:
    client = server.client()
    vol = _vol(server, work, node, f"pvc-{uuid.uuid4().hex[:8]}", kind="xfs", size=2 * GiB)
    vol.controller_publish()
    disks.attach(vol.id, size_gib=2)
    vol.stage()
    vol.publish()
    stats = client.node.NodeGetVolumeStats
    expand = client.node.NodeExpandVolume
    for path, words in (("some/path", "not absolute"), ("/etc", "outside the allowed roots"),
                        (str(work / "kubelet" / "pods" / "nowhere"), "nothing is mounted")):
        for method, request in ((stats, csi_pb2.NodeGetVolumeStatsRequest(volume_id=vol.id, volume_path=path)),
                                (expand, csi_pb2.NodeExpandVolumeRequest(volume_id=vol.id, volume_path=path))):
            expect_error(grpc.StatusCode.NOT_FOUND, method, request, match=words)
    expect_error(grpc.StatusCode.NOT_FOUND, stats, csi_pb2.NodeGetVolumeStatsRequest(
        volume_id="vol-0123456789abcdef0", volume_path=str(vol.target)), match="is not at")
    assert stats(csi_pb2.NodeGetVolumeStatsRequest(volume_id=vol.id, volume_path=str(vol.target))).usage
    # A second stage that asks for another filesystem is ALREADY_EXISTS, as on the local provider.
    other = csi_pb2.NodeStageVolumeRequest(
        volume_id=vol.id, staging_target_path=str(vol.staging), volume_capability=volume_capability(fs_type="ext4"),
        publish_context=vol.publish_context)
    expect_error(grpc.StatusCode.ALREADY_EXISTS, client.node.NodeStageVolume, other, match="as xfs, not ext4")
    # ControllerExpandVolume to the current size or less: the current size.
    for asked in (GiB, 2 * GiB):
        resp = client.controller.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
            volume_id=vol.id, capacity_range=csi_pb2.CapacityRange(required_bytes=asked)))
        assert resp.capacity_bytes == 2 * GiB
    vol.down()
    disks.detach(vol.id)
    vol.delete()
