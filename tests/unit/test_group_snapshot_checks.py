"""The GroupController's member check and its freeze-window metric, without a server."""

from __future__ import annotations

import pytest

from elastivol.domain import Snapshot
from elastivol.drivers.block.group import check_members, freeze_observer
from elastivol.errors import InvalidArgument
from elastivol.metrics import Metrics
from elastivol.providers.groups import GroupSnapshot


def _group(found: list[str], recorded: list[str]) -> GroupSnapshot:
    snaps = tuple(Snapshot(id=i, name=i, source_volume_id=f"vol-{n}", size_bytes=1, created_at=0.0)
                  for n, i in enumerate(found))
    return GroupSnapshot(id="vgs-0123456789abcdef0", name="g", source_volume_ids=(), snapshots=snaps,
                         created_at=0.0, ready=True, recorded_ids=tuple(recorded))


def test_recorded_members_must_be_named_exactly() -> None:
    group = _group(["snap-a", "snap-b"], ["snap-a", "snap-b"])
    check_members(group, ["snap-b", "snap-a"])
    check_members(group, ["snap-b", "snap-a", "snap-a"])  # a repeat names no other snapshot
    for wrong in (["snap-a"], ["snap-a", "snap-b", "snap-c"], ["snap-c", "snap-d"]):
        with pytest.raises(InvalidArgument, match="not the members"):
            check_members(group, wrong)
    with pytest.raises(InvalidArgument, match="snapshot_ids is required"):
        check_members(group, [])
    # One member deleted on its own: the record still names it, so the full list is right.
    gone = _group(["snap-b"], ["snap-a", "snap-b"])
    check_members(gone, ["snap-a", "snap-b"])
    with pytest.raises(InvalidArgument):
        check_members(gone, ["snap-b"])


def test_found_members_must_all_be_named() -> None:
    group = _group(["snap-a", "snap-b"], [])  # EBS: the group is what the tags find
    check_members(group, ["snap-a", "snap-b"])
    check_members(group, ["snap-a", "snap-b", "snap-gone"])
    with pytest.raises(InvalidArgument, match="snap-a, snap-b"):
        check_members(group, ["snap-a"])


def test_freeze_window_metric() -> None:
    metrics = Metrics("block.csi.elastivol.io")
    observe = freeze_observer(metrics)
    observe(0.05, 2)
    observe(0.08, 8)
    registry = metrics.registry
    assert registry.get_sample_value("elastivol_group_snapshot_freeze_seconds_count",
                                     {"driver": "block.csi.elastivol.io"}) == 2
    assert registry.get_sample_value("elastivol_group_snapshot_freeze_seconds_sum",
                                     {"driver": "block.csi.elastivol.io"}) == pytest.approx(0.13)
    assert registry.get_sample_value("elastivol_group_snapshot_frozen_filesystems",
                                     {"driver": "block.csi.elastivol.io"}) == 8
