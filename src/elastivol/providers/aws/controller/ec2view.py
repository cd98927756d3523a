"""Reading EC2: batched lookups of volumes, snapshots and instances by id, and paginated listings."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from elastivol.errors import NotFound
from elastivol.providers.aws.awserrors import call
from elastivol.providers.aws.controller.batcher import Batcher
from elastivol.providers.aws.settings import AwsSettings

Obj = dict[str, Any]


class Ec2View:
    def __init__(self, ec2: Any, settings: AwsSettings) -> None:
        self.ec2 = ec2

        def batcher(name: str, fetch: Any) -> Batcher[Obj]:
            return Batcher(name, fetch, interval=settings.batch_interval, max_batch=settings.max_batch,
                           enabled=settings.batching)

        self.volumes = batcher("DescribeVolumes", self._fetch_volumes)
        self.snapshots = batcher("DescribeSnapshots", self._fetch_snapshots)
        self.instances = batcher("DescribeInstances", self._fetch_instances)

    # -- one object -------------------------------------------------------------------------
    def volume(self, volume_id: str) -> Obj | None:
        return self.volumes.get(volume_id)

    def snapshot(self, snapshot_id: str) -> Obj | None:
        return self.snapshots.get(snapshot_id)

    def instance(self, instance_id: str) -> Obj | None:
        return self.instances.get(instance_id)

    # -- batch fetches ----------------------------------------------------------------------
    def _fetch_volumes(self, ids: list[str]) -> dict[str, Obj]:
        return _by_id(ids, _VOLUME, lambda chunk: call(self.ec2, "DescribeVolumes", VolumeIds=chunk)["Volumes"],
                      "VolumeId")

    def _fetch_snapshots(self, ids: list[str]) -> dict[str, Obj]:
        return _by_id(ids, _SNAPSHOT,
                      lambda chunk: call(self.ec2, "DescribeSnapshots", SnapshotIds=chunk)["Snapshots"],
                      "SnapshotId")

    def _fetch_instances(self, ids: list[str]) -> dict[str, Obj]:
        def fetch(chunk: list[str]) -> list[Obj]:
            resp = call(self.ec2, "DescribeInstances", InstanceIds=chunk)
            return [i for r in resp.get("Reservations", []) for i in r.get("Instances", [])]

        return _by_id(ids, _INSTANCE, fetch, "InstanceId")

    # -- listings ---------------------------------------------------------------------------
    def pages(self, operation: str, key: str, **params: Any) -> Iterator[Obj]:
        """Every item of a paginated Describe call, following NextToken."""
        token = ""
        for _ in range(10_000):  # a bound, not a limit anyone reaches
            resp = call(self.ec2, operation, **params, **({"NextToken": token} if token else {}))
            yield from resp.get(key, [])
            token = resp.get("NextToken") or ""
            if not token:
                return


_VOLUME = re.compile(r"vol-[0-9a-f]+")
_SNAPSHOT = re.compile(r"snap-[0-9a-f]+")
_INSTANCE = re.compile(r"i-[0-9a-f]+")


def _by_id(ids: list[str], pattern: re.Pattern[str], fetch: Any, id_key: str) -> dict[str, Obj]:
    """Describe ``ids`` in one call; when EC2 refuses the call because some ids do not exist
    (``Invalid*.NotFound`` names them), drop those and ask again for the rest."""
    remaining = list(dict.fromkeys(ids))
    found: dict[str, Obj] = {}
    while remaining:
        try:
            items = fetch(remaining)
        except NotFound as exc:
            missing = set(pattern.findall(str(exc))) & set(remaining)
            # Naming every id of several says nothing (moto names them all when one is missing).
            if not missing or (len(remaining) > 1 and missing == set(remaining)):
                if len(remaining) == 1:
                    return found
                # EC2 did not say which ids: ask for each, so one missing id cannot hide the rest.
                for one in remaining:
                    found.update(_by_id([one], pattern, fetch, id_key))
                return found
            remaining = [r for r in remaining if r not in missing]
            continue
        for item in items:
            found[str(item[id_key])] = item
        return found
    return found
