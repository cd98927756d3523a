"""ControllerModifyVolume on the local pool: record the new type and performance; the node enforces them.

The volume's record is the only state: the new parameters are written there in one atomic write
(the store's write, fsync, rename) and nothing else is done. The node plugin's performance loop
(providers/local/performance.py, every few seconds) reads the record and moves the throttle of the
volume's loop device in every cgroup that has one, so running pods get the new limits without a
detach or a remount. A crash before the write leaves the old volume; after it, the new one, which
the loop enforces from the record whether or not anything else ran.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elastivol.params.block_modify import ModifyPlan
from elastivol.providers.block import Volume

if TYPE_CHECKING:
    from elastivol.providers.local.block import LocalBlockProvider


def performance_record(plan: ModifyPlan) -> dict[str, str]:
    perf = plan.performance
    return {k: str(v) for k, v in (("iops", perf.iops), ("throughput", perf.throughput)) if v is not None}


def apply(provider: LocalBlockProvider, volume_id: str, plan: ModifyPlan) -> Volume:
    from elastivol.providers.local.block import _volume_from_record

    rec = provider._record(volume_id)
    performance = performance_record(plan)
    if rec.get("params") != plan.record or rec.get("performance", {}) != performance:
        rec["params"] = plan.record
        rec["performance"] = performance
        provider.pool.volumes.put(volume_id, rec)
    return _volume_from_record(rec, provider.pool.image_path(volume_id))
