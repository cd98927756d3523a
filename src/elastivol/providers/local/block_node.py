"""The node side of local block volumes: the pool's images attached as loop devices, and their I/O limits."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from elastivol import ids
from elastivol.errors import (
    FailedPrecondition,
    InUse,
    NotFound,
)
from elastivol.node import loop
from elastivol.providers.local import performance
from elastivol.providers.local.pool import Pool

log = logging.getLogger("elastivol.providers.local.block")


class LocalBlockNode:
    """Node side of the local block provider: loop devices over the pool's images."""

    def __init__(self, pool: Pool, node_id: str, *, enforce_performance: bool = True) -> None:
        self.pool = pool
        self.node_id = node_id
        self.enforce_performance = enforce_performance

    def register_node(self, node_id: str, zone: str, max_volumes: int) -> None:
        self.pool.nodes.put(
            node_id,
            {"node_id": node_id, "zone": zone, "max_volumes": max_volumes, "last_seen": time.time(), "pid": os.getpid()},
        )

    def volume_exists(self, volume_id: str) -> bool:
        return ids.is_volume_id(volume_id) and self.pool.volumes.get(volume_id) is not None

    def _attachment(self, volume_id: str) -> dict[str, Any]:
        rec = self.pool.volumes.get(volume_id) if ids.is_volume_id(volume_id) else None
        if rec is None:
            raise NotFound(f"volume {volume_id} does not exist")
        for a in rec.get("attachments", []):
            if a["node_id"] == self.node_id:
                return dict(a)
        raise FailedPrecondition(
            f"volume {volume_id} is not attached to node {self.node_id}: ControllerPublishVolume must come first"
        )

    def attach_device(self, volume_id: str, publish_context: dict[str, str]) -> str:
        attachment = self._attachment(volume_id)
        image = self.pool.image_path(volume_id)
        if not image.exists():
            raise NotFound(f"the image of volume {volume_id} is missing from the pool ({image})")
        device = loop.ensure_attached(str(image), read_only=bool(attachment.get("readonly")), direct_io=True)
        return device.path

    def find_device(self, volume_id: str) -> str | None:
        if not ids.is_volume_id(volume_id):
            return None
        found = loop.find(str(self.pool.image_path(volume_id)))
        return found[0].path if found else None

    def detach_device(self, volume_id: str) -> None:
        if not ids.is_volume_id(volume_id):
            return
        loop.detach_all(str(self.pool.image_path(volume_id)))
        # A device left on this volume's image by an older version that deleted it while attached.
        for found in self.pool.loop_devices():
            if found.deleted and found.kind == "volume" and found.object_id == volume_id:
                try:
                    loop.detach(found.device.path, expect=found.device.backing)
                except InUse:
                    log.warning("%s holds a deleted image of %s and is in use; elastivol doctor reports it",
                                found.device.path, volume_id)

    def refresh_device(self, volume_id: str) -> int:
        device = self.find_device(volume_id)
        if device is None:
            raise FailedPrecondition(f"volume {volume_id} is not attached on node {self.node_id}; stage it first")
        return loop.refresh_capacity(device)

    # -- performance (providers/local/performance.py) -------------------------------------------
    def limit_io(self, volume_id: str, pod_uid: str) -> None:
        """Throttle the volume's device to its type's performance for pod ``pod_uid`` (logged if impossible)."""
        rec = self.pool.volumes.get(volume_id) if ids.is_volume_id(volume_id) else None
        device = self.find_device(volume_id)
        if rec is not None and device is not None:
            performance.limit_for_pod(rec, device, pod_uid, self.enforce_performance)

    def update_io_limits(self, volume_id: str) -> list[str]:
        """Re-apply the volume's limits from its record where they are set (after a resize or a modification)."""
        rec = self.pool.volumes.get(volume_id) if ids.is_volume_id(volume_id) else None
        device = self.find_device(volume_id)
        if rec is None or device is None:
            return []
        return performance.refresh(rec, device, self.enforce_performance)

    def reconcile_io_limits(self) -> int:
        """Every attached volume's limits back in line with its record (and, on cgroup v1, its pods' new cgroups)."""
        prefix = str(self.pool.images) + "/"
        changed = 0
        for device in loop.list_all():
            if not device.backing_file.startswith(prefix) or device.deleted:
                continue
            volume_id = device.backing_file[len(prefix):].removesuffix(".img")
            rec = self.pool.volumes.get(volume_id) if ids.is_volume_id(volume_id) else None
            if rec is not None:
                changed += len(performance.reconcile(rec, device.path, self.enforce_performance))
        return changed
