"""params.block.type_performance: the EBS figures a local volume is throttled to, per type and size."""

from __future__ import annotations

import pytest

from elastivol.errors import InvalidParameter
from elastivol.params.block import (
    ENFORCE_PERFORMANCE,
    parse_block_parameters,
    to_record,
    type_performance,
)


def perf(size_gib: int, **raw: str) -> tuple[int, float]:
    p = type_performance(parse_block_parameters(raw), size_gib)
    return p.iops, p.throughput_mibs


@pytest.mark.parametrize(
    ("size", "iops", "mibs"),
    [
        (1, 100, 25.0),  # the floor: 3 IOPS/GiB would be 3
        (20, 100, 25.0),
        (100, 300, 75.0),  # 3 IOPS/GiB; IOPS x 256 KiB
        (170, 510, 127.5),
        (200, 600, 128.0),  # 128 MiB/s below 334 GiB (baseline, no burst credits)
        (334, 1002, 250.0),  # 250 MiB/s from 334 GiB
        (2000, 6000, 250.0),
        (5334, 16000, 250.0),  # the cap
        (16384, 16000, 250.0),
    ],
)
def test_gp2_follows_size_with_floor_cap_and_throughput_tiers(size: int, iops: int, mibs: float) -> None:
    assert perf(size, type="gp2") == (iops, mibs)


def test_gp3_baseline_and_provisioned() -> None:
    assert perf(1, type="gp3") == (3000, 125.0)
    assert perf(1000, type="gp3") == (3000, 125.0)
    assert perf(100, type="gp3", iops="6000", throughput="250") == (6000, 250.0)
    assert perf(100, type="gp3", iopsPerGB="50") == (5000, 125.0)
    assert perf(10, type="gp3", iopsPerGB="1", allowAutoIOPSPerGBIncrease="true") == (3000, 125.0)


def test_io1_io2_as_provisioned_with_their_throughput_caps() -> None:
    assert perf(100, type="io2", iops="8000") == (8000, 2000.0)
    assert perf(100, type="io1", iops="1000") == (1000, 250.0)
    assert perf(1000, type="io1", iops="50000") == (50000, 1000.0)  # io1 caps at 1000 MiB/s
    assert perf(1000, type="io2", iops="64000") == (64000, 4000.0)  # io2 at 4000 MiB/s
    assert perf(4, type="io2", iops="100000") == (4000, 1000.0)  # capped at 1000 IOPS/GiB first


@pytest.mark.parametrize(
    ("vtype", "size", "iops", "mibs"),
    [
        ("st1", 125, 500, 40 * 125 / 1024),  # baseline 40 MiB/s per TiB
        ("st1", 1024, 500, 40.0),
        ("st1", 16384, 500, 500.0),  # capped at 500 MiB/s
        ("sc1", 1024, 250, 12.0),
        ("sc1", 16384, 250, 192.0),
    ],
)
def test_hdd_types_by_throughput_baseline(vtype: str, size: int, iops: int, mibs: float) -> None:
    assert perf(size, type=vtype) == (iops, pytest.approx(mibs))


def test_standard() -> None:
    assert perf(10, type="standard") == (100, 40.0)


def test_enforce_performance_parses_records_and_rejects_nonsense() -> None:
    assert parse_block_parameters({}).enforce_performance is None
    off = parse_block_parameters({"type": "gp3", ENFORCE_PERFORMANCE: "false"})
    assert off.enforce_performance is False
    assert to_record(off)[ENFORCE_PERFORMANCE] == "false"
    assert parse_block_parameters(to_record(off)) == off
    assert ENFORCE_PERFORMANCE not in to_record(parse_block_parameters({"type": "gp3"}))
    with pytest.raises(InvalidParameter, match='enforcePerformance must be "true" or "false"'):
        parse_block_parameters({ENFORCE_PERFORMANCE: "no"})
