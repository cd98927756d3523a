"""ControllerPublish / ControllerUnpublish for EBS: AttachVolume and DetachVolume, then wait."""

from __future__ import annotations

import logging
import threading
from typing import Any

from elastivol import crashpoints
from elastivol.errors import Exhausted, FailedPrecondition, InUse, InvalidArgument, NotFound, Unavailable
from elastivol.providers.aws.awserrors import call, code_of
from elastivol.providers.aws.controller.devices import DeviceAllocator
from elastivol.providers.aws.controller.ebs_model import ATTACHED_STATES
from elastivol.providers.aws.controller.ec2view import Ec2View, Obj
from elastivol.providers.aws.controller.waits import poll
from elastivol.providers.aws.limits import max_volumes
from elastivol.providers.aws.settings import AwsSettings

log = logging.getLogger("elastivol.aws.attach")

crashpoints.register("aws.attach.after_call", "aws.detach.after_call")

STUCK_HELP = "https://repost.aws/knowledge-center/ebs-stuck-attaching"


def _attachment(volume: Obj, instance_id: str) -> Obj | None:
    for a in volume.get("Attachments", []) or []:
        if a.get("InstanceId") == instance_id and a.get("State") != "detached":
            return dict(a)
    return None


def _ebs_volumes(instance: Obj) -> set[str]:
    """EBS volumes EC2 shows on ``instance``, besides its root volume."""
    root = instance.get("RootDeviceName")
    return {
        str(m["Ebs"]["VolumeId"])
        for m in instance.get("BlockDeviceMappings", []) or []
        if m.get("Ebs", {}).get("VolumeId") and m.get("DeviceName") != root
    }


