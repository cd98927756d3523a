"""The EBS node side: find the block device of an attached volume, and prove it is that volume.

On Nitro instances an EBS volume appears as an NVMe namespace (``/dev/nvme1n1``) whatever device
name AttachVolume was given; udev links ``/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol…``
to it, and the controller's serial number is the volume id without its dash. On Xen instances
the device name from the publish context (``/dev/xvdba``) is the device. Nothing is formatted or
mounted until the serial names the same volume: formatting another volume's disk would destroy
someone's data, and device names can be reused between a detach and the next attach.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from elastivol.errors import FailedPrecondition, NotFound
from elastivol.node import fs as hostfs
from elastivol.providers.aws.settings import AwsSettings

log = logging.getLogger("elastivol.aws.nvme")

BY_ID_PREFIX = "nvme-Amazon_Elastic_Block_Store_"


def serial_of(volume_id: str) -> str:
    return volume_id.replace("-", "", 1)


class EbsNodeProvider:
    """BlockNodeProvider for EBS. Attach and detach happen in EC2; here we only find devices."""

    def __init__(self, settings: AwsSettings) -> None:
        self.dev = Path(settings.dev_root)
        self.sys = Path(settings.sys_root)
        self.wait = settings.device_wait

    # -- discovery ------------------------------------------------------------------------------
    def _by_id(self, volume_id: str) -> Path:
        return self.dev / "disk" / "by-id" / (BY_ID_PREFIX + serial_of(volume_id))

    def _node(self, link: Path) -> Path:
        """The device node a by-id or xvd link points at, kept inside the (possibly fake) /dev."""
        if not link.is_symlink():
            return link
        target = Path(os.readlink(link))
        return Path(os.path.normpath(link.parent / target)) if not target.is_absolute() else self.dev / target.name

    def _serial(self, device: Path) -> str | None:
        """The NVMe serial of ``device``, or None when it is not an NVMe namespace (Xen devices)."""
        name = device.name
        if not name.startswith("nvme"):
            return None
        path = self.sys / "block" / name / "device" / "serial"
        try:
            return path.read_text(errors="replace").strip()
        except OSError:
            return ""

    def _candidate(self, volume_id: str, device_path: str) -> Path | None:
        link = self._by_id(volume_id)
        if link.exists():
            return self._node(link)
        if device_path:
            given = self.dev / Path(device_path).name if device_path.startswith("/dev/") else Path(device_path)
            if given.exists():
                return self._node(given)
        return None

    def _verified(self, volume_id: str, device: Path) -> str:
        """``device``'s real path (what mkfs, mount and resize tools must see) once its serial checks out."""
        serial = self._serial(device)
        if serial is not None and serial != serial_of(volume_id):
            shown = f"vol-{serial[3:]}" if serial.startswith("vol") else repr(serial)
            raise FailedPrecondition(
                f"refusing to use {device} for volume {volume_id}: its NVMe serial names {shown or 'no volume'}. "
                "Nothing was formatted or mounted; the device may belong to another volume (device names are "
                "reused after a detach). NodeStageVolume will be retried once the right device appears"
            )
        return os.path.realpath(device)

    def find_device(self, volume_id: str) -> str | None:
        """The volume's verified device, or None (also when the link leads to another volume's device:
        unstage and stats must still work then; only attach_device refuses loudly)."""
        device = self._candidate(volume_id, "")
        if device is None:
            return None
        try:
            return self._verified(volume_id, device)
        except FailedPrecondition as exc:
            log.warning("%s", exc.message)
            return None

    # -- BlockNodeProvider ------------------------------------------------------------------
    def register_node(self, node_id: str, zone: str, max_volumes: int) -> None:
        """Nothing to record: EC2 knows the instance."""

    def attach_device(self, volume_id: str, publish_context: dict[str, str]) -> str:
        """The verified device of an attached volume, waiting for udev to create its link."""
        device_path = publish_context.get("devicePath", "")
        deadline = time.monotonic() + self.wait
        delay = 0.05
        while True:
            device = self._candidate(volume_id, device_path)
            if device is not None and device.exists():
                return self._verified(volume_id, device)
            if time.monotonic() >= deadline:
                raise NotFound(
                    f"volume {volume_id} has no block device on this node after {self.wait:.0f}s: neither "
                    f"{self._by_id(volume_id)} nor {device_path or 'a publish-context devicePath'} exists. Is it "
                    "attached to this instance (ControllerPublishVolume), and is udev running?"
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def detach_device(self, volume_id: str) -> None:
        """Detaching is EC2's job (ControllerUnpublishVolume); the node has nothing to undo."""

    def volume_exists(self, volume_id: str) -> bool:
        # The node has no EC2 access; whether the volume exists is the controller's knowledge.
        # Stage and publish find out from the device itself.
        return True

    def refresh_device(self, volume_id: str) -> int:
        """The device's size now. NVMe namespaces resize in the kernel by themselves."""
        device = self.find_device(volume_id)
        if device is None:
            raise NotFound(f"volume {volume_id} has no block device on this node")
        return hostfs.device_size(device)

    # EBS enforces each volume's IOPS and throughput itself: nothing to throttle on the node.
    def limit_io(self, volume_id: str, pod_uid: str) -> None:
        return None

    def update_io_limits(self, volume_id: str) -> list[str]:
        return []
