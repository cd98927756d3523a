"""A local block volume's I/O limits: its type's EBS figures (params.block), enforced on its loop device.

The volume's record in the pool (type, provisioned figures, size) is the source of the numbers, so
the same calls serve a first publish, a resize (gp2 and st1/sc1 grow with size) and a later change
of type or performance: :func:`limit_for_pod` places the limits for a pod, :func:`refresh` rewrites
them wherever the device is already limited, without detaching anything.
"""

from __future__ import annotations

import logging
from typing import Any

from elastivol.errors import ElastivolError
from elastivol.node import iothrottle
from elastivol.params.block import (
    ENFORCE_PERFORMANCE,
    TypePerformance,
    parse_block_parameters,
    type_performance,
)
from elastivol.units import GiB, MiB

log = logging.getLogger("elastivol.providers.local.performance")


def limits_of(rec: dict[str, Any]) -> tuple[iothrottle.IoLimits, TypePerformance]:
    """The limits a volume's record asks for, and the figures they come from."""
    params = parse_block_parameters(dict(rec.get("params", {})))
    perf = type_performance(params, int(rec["size_bytes"]) // GiB)
    return iothrottle.IoLimits(iops=perf.iops, bps=int(perf.throughput_mibs * MiB)), perf


def enforced(rec: dict[str, Any], default: bool) -> bool:
    """Whether to throttle this volume: its StorageClass's enforcePerformance, else the node's default."""
    flag = dict(rec.get("params", {})).get(ENFORCE_PERFORMANCE)
    return default if flag is None else flag == "true"


def limit_for_pod(rec: dict[str, Any], device: str, pod_uid: str, default: bool) -> iothrottle.Placement | None:
    """Throttle ``device`` for pod ``pod_uid``; None when enforcement is off for this volume."""
    if not enforced(rec, default):
        log.info("volume %s: performance not enforced (enforcePerformance is off)", rec["id"])
        return None
    try:
        limits, perf = limits_of(rec)
    except ElastivolError as exc:
        # The volume stays usable: a record whose figures cannot be worked out is reported, not fatal.
        log.warning("volume %s: performance not enforced, its parameters give no limits: %s", rec["id"], exc.message)
        return iothrottle.Placement(problem=exc.message)
    return iothrottle.limit_device(device, limits, pod_uid=pod_uid, what=f"volume {rec['id']} ({perf.basis})")


def refresh(rec: dict[str, Any], device: str, default: bool) -> list[str]:
    """Rewrite the limits of ``device`` in every cgroup that has some, from the record as it is now."""
    if not enforced(rec, default):
        return []
    limits, perf = limits_of(rec)
    return [str(p) for p in iothrottle.update_device(device, limits, what=f"volume {rec['id']} ({perf.basis})")]


def reconcile(rec: dict[str, Any], device: str, default: bool) -> list[str]:
    """Bring ``device``'s limits in line with its record where they are set, then (v1) onto cgroups made since.

    The node plugin runs this every few seconds, so a change recorded by the controller (a resize,
    a modification of type or performance) reaches running pods without a call to the node.
    """
    if not enforced(rec, default):
        return []
    try:
        limits, perf = limits_of(rec)
    except ElastivolError:
        return []  # said once at publish (limit_for_pod); nothing to converge to
    what = f"volume {rec['id']} ({perf.basis})"
    changed = iothrottle.converge(device, limits, what=what) + iothrottle.spread_down(device)
    return [str(p) for p in changed]
