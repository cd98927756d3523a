"""ControllerModifyVolume on EBS: one ModifyVolume, waited for through batched DescribeVolumesModifications.

The change goes through the provider's ModifyCoalescer (modify.py), so a modification and an
expansion of the same volume that arrive together travel in one ModifyVolume. EC2 runs one
modification per volume at a time and then refuses the next for about six hours; both refusals
are turned into errors that say when the next change is possible, so that the user reading the
PVC's events knows whether to wait minutes or hours. A retry of a modification already under way
(the same targets) waits for it instead of sending another.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from elastivol.errors import Exhausted, FailedPrecondition, NotFound
from elastivol.params.block_modify import ModifyPlan
from elastivol.providers.aws.awserrors import call
from elastivol.providers.aws.controller import ebs_model as model
from elastivol.providers.aws.controller.batcher import Batcher
from elastivol.providers.aws.controller.ec2view import Obj
from elastivol.providers.aws.settings import AwsSettings
from elastivol.providers.block import Volume

if TYPE_CHECKING:
    from elastivol.providers.aws.controller.ebs import EbsProvider

log = logging.getLogger("elastivol.aws.ebs")

COOLDOWN = timedelta(hours=6)  # EC2: at least six hours between two modifications of a volume
IN_PROGRESS = ("modifying", "optimizing")
_VOLUME = re.compile(r"vol-[0-9a-f]+")


class Modifications:
    """The latest modification of each volume, many volumes per DescribeVolumesModifications call."""

    def __init__(self, ec2: Any, settings: AwsSettings) -> None:
        self.ec2 = ec2
        self.batcher: Batcher[Obj] = Batcher("DescribeVolumesModifications", self._fetch,
                                             interval=settings.batch_interval, max_batch=settings.max_batch,
                                             enabled=settings.batching)

    def latest(self, volume_id: str) -> Obj | None:
        return self.batcher.get(volume_id)

    def _fetch(self, ids: list[str]) -> dict[str, Obj]:
        remaining = list(dict.fromkeys(ids))
        while remaining:
            try:
                mods = call(self.ec2, "DescribeVolumesModifications", VolumeIds=remaining).get("VolumesModifications", [])
            except NotFound as exc:
                # A volume that does not exist (any more) fails the whole call: ask again without it.
                missing = set(_VOLUME.findall(str(exc))) & set(remaining)
                if not missing:
                    return {}
                remaining = [r for r in remaining if r not in missing]
                continue
            latest: dict[str, Obj] = {}
            for m in mods:
                vid = str(m.get("VolumeId", ""))
                if vid not in latest or _started(m) >= _started(latest[vid]):
                    latest[vid] = m
            return latest
        return {}


def _started(mod: Obj) -> datetime:
    stamp = mod.get("StartTime")
    return stamp if isinstance(stamp, datetime) else datetime.min.replace(tzinfo=UTC)


def _clock(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _wait_text(until: datetime) -> str:
    left = until - datetime.now(UTC)
    if left.total_seconds() <= 0:
        return "now"
    minutes = int(left.total_seconds() // 60) + 1
    return f"in about {minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"in about {minutes} min"


def next_change(mod: Obj | None) -> str:
    """When EC2 accepts the next modification of a volume whose latest modification is ``mod``."""
    if mod is None or not isinstance(mod.get("StartTime"), datetime):
        return "about 6 hours after the previous modification started"
    until = _started(mod) + COOLDOWN
    return (f"the previous modification started at {_clock(_started(mod))}, so the next change is possible from "
            f"about {_clock(until)} ({_wait_text(until)})")


def _targets(mod: Obj) -> dict[str, Any]:
    return {k: mod[f"Target{k}"] for k in ("VolumeType", "Iops", "Throughput") if mod.get(f"Target{k}") is not None}


def apply(provider: EbsProvider, volume_id: str, plan: ModifyPlan) -> Volume:
    v = provider._require(volume_id)
    want: dict[str, Any] = {"VolumeType": str(plan.params.volume_type),
                            **model.performance_fields(plan.params, plan.performance)}
    changes = {k: val for k, val in want.items() if v.get(k) != val}
    latest = provider.modifications.latest(volume_id)
    state = str(latest.get("ModificationState", "")) if latest else ""
    if changes and latest is not None and state in IN_PROGRESS:
        targets = _targets(latest)
        if any(targets.get(k) != val for k, val in changes.items()):
            raise FailedPrecondition(
                f"volume {volume_id} is already being modified (state {state}, {latest.get('Progress', 0)}% done, "
                f"towards {', '.join(f'{k} {val}' for k, val in targets.items()) or 'a new size'}); EBS runs one "
                f"modification at a time and {next_change(latest)}; the change will be retried"
            )
        changes = {}  # our own modification, under way: wait for it
    if changes:
        try:
            provider._modify(volume_id, changes)
        except FailedPrecondition as exc:  # EC2 saw a modification in progress that our look missed
            raise FailedPrecondition(f"{exc.message}; {next_change(provider.modifications.latest(volume_id))}") from exc
        except Exhausted as exc:
            raise Exhausted(
                f"EBS refuses to modify volume {volume_id} again yet (VolumeModificationRateExceeded: at least 6 hours "
                f"must pass between two modifications of a volume); "
                f"{next_change(provider.modifications.latest(volume_id))}. The change will be retried until then"
            ) from exc
        log.info("volume %s: ModifyVolume %s", volume_id, changes)
    if changes or state in IN_PROGRESS:
        provider._wait_modified(volume_id, 0)
    _tag(provider, volume_id, v, plan)
    return model.to_volume(provider._require(volume_id))


def _tag(provider: EbsProvider, volume_id: str, v: Obj, plan: ModifyPlan) -> None:
    """New tagSpecification tags, and the iopsPerGB tag that keeps IOPS following the size on expansion."""
    tags = model.tags_of(v)
    add = {k: val for k, val in plan.new_tags.items() if tags.get(k) != val}
    per_gb = plan.params.iops_per_gb
    if per_gb is not None and tags.get(model.IOPS_PER_GB_TAG) != str(per_gb):
        add[model.IOPS_PER_GB_TAG] = str(per_gb)
    if add:
        call(provider.ec2, "CreateTags", Resources=[volume_id], Tags=model.tag_list(add))
    if per_gb is None and model.IOPS_PER_GB_TAG in tags:
        call(provider.ec2, "DeleteTags", Resources=[volume_id], Tags=[{"Key": model.IOPS_PER_GB_TAG}])
