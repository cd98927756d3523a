"""The EBS BlockProvider: the block driver's controller side on AWS.

Idempotency comes from AWS itself: CreateVolume and CopyVolumes carry a ClientToken derived from
the CSI name, snapshots are found by their name tag before one is taken, and every "already
gone" answer to a delete or detach is a success. Waits poll through the batching view, so many
concurrent operations share each Describe call.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping
from typing import Any

from botocore import exceptions as bce

from elastivol import crashpoints
from elastivol.domain import Capacity, Health, Snapshot
from elastivol.errors import (
    Aborted,
    AlreadyExists,
    ElastivolError,
    Exhausted,
    FailedPrecondition,
    Internal,
    InUse,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    Unavailable,
)
from elastivol.params.block import parse_block_parameters, recompute_for_resize, resolve_performance
from elastivol.params.block_modify import ModifyPlan
from elastivol.providers.aws.awserrors import call, call_delete, code_of, translate
from elastivol.providers.aws.clients import AwsClients
from elastivol.providers.aws.controller import ebs_model as model
from elastivol.providers.aws.controller import ebs_modify
from elastivol.providers.aws.controller.ebs_attach import Attacher
from elastivol.providers.aws.controller.ebs_snapshots import Snapshots
from elastivol.providers.aws.controller.ec2view import Ec2View, Obj
from elastivol.providers.aws.controller.modify import ModifyCoalescer
from elastivol.providers.aws.controller.probe import CachedProbe
from elastivol.providers.aws.controller.waits import poll
from elastivol.providers.aws.settings import AwsSettings
from elastivol.providers.block import Volume, VolumeSpec
from elastivol.units import GiB

log = logging.getLogger("elastivol.aws.ebs")

crashpoints.register("aws.create.after_call")

UNBOUNDED = (1 << 63) - 1  # EBS has no pool to run out of: capacity is "as much as you like"
MAX_VOLUME_BYTES = 64 << 40
KMS_ACTIONS = "kms:CreateGrant, kms:Decrypt, kms:DescribeKey, kms:GenerateDataKeyWithoutPlaintext and kms:ReEncrypt*"


class EbsProvider:
    PAGE = 500  # DescribeVolumes page size (EC2's largest)
    # EBS has no read-only attachment: as the EBS CSI driver does, the readonly attach is dropped
    # (PUBLISH_READONLY is not offered) and read-only pods are enforced by the node's mounts.
    readonly_attach = False
    # ControllerModifyVolume and ControllerExpandVolume of one volume may run together: they meet in
    # the ModifyCoalescer and travel in one ModifyVolume (drivers/block/modify.py).
    coalesces_modifications = True

    def __init__(self, clients: AwsClients, settings: AwsSettings, *, cluster_id: str,
                 zones: list[str] | None = None, extra_tags: Mapping[str, str] | None = None,
                 max_volumes_per_node: int = 0) -> None:
        if not cluster_id:
            raise InvalidArgument(
                "--cluster-id is required with --provider aws: volumes are tagged elastivol.io/cluster=<id> so "
                "that a controller lists and manages only its own cluster's volumes"
            )
        self.settings = settings
        self.cluster_id = cluster_id
        self.extra_tags = dict(extra_tags or {})
        self.ec2 = clients.client("ec2")
        self.view = Ec2View(self.ec2, settings)
        self.attacher = Attacher(self.ec2, self.view, settings, max_volumes_per_node=max_volumes_per_node)
        self.snaps = Snapshots(self.ec2, self.view, cluster_id, self.extra_tags, settings)
        self.modifier = ModifyCoalescer(self._send_modify, settings.modify_window)
        self.modifications = ebs_modify.Modifications(self.ec2, settings)
        self._zones = list(zones or [])
        self._lock = threading.Lock()
        self._probe = CachedProbe(settings.probe_cache, "EBS volumes", fatal=(InvalidArgument,))
        self._copy_offered: bool | None = None if settings.clone == "auto" else settings.clone == "copy"

    # -- health and topology ----------------------------------------------------------------
    def health(self) -> Health:
        """A DryRun CreateVolume: proves credentials and the most important permission at once."""
        return self._probe(self._dry_run_create)

    def _dry_run_create(self) -> Health | ElastivolError:
        try:
            self.ec2.create_volume(
                DryRun=True, AvailabilityZone=self.zones()[0], Size=1, VolumeType="gp3",
                TagSpecifications=[{"ResourceType": "volume", "Tags": model.tag_list({model.CLUSTER_TAG: self.cluster_id})}],
            )
            return Health(True)
        except bce.ClientError as exc:
            return Health(True) if code_of(exc) == "DryRunOperation" else translate(exc, "ec2", "CreateVolume")
        except bce.BotoCoreError as exc:
            return translate(exc, "ec2", "CreateVolume")
        except ElastivolError as exc:  # zones() could not be listed
            return exc

    def zones(self) -> list[str]:
        with self._lock:
            if self._zones:
                return list(self._zones)
        resp = call(self.ec2, "DescribeAvailabilityZones", Filters=[{"Name": "state", "Values": ["available"]}])
        zones = sorted(str(z["ZoneName"]) for z in resp.get("AvailabilityZones", []))
        if not zones:
            raise Unavailable("EC2 lists no available zone in this region")
        with self._lock:
            self._zones = zones
        return list(zones)

    def node_zone(self, node_id: str) -> str:
        instance = self.view.instance(node_id)
        if instance is None:
            raise NotFound(f"instance {node_id} does not exist in EC2")
        return str(instance.get("Placement", {}).get("AvailabilityZone", ""))

    def capacity(self, zone: str | None) -> Capacity:
        if zone is not None and zone not in self.zones():
            return Capacity(0, 0)
        return Capacity(available_bytes=UNBOUNDED, maximum_volume_size=MAX_VOLUME_BYTES)

    # -- volumes ----------------------------------------------------------------------------
    def get_volume(self, volume_id: str) -> Volume:
        return model.to_volume(self._require(volume_id))

    def _require(self, volume_id: str) -> Obj:
        found = self.view.volume(volume_id)
        if found is None:
            raise NotFound(f"volume {volume_id} does not exist in EC2")
        return found

    def list_volumes(self) -> list[Volume]:
        items = self.view.pages("DescribeVolumes", "Volumes", MaxResults=self.PAGE,
                                Filters=[{"Name": f"tag:{model.CLUSTER_TAG}", "Values": [self.cluster_id]}])
        return sorted((model.to_volume(v) for v in items), key=lambda v: (v.created_at, v.id))

    def _request(self, spec: VolumeSpec) -> dict[str, Any]:
        p = spec.params
        perf = resolve_performance(p, spec.size_bytes // GiB)
        tags = model.volume_tags(spec, self.cluster_id, self.extra_tags)
        if len(tags) > model.MAX_TAGS:
            raise InvalidArgument(f"the volume would carry {len(tags)} tags; EBS allows {model.MAX_TAGS}: remove some")
        req: dict[str, Any] = {
            "ClientToken": model.client_token(spec.name),
            "Size": spec.size_bytes // GiB,
            "VolumeType": str(p.volume_type),
            "TagSpecifications": [{"ResourceType": "volume", "Tags": model.tag_list(tags)}],
            **model.performance_fields(p, perf),
        }
        if p.encrypted:
            req["Encrypted"] = True
        if p.kms_key_id:
            req["KmsKeyId"] = p.kms_key_id
        if p.multi_attach:
            req["MultiAttachEnabled"] = True
        return req

    def create_volume(self, spec: VolumeSpec) -> Volume:
        if spec.source is not None and spec.source.kind == "volume":
            return self._clone(spec)
        req = {**self._request(spec), "AvailabilityZone": spec.zone}
        if spec.source is not None:
            req["SnapshotId"] = self._restorable(spec.source.id, spec.size_bytes)
        return self._create(spec, "CreateVolume", req)

    def _restorable(self, snapshot_id: str, size_bytes: int) -> str:
        snap = self.view.snapshot(snapshot_id)
        if snap is None:
            raise NotFound(f"snapshot {snapshot_id} does not exist in EC2")
        if snap.get("State") == "error":
            raise FailedPrecondition(f"snapshot {snapshot_id} failed in EBS and cannot be restored")
        need = int(snap.get("VolumeSize", 0))
        if size_bytes < need * GiB:
            raise OutOfRange(
                f"snapshot {snapshot_id} is of a {need} GiB volume; a volume restored from it must be at least "
                f"{need} GiB, but {size_bytes // GiB} GiB was asked: request at least {need}Gi"
            )
        return snapshot_id

    def _create(self, spec: VolumeSpec, operation: str, req: dict[str, Any]) -> Volume:
        try:
            resp = call(self.ec2, operation, **req)
        except AlreadyExists as exc:
            if code_of(exc) != "IdempotentParameterMismatch":
                raise
            raise AlreadyExists(
                f"a volume named {spec.name!r} already exists with different parameters: EC2 refused {operation} "
                "with IdempotentParameterMismatch (the ClientToken comes from the volume name, and the first "
                "request asked for another size, type, IOPS, encryption or zone). A retried CreateVolume must ask "
                "for the same volume; to get a different one, use a new name (delete and recreate the PVC)"
            ) from exc
        crashpoints.hit("aws.create.after_call")
        volume_id = str(resp["Volumes"][0]["VolumeId"] if operation == "CopyVolumes" else resp["VolumeId"])
        return model.to_volume(self._wait_available(volume_id, spec))

    def _wait_available(self, volume_id: str, spec: VolumeSpec) -> Obj:
        seen = {"state": ""}

        def check() -> Obj | None:
            v = self.view.volume(volume_id)
            if v is None:
                if seen["state"]:
                    self._failed(volume_id, spec, "vanished")
                return None  # not visible yet: EC2 is eventually consistent
            seen["state"] = state = str(v.get("State"))
            if state in ("available", "in-use"):
                return v
            if state in ("error", "deleting", "deleted"):
                self._failed(volume_id, spec, state)
            return None

        def slow() -> Unavailable:
            return Unavailable(
                f"volume {volume_id} for {spec.name!r} is still {seen['state'] or 'not visible'} after "
                f"{self.settings.create_timeout:.0f}s; CreateVolume will be retried and pick the same volume up again"
            )

        return poll(check, self.settings, timeout=self.settings.create_timeout, on_timeout=slow)

    def _failed(self, volume_id: str, spec: VolumeSpec, state: str) -> None:
        """A creation EC2 accepted and then failed: clean up, and say why it most likely failed."""
        try:
            call(self.ec2, "DeleteVolume", VolumeId=volume_id)
        except ElastivolError as exc:
            if not isinstance(exc, NotFound):
                log.warning("could not delete failed volume %s: %s", volume_id, exc)
        p = spec.params
        if p.encrypted:
            key = f"KMS key {p.kms_key_id}" if p.kms_key_id else "the account's default EBS KMS key"
            reason = (
                f"it is encrypted with {key}, and the usual cause is that the controller's role may not use that "
                f"key: allow {KMS_ACTIONS} on it (in the key policy or the role's policy, see the README's EKS section)"
            )
        elif spec.source is not None:
            reason = f"it was created from {spec.source.kind} {spec.source.id}; check that it is usable and not shared from an account you cannot read"
        else:
            reason = "EC2 gives no reason here; look the volume id up in CloudTrail"
        raise Internal(
            f"EC2 accepted the creation of {spec.name!r} but volume {volume_id} became {state!r} instead of "
            f"'available': {reason}. The failed volume was deleted, so nothing is left half-made"
        )

    # -- clones -----------------------------------------------------------------------------
    def _clone(self, spec: VolumeSpec) -> Volume:
        if spec.source is None:  # narrows the type; cannot happen on this path
            raise Internal("spec.source is missing where it was just set")
        source = self.view.volume(spec.source.id)
        if source is None:
            raise NotFound(f"source volume {spec.source.id} does not exist in EC2")
        if spec.size_bytes < int(source.get("Size", 0)) * GiB:
            raise OutOfRange(
                f"a clone must be at least as large as its source ({source.get('Size')} GiB); "
                f"{spec.size_bytes // GiB} GiB was asked"
            )
        if self._copy_offered is not False:
            try:
                return self._create(spec, "CopyVolumes", {**self._request(spec), "SourceVolumeId": spec.source.id})
            except (Internal, PermissionDenied, InvalidArgument) as exc:
                if self._copy_offered is True or code_of(exc) == "IdempotentParameterMismatch":
                    raise
                log.warning("CopyVolumes is not usable here (%s); cloning through a snapshot from now on", exc)
                self._copy_offered = False
        return self._clone_via_snapshot(spec)

    def _clone_via_snapshot(self, spec: VolumeSpec) -> Volume:
        if spec.source is None:  # narrows the type; cannot happen on this path
            raise Internal("spec.source is missing where it was just set")
        temp = self.snaps.find_by_tag(model.CLONE_FOR_TAG, spec.name)
        if temp is None:
            tags = {model.CLUSTER_TAG: self.cluster_id, model.CLONE_FOR_TAG: spec.name}
            temp = call(
                self.ec2, "CreateSnapshot", VolumeId=spec.source.id,
                Description=f"elastivol: temporary snapshot to clone {spec.source.id} as {spec.name}"[:255],
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": model.tag_list(tags)}],
            )
        snapshot_id = str(temp["SnapshotId"])
        self._wait_snapshot(snapshot_id)
        req = {**self._request(spec), "AvailabilityZone": spec.zone, "SnapshotId": snapshot_id}
        try:
            volume = self._create(spec, "CreateVolume", req)
        except (Unavailable, Aborted):
            raise  # the retry finds the temporary snapshot by its tag and goes on from there
        except ElastivolError:
            # A refusal (a name taken with other parameters, a size, a permission...): a retry
            # cannot succeed unchanged, so leave nothing behind.
            self._drop_temporary(snapshot_id)
            raise
        self._drop_temporary(snapshot_id)
        return volume

    def _drop_temporary(self, snapshot_id: str) -> None:
        try:
            self.snaps.delete(snapshot_id)  # the new volume no longer needs it
        except ElastivolError as exc:
            log.warning("could not delete temporary snapshot %s: %s", snapshot_id, exc)

    def _wait_snapshot(self, snapshot_id: str) -> Obj:
        def check() -> Obj | None:
            s = self.view.snapshot(snapshot_id)
            if s is not None and s.get("State") == "error":
                raise Internal(f"snapshot {snapshot_id} failed: {s.get('StateMessage', 'no reason given')}")
            return s if s is not None and s.get("State") == "completed" else None

        def slow() -> Unavailable:
            return Unavailable(f"snapshot {snapshot_id} is not completed yet; the call will be retried")

        return poll(check, self.settings, timeout=self.settings.snapshot_timeout, on_timeout=slow)

    # -- delete -----------------------------------------------------------------------------
    def delete_volume(self, volume_id: str) -> None:
        try:
            call_delete(self.ec2, "DeleteVolume", VolumeId=volume_id)
        except InUse as exc:
            raise self._still_attached(volume_id, exc) from exc

    def _still_attached(self, volume_id: str, exc: InUse) -> InUse:
        volume = self.view.volume(volume_id)
        attachments: list[Obj] = list((volume or {}).get("Attachments", []) or [])
        attachment: Obj = attachments[0] if attachments else {}
        instance = str(attachment.get("InstanceId") or exc.node or "an instance")
        where = f" as {attachment['Device']}" if attachment.get("Device") else ""
        state = f" ({attachment['State']})" if attachment.get("State") else ""
        return InUse(
            f"volume {volume_id} cannot be deleted: it is still attached to instance {instance}{where}{state}. "
            "Kubernetes keeps the PV Terminating until it is detached: find its VolumeAttachment "
            f"(`kubectl get volumeattachment | grep {volume_id}`) and the pod on that node that still uses it; "
            "once the attacher detaches it (ControllerUnpublishVolume), the deletion succeeds on the next retry",
            node=instance if instance.startswith("i-") else None,
        )

    # -- attach -----------------------------------------------------------------------------
    def attach(self, volume_id: str, node_id: str, readonly: bool) -> dict[str, str]:
        # EBS attachments are always read-write (readonly_attach is False); a read-only
        # publication is enforced by the mount.
        return self.attacher.attach(volume_id, node_id)

    def detach(self, volume_id: str, node_id: str) -> None:
        self.attacher.detach(volume_id, node_id)

    # -- expansion and modification ---------------------------------------------------------
    def expand_volume(self, volume_id: str, new_size_bytes: int) -> Volume:
        new_gib = -(-new_size_bytes // GiB)
        v = self._require(volume_id)
        changes: dict[str, Any] = {}
        if int(v.get("Size", 0)) < new_gib:
            changes["Size"] = new_gib
        tags = model.tags_of(v)
        if tags.get(model.IOPS_PER_GB_TAG):
            # iopsPerGB classes: IOPS follow the size, in the same ModifyVolume.
            perf = recompute_for_resize(parse_block_parameters(model.params_record(v, tags)), new_gib)
            if perf.iops is not None and perf.iops != v.get("Iops"):
                changes["Iops"] = perf.iops
        if changes:
            self._modify(volume_id, changes)
        self._wait_modified(volume_id, new_gib)
        grown = model.to_volume(self._require(volume_id))
        return dataclasses.replace(grown, size_bytes=max(grown.size_bytes, new_gib * GiB))

    def modify_volume(self, volume_id: str, *, volume_type: str | None = None, iops: int | None = None,
                      throughput: int | None = None) -> Volume:
        """Change type or performance (VolumeAttributesClass); merges with a concurrent expansion."""
        changes = {k: v for k, v in (("VolumeType", volume_type), ("Iops", iops), ("Throughput", throughput))
                   if v is not None}
        if not changes:
            return self.get_volume(volume_id)
        self._modify(volume_id, changes)
        self._wait_modified(volume_id, 0)
        return self.get_volume(volume_id)

    def apply_modification(self, volume_id: str, plan: ModifyPlan) -> Volume:
        """ControllerModifyVolume (providers/aws/ebs_modify.py)."""
        return ebs_modify.apply(self, volume_id, plan)

    def _modify(self, volume_id: str, changes: dict[str, Any]) -> None:
        self.modifier.submit(volume_id, changes, timeout=self.settings.modify_timeout)

    def _send_modify(self, volume_id: str, changes: dict[str, Any]) -> None:
        try:
            call(self.ec2, "ModifyVolume", VolumeId=volume_id, **changes)
        except FailedPrecondition as exc:
            if code_of(exc) != "IncorrectModificationState":
                raise
            latest = self._latest_modification(volume_id)
            if latest is not None and int(latest.get("TargetSize", 0)) >= int(changes.get("Size", 0)) and all(
                latest.get(f"Target{k}") == v for k, v in changes.items() if k != "Size"
            ):
                return  # our own earlier request (a retry after a crash): wait for it
            raise FailedPrecondition(
                f"volume {volume_id} is already being modified (state {latest.get('ModificationState') if latest else '?'}); "
                "EBS runs one modification at a time: this call will be retried"
            ) from exc
        except Exhausted as exc:
            raise Exhausted(
                f"EBS refuses to modify volume {volume_id} again yet ({exc.message}): after a modification, a volume "
                "can be modified again only about 6 hours later"
            ) from exc

    def _latest_modification(self, volume_id: str) -> Obj | None:
        return self.modifications.latest(volume_id)  # batched across volumes

    def _wait_modified(self, volume_id: str, size_gib: int) -> None:
        def check() -> bool | None:
            latest = self._latest_modification(volume_id)
            if latest is None:
                v = self.view.volume(volume_id)
                return True if v is not None and int(v.get("Size", 0)) >= size_gib else None
            state = latest.get("ModificationState")
            if state in ("optimizing", "completed"):  # the new size is usable once optimizing starts
                return True
            if state == "failed":
                raise FailedPrecondition(
                    f"EBS could not modify volume {volume_id}: {latest.get('StatusMessage', 'no reason given')}"
                )
            return None

        def slow() -> Unavailable:
            return Unavailable(
                f"volume {volume_id} is still being modified after {self.settings.modify_timeout:.0f}s; "
                "the call (ControllerExpandVolume or ControllerModifyVolume) will be retried"
            )

        poll(check, self.settings, timeout=self.settings.modify_timeout, on_timeout=slow)

    # -- snapshots --------------------------------------------------------------------------
    def create_snapshot(self, name: str, source_volume_id: str, tags: dict[str, str]) -> Snapshot:
        return self.snaps.create(name, source_volume_id, tags)

    def delete_snapshot(self, snapshot_id: str) -> None:
        self.snaps.delete(snapshot_id)

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        return self.snaps.get(snapshot_id)

    def list_snapshots(self) -> list[Snapshot]:
        return self.snaps.list()