class Attacher:
    def __init__(self, ec2: Any, view: Ec2View, settings: AwsSettings, *, max_volumes_per_node: int = 0) -> None:
        self.ec2 = ec2
        self.view = view
        self.settings = settings
        self.max_volumes_per_node = max_volumes_per_node
        self.devices = DeviceAllocator()
        # Attachment slots: volumes this controller attached (or is attaching) to an instance that
        # EC2's view of the instance does not show yet. Counted with the view under the instance's
        # lock, so concurrent attaches cannot together take more slots than the instance has.
        self._slots_lock = threading.Lock()
        self._instance_locks: dict[str, threading.Lock] = {}
        self._claimed: dict[str, set[str]] = {}

    def _instance_lock(self, instance_id: str) -> threading.Lock:
        with self._slots_lock:
            return self._instance_locks.setdefault(instance_id, threading.Lock())

    def _admit(self, instance_id: str, volume_id: str) -> tuple[Obj, bool]:
        """The instance as EC2 shows it now, and whether a slot was claimed here for ``volume_id``.

        Raises Exhausted when every slot the instance has is taken or being taken.
        """
        with self._instance_lock(instance_id):
            # Read under the lock: a claim released by a finished attach is then visible here.
            instance = self.view.instance(instance_id)
            if instance is None:
                raise NotFound(f"instance {instance_id} does not exist in EC2: is the node id an EC2 instance id?")
            visible = _ebs_volumes(instance)
            claimed = self._claimed.setdefault(instance_id, set())
            claimed -= visible  # EC2 shows them now: the view counts them
            if volume_id in visible or volume_id in claimed:
                return instance, False
            instance_type = str(instance.get("InstanceType", ""))
            limit = max_volumes(instance_type, override=self.max_volumes_per_node,
                                reserved=self.settings.reserved_attachments)
            used = len(visible | claimed)
            if used >= limit:
                raise Exhausted(
                    f"instance {instance_id} ({instance_type or 'unknown type'}) has {used} EBS volumes attached or "
                    f"being attached and takes at most {limit} besides its root volume: move the pod to another "
                    "node, detach a volume there, or set --max-volumes-per-node on the controller if the limit "
                    "is wrong for this instance"
                )
            claimed.add(volume_id)
            return instance, True

    def _release(self, instance_id: str, volume_id: str) -> None:
        with self._instance_lock(instance_id):
            self._claimed.get(instance_id, set()).discard(volume_id)

    def _volume(self, volume_id: str) -> Obj:
        found = self.view.volume(volume_id)
        if found is None:
            raise NotFound(f"volume {volume_id} does not exist in EC2")
        return found

    # -- attach ---------------------------------------------------------------------------------
    def attach(self, volume_id: str, instance_id: str) -> dict[str, str]:
        if not instance_id.startswith("i-"):
            raise NotFound(
                f"node id {instance_id!r} is not an EC2 instance id: the node plugin reports its instance id from "
                "IMDS, and fell back to --node-id (here the Kubernetes node name) because IMDS did not answer. Let "
                "the node plugin reach IMDS (instance metadata hop limit 2, or hostNetwork) or pass the instance id"
            )
        volume = self._volume(volume_id)
        here = self._attached_here(volume, volume_id, instance_id)
        if here is not None:
            return here
        instance, claimed = self._admit(instance_id, volume_id)
        try:
            return self._attach_admitted(volume, instance, volume_id, instance_id)
        except BaseException:
            if claimed:
                self._release(instance_id, volume_id)
            raise

    def _attach_admitted(self, volume: Obj, instance: Obj, volume_id: str, instance_id: str) -> dict[str, str]:
        zone = instance.get("Placement", {}).get("AvailabilityZone", "")
        if zone and volume.get("AvailabilityZone") and zone != volume["AvailabilityZone"]:
            raise FailedPrecondition(
                f"volume {volume_id} is in zone {volume['AvailabilityZone']} but instance {instance_id} is in {zone}; "
                "an EBS volume attaches only within its zone: schedule the pod in that zone (the PV's node affinity)"
            )
        in_use = [str(m.get("DeviceName", "")) for m in instance.get("BlockDeviceMappings", []) or []]
        avoid: list[str] = []
        for _ in range(3):
            with self.devices.hold(instance_id, in_use, avoid) as device:
                try:
                    call(self.ec2, "AttachVolume", VolumeId=volume_id, InstanceId=instance_id, Device=device)
                except InvalidArgument as exc:
                    if "in use" not in str(exc).lower():
                        raise
                    # The name is taken by something EC2's view of the instance did not show yet.
                    log.info("device %s is taken on %s; trying another name", device, instance_id)
                    avoid.append(device)
                    continue
                except InUse as exc:
                    return self._attached_anyway(volume_id, instance_id, exc)
                except Exhausted as exc:
                    raise Exhausted(
                        f"instance {instance_id} cannot take another EBS volume ({code_of(exc)}): every attachment "
                        "slot is used. The node reports fewer slots in NodeGetInfo so that the scheduler avoids "
                        "this; check --max-volumes-per-node and ELASTIVOL_AWS_RESERVED_ATTACHMENTS on that node"
                    ) from exc
                crashpoints.hit("aws.attach.after_call")
                self._wait_attached(volume_id, instance_id, device)
                return {"devicePath": device}
        raise Unavailable(f"could not find a device name that {instance_id} accepts for {volume_id}; retry")

    def _refuse_if_elsewhere(self, volume: Obj, instance_id: str) -> None:
        volume_id = str(volume["VolumeId"])
        others = [a for a in volume.get("Attachments", []) or []
                  if a.get("InstanceId") != instance_id and a.get("State") in (*ATTACHED_STATES, "detaching")]
        if not others:
            return
        other = others[0]
        if other.get("State") == "detaching":
            # A pod moving between nodes: wait for the old attachment to go, then attach here.
            self._wait_detached(volume_id, str(other["InstanceId"]))
            return
        if volume.get("MultiAttachEnabled"):
            return
        raise InUse(
            f"volume {volume_id} is attached to instance {other['InstanceId']} ({other.get('State')}); an EBS "
            "volume without multi-attach is on one instance at a time: it must be detached there first "
            "(ControllerUnpublishVolume for that node, which happens when its VolumeAttachment is deleted)",
            node=str(other["InstanceId"]),
        )

    def _attached_here(self, volume: Obj, volume_id: str, instance_id: str) -> dict[str, str] | None:
        """The publish context when ``volume`` is (being) attached to this instance; InUse when it is
        attached to another; None when it is attached nowhere."""
        mine = _attachment(volume, instance_id)
        if mine is not None and mine.get("State") in ATTACHED_STATES:
            device = str(mine.get("Device", ""))
            self._wait_attached(volume_id, instance_id, device)
            return {"devicePath": device}
        self._refuse_if_elsewhere(volume, instance_id)
        return None

    def _attached_anyway(self, volume_id: str, instance_id: str, exc: InUse) -> dict[str, str]:
        """AttachVolume said VolumeInUse: fine if it is (being) attached here, a conflict otherwise."""
        volume = self._volume(volume_id)
        here = self._attached_here(volume, volume_id, instance_id)
        if here is not None:
            return here
        raise InUse(f"volume {volume_id} could not be attached to {instance_id}: {exc.message}", node=exc.node) from exc

    def _wait_attached(self, volume_id: str, instance_id: str, device: str) -> None:
        seen = {"state": "not visible yet"}

        def check() -> bool | None:
            volume = self.view.volume(volume_id)
            if volume is None:
                raise NotFound(f"volume {volume_id} disappeared while attaching to {instance_id}")
            mine = _attachment(volume, instance_id)
            if mine is not None:
                seen["state"] = str(mine.get("State"))
                if mine.get("State") == "attached":
                    return True
                if mine.get("State") == "detaching":
                    raise FailedPrecondition(f"volume {volume_id} is being detached from {instance_id}; retry")
            return None

        def stuck() -> Unavailable:
            return Unavailable(
                f"volume {volume_id} has been {seen['state']!r} on instance {instance_id} as {device} for "
                f"{self.settings.attach_timeout:.0f}s and is not attached. An attachment stuck in 'attaching' "
                "usually means the device name is used inside the instance by a device EC2 does not know, or the "
                f"instance is impaired (see {STUCK_HELP}). ControllerPublishVolume will be retried and wait again; "
                "if it stays stuck, force-detach the volume or stop and start the instance"
            )

        poll(check, self.settings, timeout=self.settings.attach_timeout, on_timeout=stuck)

    # -- detach ---------------------------------------------------------------------------------
    def detach(self, volume_id: str, instance_id: str) -> None:
        self._release(instance_id, volume_id)
        volume = self.view.volume(volume_id)
        if volume is None:
            return  # the volume is gone: nothing is attached
        mine = _attachment(volume, instance_id)
        if mine is None:
            return  # already detached: success, as the spec asks
        if mine.get("State") != "detaching":
            try:
                call(self.ec2, "DetachVolume", VolumeId=volume_id, InstanceId=instance_id)
            except NotFound:
                return  # volume, instance or attachment gone in between
            except FailedPrecondition as exc:
                if code_of(exc) != "IncorrectState":
                    raise
            crashpoints.hit("aws.detach.after_call")
        self._wait_detached(volume_id, instance_id)

    def _wait_detached(self, volume_id: str, instance_id: str) -> None:
        def check() -> bool | None:
            volume = self.view.volume(volume_id)
            if volume is None or _attachment(volume, instance_id) is None:
                return True
            return None

        def stuck() -> Unavailable:
            return Unavailable(
                f"volume {volume_id} is still detaching from instance {instance_id} after "
                f"{self.settings.detach_timeout:.0f}s; the instance may still be using the device (a mount that was "
                "not cleaned up). ControllerUnpublishVolume will be retried"
            )

        poll(check, self.settings, timeout=self.settings.detach_timeout, on_timeout=stuck)
