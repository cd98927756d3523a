"""Volume group snapshots on EBS: one EC2 CreateSnapshots call, one crash-consistent set.

EC2 cuts a crash-consistent set of snapshots only of the EBS volumes attached to one instance
(CreateSnapshots with an InstanceSpecification); the member set is chosen by excluding the boot
volume and the instance's other data volumes. Volumes that are not attached, or attached to
different instances, cannot be cut together: such a group is refused with FAILED_PRECONDITION
rather than made of separate snapshots taken at different instants.

EBS has no group object. Every member is tagged with the group's id and name (and the usual
cluster and snapshot-name tags, so ListSnapshots shows it), and the group is whatever
DescribeSnapshots finds with that tag: a restarted controller recovers groups from AWS alone.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from elastivol import ids
from elastivol.errors import AlreadyExists, FailedPrecondition, Internal, NotFound, Unavailable
from elastivol.providers.aws.awserrors import call
from elastivol.providers.aws.controller.ebs import EbsProvider
from elastivol.providers.aws.controller.ebs_model import (
    CLUSTER_TAG,
    SNAPSHOT_NAME_TAG,
    tag_list,
    tags_of,
    to_snapshot,
)
from elastivol.providers.aws.controller.ec2view import Obj
from elastivol.providers.aws.controller.waits import poll
from elastivol.providers.groups import GROUP_TAG, GroupSnapshot

log = logging.getLogger("elastivol.aws.groups")

GROUP_NAME_TAG = "elastivol.io/group-snapshot-name"
# EBS attachment states in which the volume belongs to the instance for CreateSnapshots.
ATTACHED = ("attaching", "attached")


class EbsGroupSnapshots:
    def __init__(self, ebs: EbsProvider) -> None:
        self.ec2 = ebs.ec2
        self.view = ebs.view
        self.snaps = ebs.snaps
        self.settings = ebs.settings
        self.cluster_id = ebs.cluster_id
        self.extra_tags = dict(ebs.extra_tags)
        # name -> group id made by this process: DescribeSnapshots may not show new tags at once.
        self._recent: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------------
    def _tagged(self, key: str, value: str) -> list[Obj]:
        return list(self.view.pages(
            "DescribeSnapshots", "Snapshots", OwnerIds=["self"],
            Filters=[{"Name": f"tag:{key}", "Values": [value]}, {"Name": f"tag:{CLUSTER_TAG}", "Values": [self.cluster_id]}],
        ))

    @staticmethod
    def _group(members: list[Obj]) -> GroupSnapshot:
        snapshots = sorted((to_snapshot(m) for m in members), key=lambda s: s.source_volume_id)
        tags = tags_of(members[0])
        return GroupSnapshot(
            id=tags[GROUP_TAG],
            name=tags.get(GROUP_NAME_TAG, ""),
            source_volume_ids=tuple(s.source_volume_id for s in snapshots),
            snapshots=tuple(snapshots),
            created_at=min(s.created_at for s in snapshots),
            # EBS snapshots are cut at once and copied to S3 afterwards: ready once all completed.
            ready=all(s.ready for s in snapshots),
        )

    def get_group_snapshot(self, group_snapshot_id: str) -> GroupSnapshot:
        members = self._tagged(GROUP_TAG, group_snapshot_id) if ids.is_group_snapshot_id(group_snapshot_id) else []
        if not members:
            raise NotFound(f"group snapshot {group_snapshot_id} does not exist (no EBS snapshot is tagged {GROUP_TAG}={group_snapshot_id})")
        return self._group(members)

    def _existing(self, name: str) -> list[Obj]:
        with self._lock:
            recent = self._recent.get(name)
        if recent is not None:
            members = self._tagged(GROUP_TAG, recent)
            if members:
                return members
        return self._tagged(GROUP_NAME_TAG, name)

    # -- creating ------------------------------------------------------------------------------
    def create_group_snapshot(self, name: str, source_volume_ids: list[str], tags: dict[str, str]) -> GroupSnapshot:
        existing = self._existing(name)
        if existing:
            have = sorted(str(m.get("VolumeId", "")) for m in existing)
            if have != sorted(source_volume_ids):
                raise AlreadyExists(
                    f"a group snapshot named {name!r} already exists ({tags_of(existing[0]).get(GROUP_TAG)}) of volumes "
                    f"{', '.join(have)}, not of {', '.join(sorted(source_volume_ids))}; use another name"
                )
            return self._group(existing)
        instance_id = self._one_instance(source_volume_ids)
        spec = self._instance_spec(instance_id, source_volume_ids)
        group_id = ids.new_id("vgs")
        all_tags = {**self.extra_tags, **tags, GROUP_TAG: group_id, GROUP_NAME_TAG: name,
                    SNAPSHOT_NAME_TAG: name, CLUSTER_TAG: self.cluster_id}
        resp = call(
            self.ec2, "CreateSnapshots", InstanceSpecification=spec,
            Description=f"Created by elastivol for group {name}"[:255],
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(all_tags)}],
        )
        made = {str(s["VolumeId"]): str(s["SnapshotId"]) for s in resp.get("Snapshots", [])}
        # EC2 honours ExcludeDataVolumeIds; an endpoint that does not (moto) returns more: drop the extras.
        for volume_id, snapshot_id in made.items():
            if volume_id not in source_volume_ids:
                log.warning("CreateSnapshots also cut %s of %s, which is not in group %s: deleting it",
                            snapshot_id, volume_id, name)
                self.snaps.delete(snapshot_id)
        missing = [v for v in source_volume_ids if v not in made]
        if missing:
            for volume_id in source_volume_ids:
                if volume_id in made:
                    self.snaps.delete(made[volume_id])
            raise Internal(
                f"EC2 CreateSnapshots on {instance_id} returned no snapshot of {', '.join(missing)}; the others were "
                "deleted: check that the volumes are still attached there, then retry"
            )
        with self._lock:
            self._recent[name] = group_id
        log.info("group snapshot %s (%s): one CreateSnapshots on %s cut %s", group_id, name, instance_id,
                 ", ".join(f"{v}->{made[v]}" for v in source_volume_ids))
        return self._wait_visible(group_id, len(source_volume_ids))

    def _one_instance(self, volume_ids: list[str]) -> str:
        """The one instance every member is attached to, or a refusal that says what to do."""
        where: dict[str, str] = {}
        unattached: list[str] = []
        # Asked together, so that the batcher makes one DescribeVolumes of them all.
        with ThreadPoolExecutor(max_workers=min(len(volume_ids), 16), thread_name_prefix="describe") as pool:
            volumes = list(pool.map(self.view.volume, volume_ids))
        for volume_id, volume in zip(volume_ids, volumes, strict=True):
            if volume is None:
                raise NotFound(f"source volume {volume_id} does not exist in EC2")
            on = sorted({str(a["InstanceId"]) for a in volume.get("Attachments", []) if a.get("State") in ATTACHED})
            if len(on) == 1:
                where[volume_id] = on[0]
            elif not on:
                unattached.append(volume_id)
            else:  # multi-attach io2: several instances write it; none can freeze the set alone
                where[volume_id] = "+".join(on)
        instances = sorted(set(where.values()))
        if unattached or len(instances) != 1:
            parts = []
            if unattached:
                parts.append(f"not attached to any instance: {', '.join(unattached)}")
            if len(instances) > 1:
                by_instance = {i: sorted(v for v, at in where.items() if at == i) for i in instances}
                parts.append("attached to different instances: " + "; ".join(
                    f"{i} has {', '.join(v)}" for i, v in by_instance.items()))
            raise FailedPrecondition(
                "EBS can cut a crash-consistent set of snapshots only of volumes attached to one instance "
                f"(EC2 CreateSnapshots), and these are not: {'; '.join(parts)}. Run the pods that use these "
                "volumes on one node (so the volumes attach to one instance), or snapshot them one by one "
                "with VolumeSnapshots, knowing those are not taken at one instant"
            )
        return instances[0]

    def _instance_spec(self, instance_id: str, members: list[str]) -> dict[str, Any]:
        instance = self.view.instance(instance_id)
        if instance is None:
            raise NotFound(f"instance {instance_id}, to which the volumes are attached, does not exist in EC2")
        root = instance.get("RootDeviceName", "")
        boot = ""
        others = []
        for mapping in instance.get("BlockDeviceMappings", []):
            volume_id = str(mapping.get("Ebs", {}).get("VolumeId", ""))
            if mapping.get("DeviceName") == root:
                boot = volume_id
            elif volume_id and volume_id not in members:
                others.append(volume_id)
        spec: dict[str, Any] = {"InstanceId": instance_id, "ExcludeBootVolume": boot not in members}
        if others:
            spec["ExcludeDataVolumeIds"] = sorted(others)
        return spec

    def _wait_visible(self, group_id: str, count: int) -> GroupSnapshot:
        """Once DescribeSnapshots shows every member by its group tag (EC2 is eventually consistent)."""

        def seen() -> GroupSnapshot | None:
            members = self._tagged(GROUP_TAG, group_id)
            return self._group(members) if len(members) == count else None

        def slow() -> Unavailable:
            return Unavailable(
                f"group snapshot {group_id} was cut but EC2 does not show all {count} members yet after "
                f"{self.settings.create_timeout:.0f}s; the CO's retry finds it by its name"
            )

        return poll(seen, self.settings, timeout=self.settings.create_timeout, on_timeout=slow)

    # -- deleting ------------------------------------------------------------------------------
    def delete_group_snapshot(self, group_snapshot_id: str) -> None:
        if not ids.is_group_snapshot_id(group_snapshot_id):
            return
        for member in self._tagged(GROUP_TAG, group_snapshot_id):
            self.snaps.delete(str(member["SnapshotId"]))
        with self._lock:
            for name in [n for n, g in self._recent.items() if g == group_snapshot_id]:
                del self._recent[name]
