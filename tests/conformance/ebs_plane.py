"""EBS's data plane and udev for one instance, played from moto's state.

csi-sanity attaches volumes with ControllerPublishVolume and goes straight on to NodeStageVolume;
there is no test step in between to make the device appear on the node. This follower watches
moto (the truth about attachments) and keeps the fake NVMe device tree of ``tests.aws.support.Disks``
in step with it: a volume attached to the instance gets a real loop device with the links and
serial a Nitro instance shows; a detached one loses them; a grown one grows.
"""

from __future__ import annotations

import threading
from typing import Any

from elastivol.node import loop
from elastivol.providers.aws.controller.ebs_model import CLUSTER_TAG
from tests.aws.support import Disks


class EbsDataPlane:
    def __init__(self, ec2: Any, disks: Disks, instance_id: str, cluster: str, interval: float = 0.05) -> None:
        self.ec2 = ec2
        self.cluster = cluster
        self.disks = disks
        self.instance_id = instance_id
        self.interval = interval
        self.sizes: dict[str, int] = {}  # attached volume -> GiB the device has
        self.stuck: dict[str, str] = {}  # detached in EBS but the loop device is still busy on the node
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ebs-data-plane", daemon=True)

    def start(self) -> EbsDataPlane:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception as exc:  # report at the end; keep following
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def tick(self) -> None:
        attached: dict[str, int] = {}
        # The cluster's volumes only: the instance's own root volume is not ours to play.
        mine = [{"Name": f"tag:{CLUSTER_TAG}", "Values": [self.cluster]}]
        for page in self.ec2.get_paginator("describe_volumes").paginate(Filters=mine):
            for vol in page["Volumes"]:
                if any(a["InstanceId"] == self.instance_id and a["State"] in ("attaching", "attached")
                       for a in vol.get("Attachments", [])):
                    attached[vol["VolumeId"]] = int(vol["Size"])
        for volume_id, size in attached.items():
            if volume_id not in self.sizes:
                self.disks.attach(volume_id, size_gib=size)
                self.sizes[volume_id] = size
            elif size > self.sizes[volume_id]:
                self.disks.grow(volume_id, size)
                self.sizes[volume_id] = size
        for volume_id in [v for v in self.sizes if v not in attached]:
            device = self.disks.loops.get(volume_id)
            del self.sizes[volume_id]
            try:
                self.disks.detach(volume_id)
            except Exception:
                # Still mounted on the node (detached in EBS first): retry until it is free.
                if device is not None:
                    self.stuck[volume_id] = device
        for volume_id, device in list(self.stuck.items()):
            try:
                loop.detach(device)
                del self.stuck[volume_id]
            except Exception:
                pass
