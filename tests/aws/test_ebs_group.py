"""Volume group snapshots on EBS (one EC2 CreateSnapshots per group), against moto, in process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from elastivol.domain import ContentSource
from elastivol.errors import AlreadyExists, FailedPrecondition, NotFound
from elastivol.providers.aws.controller.ebs_group import GROUP_NAME_TAG, EbsGroupSnapshots
from elastivol.providers.groups import GROUP_TAG
from tests.aws.support import ZONE_A, Moto
from tests.aws.test_ebs_provider import provider, spec
from tests.support.aws_faults import FaultConfig

Instance = Callable[..., str]


def test_group_of_volumes_on_one_instance(cluster: str, moto: Moto, raw_ec2: Any, make_instance: Instance) -> None:
    ebs = provider(cluster, FaultConfig(attaching_polls=1))
    groups = EbsGroupSnapshots(ebs)
    node = make_instance()
    data, wal, other = (ebs.create_volume(spec(f"pvc-{n}")) for n in ("data", "wal", "other"))
    for vol in (data, wal, other):
        ebs.attach(vol.id, node, False)

    mark = moto.mark()
    group = groups.create_group_snapshot("vgs-db", [data.id, wal.id], {"team": "db"})
    calls = moto.counts(mark)
    assert calls["CreateSnapshots"] == 1 and calls["CreateSnapshot"] == 0, calls
    sent = next(r for r in moto.requests(mark) if r.action == "CreateSnapshots")
    # Only the members: the boot volume and the instance's other data volume are excluded.
    assert sent.params["InstanceSpecification.InstanceId"] == node
    assert sent.params["InstanceSpecification.ExcludeBootVolume"] == "true"
    assert sent.params["InstanceSpecification.ExcludeDataVolumeId.1"] == other.id, sent.params
    assert group.id.startswith("vgs-") and sorted(group.source_volume_ids) == sorted([data.id, wal.id])
    assert {s.group_snapshot_id for s in group.snapshots} == {group.id}
    # moto ignores ExcludeDataVolumeIds; whatever it cut of `other` was deleted again.
    left = raw_ec2.describe_snapshots(Filters=[{"Name": f"tag:{GROUP_TAG}", "Values": [group.id]}])["Snapshots"]
    assert sorted(s["VolumeId"] for s in left) == sorted([data.id, wal.id])
    assert {t["Key"]: t["Value"] for t in left[0]["Tags"]}["team"] == "db"
    assert not [s for s in raw_ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"] if s["VolumeId"] == other.id]

    # Idempotent by name, found again from AWS alone (a restarted controller has no memory).
    fresh = EbsGroupSnapshots(provider(cluster))
    again = fresh.create_group_snapshot("vgs-db", [wal.id, data.id], {"team": "db"})
    assert again.id == group.id and sorted(again.snapshot_ids) == sorted(group.snapshot_ids)
    with pytest.raises(AlreadyExists, match="vgs-db"):
        fresh.create_group_snapshot("vgs-db", [data.id], {})
    got = fresh.get_group_snapshot(group.id)
    assert got.name == "vgs-db" and got.ready and sorted(got.snapshot_ids) == sorted(group.snapshot_ids)
    # Members are ordinary snapshots: listed with their group, restorable.
    listed = {s.id: s for s in ebs.list_snapshots()}
    assert all(listed[i].group_snapshot_id == group.id for i in group.snapshot_ids)
    member = next(s for s in group.snapshots if s.source_volume_id == data.id)
    restored = ebs.create_volume(spec("pvc-data-restored", source=ContentSource("snapshot", member.id)))
    assert restored.source == ContentSource("snapshot", member.id)

    fresh.delete_group_snapshot(group.id)
    fresh.delete_group_snapshot(group.id)
    with pytest.raises(NotFound):
        fresh.get_group_snapshot(group.id)
    assert raw_ec2.describe_snapshots(Filters=[{"Name": f"tag:{GROUP_NAME_TAG}", "Values": ["vgs-db"]}])["Snapshots"] == []
    ebs.delete_volume(restored.id)
    for vol in (data, wal, other):
        ebs.detach(vol.id, node)
        ebs.delete_volume(vol.id)


def test_group_across_instances_or_unattached_is_refused(cluster: str, moto: Moto, make_instance: Instance) -> None:
    ebs = provider(cluster, FaultConfig(attaching_polls=1))
    groups = EbsGroupSnapshots(ebs)
    node_a, node_b = make_instance(ZONE_A), make_instance(ZONE_A)
    a, b, loose = (ebs.create_volume(spec(f"pvc-x{n}")) for n in ("a", "b", "loose"))
    ebs.attach(a.id, node_a, False)
    ebs.attach(b.id, node_b, False)
    mark = moto.mark()
    with pytest.raises(FailedPrecondition) as info:
        groups.create_group_snapshot("vgs-split", [a.id, b.id, loose.id], {})
    message = info.value.message
    assert f"{node_a} has {a.id}" in message and f"{node_b} has {b.id}" in message
    assert f"not attached to any instance: {loose.id}" in message and "one node" in message
    assert moto.counts(mark)["CreateSnapshots"] == 0, "nothing may be cut of a group that is refused"
    with pytest.raises(NotFound, match="vol-0123456789abcdef0"):
        groups.create_group_snapshot("vgs-ghost", [a.id, "vol-0123456789abcdef0"], {})
    for vol, node in ((a, node_a), (b, node_b)):
        ebs.detach(vol.id, node)
    for vol in (a, b, loose):
        ebs.delete_volume(vol.id)
