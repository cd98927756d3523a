"""EBS snapshots: create idempotently by name tag, ready only when ``completed``, delete, list."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from elastivol.domain import Snapshot
from elastivol.errors import AlreadyExists, FailedPrecondition, Internal, NotFound, Unavailable
from elastivol.providers.aws.awserrors import call, call_delete, code_of
from elastivol.providers.aws.controller.ebs_model import CLUSTER_TAG, SNAPSHOT_NAME_TAG, tag_list, to_snapshot
from elastivol.providers.aws.controller.ec2view import Ec2View, Obj
from elastivol.providers.aws.controller.waits import poll
from elastivol.providers.aws.settings import AwsSettings

log = logging.getLogger("elastivol.aws.snapshots")


class Snapshots:
    PAGE = 1000  # DescribeSnapshots page size (EC2's largest)

    def __init__(self, ec2: Any, view: Ec2View, cluster_id: str, extra_tags: Mapping[str, str],
                 settings: AwsSettings | None = None) -> None:
        self.ec2 = ec2
        self.settings = settings or AwsSettings()
        self.view = view
        self.cluster_id = cluster_id
        self.extra_tags = dict(extra_tags)
        # name -> snapshot id for snapshots this process created: covers the seconds in which a
        # tag filter may not see a new snapshot yet (EC2 is eventually consistent).
        self._recent: dict[str, str] = {}
        self._lock = threading.Lock()

    def find_by_tag(self, key: str, value: str) -> Obj | None:
        found = list(self.view.pages(
            "DescribeSnapshots", "Snapshots", OwnerIds=["self"], Filters=[{"Name": f"tag:{key}", "Values": [value]}],
        ))
        # Prefer a usable one when a failed one lingers beside it.
        found.sort(key=lambda s: s.get("State") == "error")
        return found[0] if found else None

    def create(self, name: str, source_volume_id: str, tags: Mapping[str, str],
               extra: Mapping[str, str] | None = None) -> Snapshot:
        existing = self._existing(name)
        if existing is not None:
            if existing.get("VolumeId") != source_volume_id:
                raise AlreadyExists(
                    f"a snapshot named {name!r} already exists ({existing['SnapshotId']}) of volume "
                    f"{existing.get('VolumeId')}, not of {source_volume_id}; use another name"
                )
            return to_snapshot(existing)
        if self.view.volume(source_volume_id) is None:
            raise NotFound(f"source volume {source_volume_id} does not exist in EC2")
        all_tags = {**self.extra_tags, **tags, **(extra or {}), SNAPSHOT_NAME_TAG: name, CLUSTER_TAG: self.cluster_id}
        resp = call(
            self.ec2, "CreateSnapshot", VolumeId=source_volume_id,
            Description=f"Created by elastivol for {name}"[:255],
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(all_tags)}],
        )
        snapshot_id = str(resp["SnapshotId"])
        with self._lock:
            self._recent[name] = snapshot_id
        return to_snapshot(self._wait_visible(snapshot_id, resp))

    def _wait_visible(self, snapshot_id: str, created: Obj) -> Obj:
        """Return once DescribeSnapshots shows the new snapshot: EC2 is eventually consistent, and a
        CO that lists or gets a snapshot it was just told about must find it (read your writes)."""

        def slow() -> Unavailable:
            return Unavailable(
                f"snapshot {snapshot_id} was created but EC2 does not show it yet after "
                f"{self.settings.create_timeout:.0f}s; CreateSnapshot will be retried and find it by its name"
            )

        seen = poll(lambda: self.view.snapshot(snapshot_id), self.settings, timeout=self.settings.create_timeout,
                    on_timeout=slow)
        return seen or created

    def _existing(self, name: str) -> Obj | None:
        with self._lock:
            recent = self._recent.get(name)
        if recent is not None:
            found = self.view.snapshot(recent)
            if found is not None:
                return found
        found = self.find_by_tag(SNAPSHOT_NAME_TAG, name)
        if found is not None and found.get("State") == "error":
            self.delete(str(found["SnapshotId"]))
            raise Internal(
                f"snapshot {found['SnapshotId']} for {name!r} failed in EBS ({found.get('StateMessage', 'no reason given')}); "
                "it was deleted, and the next retry takes a new one"
            )
        return found

    def get(self, snapshot_id: str) -> Snapshot:
        found = self.view.snapshot(snapshot_id)
        if found is None:
            raise NotFound(f"snapshot {snapshot_id} does not exist in EC2")
        return to_snapshot(found)

    def delete(self, snapshot_id: str) -> None:
        try:
            call_delete(self.ec2, "DeleteSnapshot", SnapshotId=snapshot_id)
        except FailedPrecondition as exc:
            if code_of(exc) == "InvalidSnapshot.InUse":
                raise FailedPrecondition(
                    f"snapshot {snapshot_id} cannot be deleted while something uses it ({exc.message}); an AMI "
                    "registered from it must be deregistered first"
                ) from exc
            raise
        with self._lock:
            for name in [n for n, sid in self._recent.items() if sid == snapshot_id]:
                del self._recent[name]

    def list(self) -> list[Snapshot]:
        items = self.view.pages(
            "DescribeSnapshots", "Snapshots", OwnerIds=["self"], MaxResults=self.PAGE,
            Filters=[{"Name": f"tag:{CLUSTER_TAG}", "Values": [self.cluster_id]},
                     {"Name": "tag-key", "Values": [SNAPSHOT_NAME_TAG]}],
        )
        return [to_snapshot(s) for s in items]
