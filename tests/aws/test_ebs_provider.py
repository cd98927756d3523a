"""The EBS provider against moto and the fault layer, in process (the gRPC path is in test_block_grpc)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from elastivol.domain import ContentSource, VolumeMode
from elastivol.errors import (
    AlreadyExists,
    Exhausted,
    Internal,
    InUse,
    NotFound,
    OutOfRange,
    PermissionDenied,
    Unavailable,
)
from elastivol.params.block import parse_block_parameters
from elastivol.providers.aws.controller.ebs import EbsProvider
from elastivol.providers.aws.controller.ebs_model import CLONE_SOURCE_TAG, CLUSTER_TAG, NAME_TAG
from elastivol.providers.block import VolumeSpec
from elastivol.units import GiB
from tests.aws.support import ZONE_A, ZONE_B, Moto, make_clients
from tests.support.aws_faults import FaultConfig

Instance = Callable[..., str]


def provider(cluster: str, config: FaultConfig | None = None, **settings: Any) -> EbsProvider:
    clients, _, _ = make_clients(config or FaultConfig(), **settings)
    return EbsProvider(clients, clients.settings, cluster_id=cluster, zones=[ZONE_A, ZONE_B])


def spec(name: str, gib: int = 1, source: ContentSource | None = None, **params: str) -> VolumeSpec:
    return VolumeSpec(name=name, size_bytes=gib * GiB, zone=ZONE_A, params=parse_block_parameters(params),
                      mode=VolumeMode.FILESYSTEM, fs_type="ext4", source=source)


def tags(raw_ec2: Any, volume_id: str) -> dict[str, str]:
    v = raw_ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    return {t["Key"]: t["Value"] for t in v.get("Tags", [])}


def test_create_waits_through_lag_and_creating_and_is_idempotent(cluster: str, moto: Moto, raw_ec2: Any) -> None:
    ebs = provider(cluster, FaultConfig(consistency_lag=2, creating_polls=3))
    mark = moto.mark()
    first = ebs.create_volume(spec("pvc-idem", 2))
    again = ebs.create_volume(spec("pvc-idem", 2))
    assert first.id == again.id and first.size_bytes == 2 * GiB and first.zone == ZONE_A
    assert moto.counts(mark)["CreateVolume"] == 1, "the retry must be answered by the ClientToken"
    assert tags(raw_ec2, first.id)[NAME_TAG] == "pvc-idem" and tags(raw_ec2, first.id)[CLUSTER_TAG] == cluster
    with pytest.raises(AlreadyExists, match="IdempotentParameterMismatch"):
        ebs.create_volume(spec("pvc-idem", 3))


def test_failed_async_creation_is_reported_and_cleaned_up(cluster: str, raw_ec2: Any) -> None:
    ebs = provider(cluster, FaultConfig(fail_encrypted_creation=True, creating_polls=1))
    key = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    with pytest.raises(Internal) as info:
        ebs.create_volume(spec("pvc-kms", 1, encrypted="true", kmsKeyId=key))
    message = info.value.message
    assert key in message and "kms:CreateGrant" in message and "deleted" in message
    left = raw_ec2.describe_volumes(Filters=[{"Name": "tag:CSIVolumeName", "Values": ["pvc-kms"]}])["Volumes"]
    assert left == [], "no half-made volume may stay behind"


def test_attach_detach_with_transitions_and_name_reuse(cluster: str, make_instance: Instance) -> None:
    ebs = provider(cluster, FaultConfig(attaching_polls=2, detaching_polls=2))
    node = make_instance()
    a = ebs.create_volume(spec("pvc-att-a"))
    b = ebs.create_volume(spec("pvc-att-b"))
    assert ebs.attach(a.id, node, False) == {"devicePath": "/dev/xvdaa"}
    assert ebs.attach(a.id, node, False) == {"devicePath": "/dev/xvdaa"}  # idempotent
    assert ebs.attach(b.id, node, False) == {"devicePath": "/dev/xvdab"}
    assert ebs.get_volume(a.id).attached_nodes == [node]
    ebs.detach(a.id, node)
    ebs.detach(a.id, node)  # already gone: fine
    assert ebs.get_volume(a.id).attached_nodes == []
    c = ebs.create_volume(spec("pvc-att-c"))
    assert ebs.attach(c.id, node, False) == {"devicePath": "/dev/xvdaa"}, "a freed name is reused"


def test_concurrent_attaches_never_share_a_device_name(cluster: str, make_instance: Instance) -> None:
    ebs = provider(cluster, FaultConfig(attaching_polls=1, latency_ms=5))
    node = make_instance()
    volumes = [ebs.create_volume(spec(f"pvc-par-{i}")) for i in range(8)]
    got: dict[str, str] = {}

    def attach(vid: str) -> None:
        got[vid] = ebs.attach(vid, node, False)["devicePath"]

    threads = [threading.Thread(target=attach, args=(v.id,)) for v in volumes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got.values())) == len(volumes)


def test_stuck_attachment_is_reported(cluster: str, make_instance: Instance) -> None:
    ebs = provider(cluster, FaultConfig(attach_stuck=True), attach_timeout=0.5)
    node = make_instance()
    v = ebs.create_volume(spec("pvc-stuck"))
    with pytest.raises(Unavailable) as info:
        ebs.attach(v.id, node, False)
    assert "'attaching'" in info.value.message and "ebs-stuck-attaching" in info.value.message


def test_conflicts_limits_and_delete_while_attached(cluster: str, make_instance: Instance) -> None:
    ebs = provider(cluster, FaultConfig(attachment_limit=2))
    node, other = make_instance(), make_instance(zone=ZONE_A)
    v = ebs.create_volume(spec("pvc-conf"))
    ebs.attach(v.id, node, False)
    with pytest.raises(InUse) as info:
        ebs.attach(v.id, other, False)
    assert info.value.node == node
    with pytest.raises(InUse) as deleting:
        ebs.delete_volume(v.id)
    assert node in deleting.value.message and "volumeattachment" in deleting.value.message
    w = ebs.create_volume(spec("pvc-full"))
    with pytest.raises(Exhausted, match="attachment slot"):
        ebs.attach(w.id, node, False)  # root volume + one = the limit of 2
    ebs.detach(v.id, node)
    ebs.delete_volume(v.id)
    ebs.delete_volume(v.id)  # NotFound counts as success
    with pytest.raises(NotFound):
        ebs.get_volume(v.id)


def test_zone_mismatch_is_refused(cluster: str, make_instance: Instance) -> None:
    ebs = provider(cluster)
    v = ebs.create_volume(spec("pvc-zone"))
    with pytest.raises(Exception, match="zone"):
        ebs.attach(v.id, make_instance(zone=ZONE_B), False)


def test_snapshots_restore_and_clone(cluster: str, raw_ec2: Any, moto: Moto) -> None:
    # Three pending polls: CreateSnapshot itself describes the new snapshot once (it returns only
    # when EC2 shows it), the second create finds it, and the first get still sees it pending.
    ebs = provider(cluster, FaultConfig(snapshot_pending_polls=3))
    ebs.snaps.PAGE = 2
    src = ebs.create_volume(spec("pvc-src", 2))
    snap = ebs.create_snapshot("snapshot-1", src.id, {"team": "storage"})
    assert not snap.ready
    assert ebs.create_snapshot("snapshot-1", src.id, {}).id == snap.id  # found again, not a second one
    states = [ebs.get_snapshot(snap.id).ready for _ in range(3)]
    assert states[-1] and not states[0]
    with pytest.raises(AlreadyExists):
        ebs.create_snapshot("snapshot-1", ebs.create_volume(spec("pvc-other")).id, {})
    for i in range(3):
        ebs.create_snapshot(f"snapshot-page-{i}", src.id, {})
    mark = moto.mark()
    listed = {s.name for s in ebs.list_snapshots()}
    assert {"snapshot-1", "snapshot-page-0", "snapshot-page-1", "snapshot-page-2"} <= listed
    assert moto.counts(mark)["DescribeSnapshots"] >= 2, "ListSnapshots follows NextToken"
    with pytest.raises(OutOfRange):
        ebs.create_volume(spec("pvc-small", 1, ContentSource("snapshot", snap.id)))
    restored = ebs.create_volume(spec("pvc-restored", 2, ContentSource("snapshot", snap.id)))
    assert restored.source == ContentSource("snapshot", snap.id)
    clone = ebs.create_volume(spec("pvc-clone", 2, ContentSource("volume", src.id)))
    assert clone.source == ContentSource("volume", src.id) and tags(raw_ec2, clone.id)[CLONE_SOURCE_TAG] == src.id
    temp = raw_ec2.describe_snapshots(Filters=[{"Name": "tag:elastivol.io/clone-for", "Values": ["pvc-clone"]}])
    assert temp["Snapshots"] == [], "the clone's temporary snapshot is deleted"
    ebs.delete_snapshot(snap.id)
    ebs.delete_snapshot(snap.id)


def test_a_new_snapshot_is_found_at_once_despite_eventual_consistency(
    cluster: str, aws_env: dict[str, str]
) -> None:
    """EC2 hides a new snapshot from a few Describe calls; CreateSnapshot returns only once it is
    shown, so a CO that lists or gets it right after creating it finds it."""
    ebs = provider(cluster, FaultConfig(consistency_lag=3))
    src = ebs.create_volume(spec("pvc-lagged", 1))
    snap = ebs.create_snapshot("snapshot-lagged", src.id, {})
    assert ebs.get_snapshot(snap.id).id == snap.id
    assert snap.id in {s.id for s in ebs.list_snapshots()}
    ebs.delete_snapshot(snap.id)


def test_expand_and_modify_within_a_window_are_one_modify_volume(cluster: str, moto: Moto) -> None:
    ebs = provider(cluster, FaultConfig(modifying_polls=2, optimizing_polls=1), modify_window=0.3)
    v = ebs.create_volume(spec("pvc-grow", 10, type="gp3"))
    mark = moto.mark()
    results: dict[str, Any] = {}
    grow = threading.Thread(target=lambda: results.update(grown=ebs.expand_volume(v.id, 20 * GiB)))
    tune = threading.Thread(target=lambda: results.update(tuned=ebs.modify_volume(v.id, iops=6000, throughput=250)))
    grow.start()
    tune.start()
    grow.join()
    tune.join()
    modifies = [r for r in moto.requests(mark) if r.action == "ModifyVolume"]
    assert len(modifies) == 1
    assert modifies[0].params["Size"] == "20" and modifies[0].params["Iops"] == "6000"
    assert results["grown"].size_bytes == 20 * GiB
    assert ebs.expand_volume(v.id, 20 * GiB).size_bytes == 20 * GiB  # a retry is a no-op


def test_expand_recomputes_iops_per_gb_in_the_same_call(cluster: str, moto: Moto) -> None:
    ebs = provider(cluster)
    v = ebs.create_volume(spec("pvc-iopsgb", 10, type="io2", iopsPerGB="50"))
    mark = moto.mark()
    ebs.expand_volume(v.id, 30 * GiB)
    (modify,) = [r for r in moto.requests(mark) if r.action == "ModifyVolume"]
    assert modify.params["Size"] == "30" and modify.params["Iops"] == "1500"


def test_probe_is_a_dry_run_and_explains_missing_permissions(cluster: str) -> None:
    assert provider(cluster).health().ready
    denied = {"operation": "CreateVolume", "code": "UnauthorizedOperation", "status": 403,
              "message": "You are not authorized to perform this operation."}
    with pytest.raises(PermissionDenied) as info:
        provider(cluster, FaultConfig(errors=[denied])).health()
    assert "ec2:CreateVolume" in info.value.message and "eks.amazonaws.com/role-arn" in info.value.message


def test_concurrent_attaches_stop_at_the_node_limit(cluster: str, make_instance: Instance, raw_ec2: Any) -> None:
    # Slow attaches (two 'attaching' polls each) keep the claims in flight while the others ask.
    clients, _, _ = make_clients(FaultConfig(attaching_polls=2))
    limit, calls = 3, 12
    ebs = EbsProvider(clients, clients.settings, cluster_id=cluster, zones=[ZONE_A, ZONE_B],
                      max_volumes_per_node=limit)
    node = make_instance()
    volumes = [ebs.create_volume(spec(f"pvc-slot-{i}")).id for i in range(calls)]
    barrier = threading.Barrier(calls)
    outcome: dict[str, str] = {}

    def attach(volume_id: str) -> None:
        barrier.wait()
        try:
            ebs.attach(volume_id, node, False)
            outcome[volume_id] = "ok"
        except Exhausted as exc:
            outcome[volume_id] = "exhausted" if "at most 3" in exc.message else f"other: {exc.message}"
        except Exception as exc:  # any other failure is reported by the assertion below
            outcome[volume_id] = f"other: {exc!r}"

    threads = [threading.Thread(target=attach, args=(v,)) for v in volumes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(outcome.values()) == ["exhausted"] * (calls - limit) + ["ok"] * limit, outcome
    attached = raw_ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [node]}])["Volumes"]
    ours = sorted(v["VolumeId"] for v in attached if v["VolumeId"] in outcome)  # not the root volume
    assert ours == sorted(v for v, o in outcome.items() if o == "ok")
    # A slot freed by a detach is free again; the same call that was refused now succeeds.
    refused = next(v for v, o in outcome.items() if o == "exhausted")
    ebs.detach(next(v for v, o in outcome.items() if o == "ok"), node)
    assert ebs.attach(refused, node, False)["devicePath"].startswith("/dev/xvd")
    for v in volumes:
        ebs.detach(v, node)
        ebs.delete_volume(v)
