"""VolumeAttributesClass parameters against a volume's current record (params/block_modify.py)."""

from __future__ import annotations

import pytest

from elastivol.errors import InvalidParameter
from elastivol.params.block import VolumeType
from elastivol.params.block_modify import parse_mutable, plan


def _plan(current: dict[str, str], size_gib: int, **mutable: str):  # type: ignore[no-untyped-def]
    return plan(current, size_gib, parse_mutable(mutable, current))


def test_keys_are_case_insensitive_and_unknown_ones_are_named() -> None:
    assert parse_mutable({"Type": "io2", "IOPS": "300"}).volume_type is VolumeType.IO2
    with pytest.raises(InvalidParameter) as info:
        parse_mutable({"type": "gp3", "fsType": "xfs"})
    assert info.value.key == "fsType" and "'fsType'" in info.value.message


def test_leaving_gp3_drops_its_throughput_and_io2_to_gp3_keeps_the_iops() -> None:
    p = _plan({"type": "gp3", "throughput": "250", "iops": "4000"}, 100, type="io2")
    assert (p.params.volume_type, p.params.iops, p.params.throughput) == (VolumeType.IO2, 4000, None)
    back = _plan(p.record, 100, type="gp3")
    assert (back.performance.iops, back.performance.throughput) == (4000, 125)


def test_iops_replaces_iops_per_gb_and_the_reverse() -> None:
    p = _plan({"type": "io1", "iopsPerGB": "10"}, 50, iops="1000")
    assert (p.params.iops, p.params.iops_per_gb) == (1000, None)
    q = _plan(p.record, 50, iopsPerGB="20")
    assert (q.params.iops, q.params.iops_per_gb, q.performance.iops) == (None, 20, 1000)


def test_the_same_class_twice_changes_nothing() -> None:
    first = _plan({"type": "gp3"}, 10, type="gp3", iops="4000", throughput="200")
    assert first.changed
    assert not _plan(first.record, 10, type="gp3", iops="4000", throughput="200").changed


def test_gp3_throughput_needs_its_iops() -> None:
    with pytest.raises(InvalidParameter) as info:
        _plan({"type": "gp3"}, 100, throughput="1000")
    assert "0.25 MiB/s per IOPS" in info.value.message and "iops to at least 4000" in info.value.message
    assert _plan({"type": "gp3"}, 100, throughput="1000", iops="4000").performance.throughput == 1000


def test_multi_attach_volumes_stay_io2() -> None:
    with pytest.raises(InvalidParameter) as info:
        _plan({"type": "io2", "iops": "1000", "multiAttach": "true"}, 10, type="gp3")
    assert "multiAttach" in info.value.message
