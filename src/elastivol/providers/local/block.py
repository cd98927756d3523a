"""Block volumes on a local pool, the controller side: sparse images and their records (the node side,
loop devices, is :mod:`elastivol.providers.local.block_node`)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from elastivol import crashpoints, ids
from elastivol.domain import Attachment, Capacity, ContentSource, Health, Snapshot, VolumeMode
from elastivol.errors import (
    AlreadyExists,
    Exhausted,
    FailedPrecondition,
    InUse,
    InvalidArgument,
    NotFound,
    OutOfRange,
)
from elastivol.node import copy as hostcopy
from elastivol.node import fs as hostfs
from elastivol.node import loop, mount
from elastivol.params.block import parse_block_parameters, same_request, to_record
from elastivol.params.block_modify import ModifyPlan
from elastivol.providers.block import Volume, VolumeSpec
from elastivol.providers.local import modify
from elastivol.providers.local.pool import ATTACH_LOCK, SPACE_LOCK, Pool, snapshot_from_record

log = logging.getLogger("elastivol.providers.local.block")

crashpoints.register(
    "create.after_image",
    "delete.after_image",
    "snapshot.after_copy",
    "expand.after_image",
    "attach.before_record",
    "freeze.while_frozen",
)


def dm_crypt_available() -> bool:
    return Path("/dev/mapper/control").exists()


def _volume_from_record(rec: dict[str, Any], image: Path) -> Volume:
    source = None
    if rec.get("source_kind"):
        source = ContentSource(rec["source_kind"], rec["source_id"])
    abnormal = ""
    if rec.get("state") == "deleting":
        abnormal = "volume is being deleted"
    elif not image.exists():
        abnormal = f"the volume's image {image} is missing from the pool"
    return Volume(
        id=rec["id"],
        name=rec["name"],
        size_bytes=int(rec["size_bytes"]),
        zone=rec["zone"],
        params=dict(rec.get("params", {})),
        mode=VolumeMode(rec.get("mode", "filesystem")),
        fs_type=rec.get("fs_type", "ext4"),
        source=source,
        created_at=float(rec.get("created_at", 0.0)),
        attachments=tuple(
            Attachment(a["node_id"], bool(a.get("readonly")), float(a.get("attached_at", 0.0)))
            for a in rec.get("attachments", [])
        ),
        abnormal=abnormal,
        extra={k: str(v) for k, v in rec.get("performance", {}).items()},
    )


class LocalBlockProvider:
    """Controller side of the local block provider."""

    readonly_attach = True  # a read-only attachment is a read-only loop device on the node

    def __init__(self, pool: Pool, zones: list[str], *, max_volumes_per_node: int = 0) -> None:
        if not zones:
            raise InvalidArgument("the local block provider needs at least one zone (--zone or --zones)")
        self.pool = pool
        self._zones = list(zones)
        self.max_volumes_per_node = max_volumes_per_node

    # -- health and topology ---------------------------------------------------------------
    def health(self) -> Health:
        return self.pool.health()

    def zones(self) -> list[str]:
        return list(self._zones)

    def node_zone(self, node_id: str) -> str:
        rec = self.pool.nodes.get(node_id) if ids.is_node_id(node_id) else None
        if rec is None:
            raise NotFound(
                f"node {node_id!r} is not known to this pool: is the elastivol node plugin running there "
                "with the same --pool?"
            )
        return str(rec["zone"])

    def capacity(self, zone: str | None) -> Capacity:
        if zone is not None and zone not in self._zones:
            return Capacity(0, 0)
        available = self.pool.available_bytes()
        return Capacity(available_bytes=available, maximum_volume_size=available)

    # -- volumes -----------------------------------------------------------------------------
    def _record(self, volume_id: str) -> dict[str, Any]:
        rec = self.pool.volumes.get(volume_id) if ids.is_volume_id(volume_id) else None
        if rec is None:
            raise NotFound(f"volume {volume_id} does not exist")
        return rec

    def get_volume(self, volume_id: str) -> Volume:
        rec = self._record(volume_id)
        return _volume_from_record(rec, self.pool.image_path(rec["id"]))

    def list_volumes(self) -> list[Volume]:
        out = [_volume_from_record(r, self.pool.image_path(r["id"])) for r in self.pool.volumes.all()]
        return sorted(out, key=lambda v: (v.created_at, v.id))

    def create_volume(self, spec: VolumeSpec) -> Volume:
        self.pool.require_usable()
        existing = self.pool.volumes.find("name", spec.name)
        if existing is not None:
            return self._same_or_conflict(existing, spec)
        if spec.params.encrypted:
            where = "is present, but LUKS on local volumes is not implemented yet" if dm_crypt_available() else (
                "is not available on this kernel (no device-mapper)"
            )
            raise InvalidArgument(
                f'encrypted: "true" needs dm-crypt on the local provider, and dm-crypt {where}; '
                "remove `encrypted` from the StorageClass, or use the aws provider for encrypted EBS volumes"
            )
        if spec.zone not in self._zones:
            raise Exhausted(f"zone {spec.zone!r} is not served by this pool; it serves {self._zones}")
        source_image = self._source_image(spec)
        volume_id = ids.new_id("vol")
        with self.pool.operation(), self.pool.reserved(volume_id, spec.size_bytes, f"volume {spec.name!r}"):
            return self._create(volume_id, spec, source_image)

    def _create(self, volume_id: str, spec: VolumeSpec, source_image: tuple[Path, int, str] | None) -> Volume:
        image = self.pool.image_path(volume_id)
        consistency = self._make_image(image, spec, source_image)
        crashpoints.hit("create.after_image")
        rec: dict[str, Any] = {
            "id": volume_id,
            "name": spec.name,
            "size_bytes": spec.size_bytes,
            "requested_size_bytes": spec.size_bytes,
            "zone": spec.zone,
            "params": to_record(spec.params),
            "mode": spec.mode.value,
            "fs_type": spec.fs_type,
            "created_at": time.time(),
            "state": "ready",
            "attachments": [],
        }
        if spec.source is not None:
            rec["source_kind"] = spec.source.kind
            rec["source_id"] = spec.source.id
            rec["source_consistency"] = consistency
        with self.pool.out_of_space(f"recording {spec.name!r}", say_why=False):
            try:
                self.pool.volumes.put(volume_id, rec)
            except OSError:
                # No record, no volume: take the image back rather than leave an orphan.
                image.unlink(missing_ok=True)
                raise
        return _volume_from_record(rec, image)

    def _same_or_conflict(self, rec: dict[str, Any], spec: VolumeSpec) -> Volume:
        differences = []
        if int(rec.get("requested_size_bytes", rec["size_bytes"])) != spec.size_bytes:
            differences.append(f"size {rec.get('requested_size_bytes')} != {spec.size_bytes}")
        if not same_request(parse_block_parameters(rec.get("params", {})), spec.params):
            differences.append("parameters differ")
        if rec.get("mode") != spec.mode.value:
            differences.append(f"volume mode {rec.get('mode')} != {spec.mode.value}")
        elif spec.mode is VolumeMode.FILESYSTEM and rec.get("fs_type") != spec.fs_type:
            differences.append(f"fs type {rec.get('fs_type')} != {spec.fs_type}")
        source = (spec.source.kind, spec.source.id) if spec.source else (None, None)
        if (rec.get("source_kind"), rec.get("source_id")) != source:
            differences.append("content source differs")
        if differences:
            raise AlreadyExists(
                f"a volume named {spec.name!r} already exists as {rec['id']} with different settings "
                f"({'; '.join(differences)}); use another name or delete that volume"
            )
        return _volume_from_record(rec, self.pool.image_path(rec["id"]))

    def _source_image(self, spec: VolumeSpec) -> tuple[Path, int, str] | None:
        """(image, size, mountpoint-to-freeze) of the content source, validated against the spec."""
        if spec.source is None:
            return None
        if spec.source.kind == "snapshot":
            rec = self.pool.snapshots.get(spec.source.id) if ids.is_snapshot_id(spec.source.id) else None
            if rec is None or rec.get("state") != "ready":
                raise NotFound(f"snapshot {spec.source.id} does not exist")
            size = int(rec["size_bytes"])
            path = self.pool.snapshot_path(spec.source.id)
            freeze_at = ""
        else:
            src = self._record(spec.source.id) if ids.is_volume_id(spec.source.id) else None
            if src is None:
                raise NotFound(f"source volume {spec.source.id} does not exist")
            if src["zone"] != spec.zone:
                raise Exhausted(
                    f"a clone must be in its source's zone: {spec.source.id} is in {src['zone']}, "
                    f"but {spec.zone} was required"
                )
            size = int(src["size_bytes"])
            path = self.pool.image_path(spec.source.id)
            freeze_at = self._staged_mountpoint(path)
        if spec.size_bytes < size:
            raise OutOfRange(
                f"the requested size {spec.size_bytes} bytes is smaller than the source {spec.source.id} "
                f"({size} bytes): ask for at least {size} bytes"
            )
        if spec.mode.value != (rec_mode := self._source_mode(spec.source)):
            raise InvalidArgument(f"source {spec.source.id} is a {rec_mode} volume; the request is {spec.mode.value}")
        return path, size, freeze_at

    def _source_mode(self, source: ContentSource) -> str:
        if source.kind == "volume":
            return str(self._record(source.id).get("mode", "filesystem"))
        rec = self.pool.snapshots.get(source.id) or {}
        return str(rec.get("source_mode", "filesystem"))

    def _make_image(self, image: Path, spec: VolumeSpec, source: tuple[Path, int, str] | None) -> str:
        """Make the volume's image; on any failure nothing of it is left in the pool."""
        tmp = image.with_name(image.name + ".partial")
        with self.pool.out_of_space(f"making the image of {spec.name!r}"):
            try:
                consistency = self._write_image(tmp, spec, source)
                os.replace(tmp, image)
                hostcopy.fsync_dir(image.parent)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return consistency

    def _write_image(self, tmp: Path, spec: VolumeSpec, source: tuple[Path, int, str] | None) -> str:
        if source is None:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.ftruncate(fd, spec.size_bytes)
                if spec.params.preallocate:
                    try:
                        os.posix_fallocate(fd, 0, spec.size_bytes)
                    except OSError as exc:
                        raise Exhausted(f"cannot preallocate {spec.size_bytes} bytes in the pool: {exc.strerror}") from exc
                os.fsync(fd)
            finally:
                os.close(fd)
            return ""
        src_path, _size, freeze_at = source
        with self._frozen(freeze_at) as consistency:
            hostcopy.clone_file(str(src_path), str(tmp))
        if spec.size_bytes > os.stat(tmp).st_size:
            os.truncate(tmp, spec.size_bytes)
        return consistency

    @contextlib.contextmanager
    def _frozen(self, mountpoint: str) -> Iterator[str]:
        if not mountpoint:
            yield "crash"
            return
        # A marker written before the freeze and removed after the thaw: a process killed in
        # between leaves the filesystem frozen (the kernel keeps it so), and start-up recovery
        # finds the marker and thaws it. See recovery.scan_frozen.
        marker = self.pool.freeze_marker(mountpoint)
        try:
            with hostfs.frozen(mountpoint):
                crashpoints.hit("freeze.while_frozen")
                yield "filesystem"
        finally:
            marker.unlink(missing_ok=True)

    def _staged_mountpoint(self, image: Path) -> str:
        """Where the image is mounted on this host (its staging path), or ''."""
        devices = {d.major_minor for d in loop.find(str(image))}
        if not devices:
            return ""
        for info in mount.mounts():
            # By what is mounted (device number, whole filesystem), not by the source text.
            if info.major_minor in devices and info.root == "/":
                return info.target
        return ""

    def delete_volume(self, volume_id: str) -> None:
        if not ids.is_volume_id(volume_id):
            return
        rec = self.pool.volumes.get(volume_id)
        image = self.pool.image_path(volume_id)
        if rec is None:
            # An image without a record is a create that crashed before writing it.
            image.unlink(missing_ok=True)
            return
        if rec.get("attachments"):
            nodes = ", ".join(a["node_id"] for a in rec["attachments"])
            raise InUse(
                f"volume {volume_id} is still attached to node {nodes}: unpublish it first "
                "(delete the pod or its VolumeAttachment)",
                node=rec["attachments"][0]["node_id"],
            )
        # Never unlink an image a loop device still holds: the device would keep serving a file
        # no one can find. An unused device (a plugin that died before unstaging) is detached.
        with self.pool.operation(), self._released(image, f"volume {volume_id}"):
            rec["state"] = "deleting"
            self.pool.volumes.put(volume_id, rec)
            image.unlink(missing_ok=True)
            crashpoints.hit("delete.after_image")
            self.pool.volumes.delete(volume_id)

    @staticmethod
    @contextlib.contextmanager
    def _released(image: Path, what: str) -> Iterator[None]:
        try:
            with loop.released(image):
                yield
        except InUse as exc:
            raise InUse(f"{what} is still in use on this host: {exc.message}") from None

    # -- attachments -------------------------------------------------------------------------
    def attach(self, volume_id: str, node_id: str, readonly: bool) -> dict[str, str]:
        node_zone = self.node_zone(node_id)
        self._record(volume_id)
        # The slot count and the record write are one step for every process on the pool, so
        # concurrent attaches can never take more slots than the node has.
        with self.pool.exclusive(ATTACH_LOCK):
            rec = self.pool.volumes.read(volume_id)
            if rec is None:
                raise NotFound(f"volume {volume_id} does not exist")
            return self._attach_locked(rec, volume_id, node_id, node_zone, readonly)

    def _attach_locked(
        self, rec: dict[str, Any], volume_id: str, node_id: str, node_zone: str, readonly: bool
    ) -> dict[str, str]:
        if rec.get("state") == "deleting":
            raise FailedPrecondition(f"volume {volume_id} is being deleted")
        if node_zone != rec["zone"]:
            raise FailedPrecondition(
                f"volume {volume_id} is in zone {rec['zone']} but node {node_id} is in zone {node_zone}: "
                "a block volume can only attach to nodes in its own zone; schedule the pod there"
            )
        attachments: list[dict[str, Any]] = rec.get("attachments", [])
        for a in attachments:
            if a["node_id"] == node_id:
                if bool(a.get("readonly")) != readonly:
                    raise AlreadyExists(
                        f"volume {volume_id} is already attached to node {node_id} with readonly="
                        f"{bool(a.get('readonly'))}; detach it first to change that"
                    )
                return self._publish_context(rec)
        multi = rec.get("params", {}).get("multiAttach") == "true" and rec.get("mode") == "block"
        if attachments and not multi:
            raise FailedPrecondition(
                f"volume {volume_id} is attached to node {attachments[0]['node_id']}; it can be attached to "
                "one node at a time: detach it there first (delete the pod using it)"
            )
        limit = self._node_limit(node_id)
        if limit > 0:
            used = sum(
                1
                for r in self.pool.volumes.all(fresh=True)
                if r["id"] != volume_id
                for a in r.get("attachments", [])
                if a["node_id"] == node_id
            )
            if used >= limit:
                raise Exhausted(
                    f"node {node_id} already has {used} volumes attached, its limit is {limit} "
                    "(--max-volumes-per-node): move the pod or detach another volume"
                )
        crashpoints.hit("attach.before_record")
        attachments.append({"node_id": node_id, "readonly": readonly, "attached_at": time.time()})
        rec["attachments"] = attachments
        self.pool.volumes.put(volume_id, rec)
        return self._publish_context(rec)

    def _node_limit(self, node_id: str) -> int:
        rec = self.pool.nodes.get(node_id) or {}
        node_limit = int(rec.get("max_volumes", 0))
        limits = [x for x in (node_limit, self.max_volumes_per_node) if x > 0]
        return min(limits) if limits else 0

    @staticmethod
    def _publish_context(rec: dict[str, Any]) -> dict[str, str]:
        return {"elastivol.io/attachment": "loop", "elastivol.io/zone": str(rec["zone"])}

    def detach(self, volume_id: str, node_id: str) -> None:
        if not ids.is_volume_id(volume_id):
            return
        with self.pool.exclusive(ATTACH_LOCK):
            rec = self.pool.volumes.read(volume_id)
            if rec is None:
                return
            attachments = rec.get("attachments", [])
            remaining = [a for a in attachments if a["node_id"] != node_id]
            if len(remaining) != len(attachments):
                rec["attachments"] = remaining
                self.pool.volumes.put(volume_id, rec)

    # -- expansion ---------------------------------------------------------------------------
    def expand_volume(self, volume_id: str, new_size_bytes: int) -> Volume:
        rec = self._record(volume_id)
        current = int(rec["size_bytes"])
        image = self.pool.image_path(volume_id)
        if new_size_bytes < current:
            raise OutOfRange(
                f"volumes can only grow: {volume_id} is {current} bytes and {new_size_bytes} was asked"
            )
        if new_size_bytes > current:
            # Checked and taken in one step: the grown image is itself the reservation. An image
            # already grown by a crashed attempt has been counted, so only the rest is asked for.
            with self.pool.exclusive(SPACE_LOCK):
                grow_by = new_size_bytes - max(current, os.stat(image).st_size)
                available = self.pool.available_bytes()
                if grow_by > available:
                    raise Exhausted(
                        f"pool {self.pool.directory} cannot promise {grow_by} more bytes to grow {volume_id} "
                        f"(it can promise {available}); free space, grow the pool, or set --overcommit-ratio"
                    )
                if os.stat(image).st_size < new_size_bytes:
                    os.truncate(image, new_size_bytes)
            crashpoints.hit("expand.after_image")
            rec["size_bytes"] = new_size_bytes
            self.pool.volumes.put(volume_id, rec)
        elif os.stat(image).st_size < current:
            # A crash between the record and the image: finish growing the image.
            os.truncate(image, current)
        return _volume_from_record(rec, image)

    def set_performance(self, volume_id: str, performance: dict[str, str]) -> None:
        rec = self._record(volume_id)
        rec["performance"] = performance
        self.pool.volumes.put(volume_id, rec)

    def apply_modification(self, volume_id: str, plan: ModifyPlan) -> Volume:
        """ControllerModifyVolume: the new parameters recorded atomically (providers/local/modify.py)."""
        return modify.apply(self, volume_id, plan)

    # -- snapshots ---------------------------------------------------------------------------
    def create_snapshot(self, name: str, source_volume_id: str, tags: dict[str, str]) -> Snapshot:
        existing = self.pool.snapshots.find("name", name)
        if existing is not None:
            if existing["source_volume_id"] != source_volume_id:
                raise AlreadyExists(
                    f"a snapshot named {name!r} already exists ({existing['id']}) for volume "
                    f"{existing['source_volume_id']}, not {source_volume_id}"
                )
            if existing.get("state") == "ready":
                return snapshot_from_record(existing)
            # A half-made snapshot with this name: finish it below under the same id.
            snapshot_id = existing["id"]
        else:
            snapshot_id = ids.new_id("snap")
        src = self._record(source_volume_id)
        image = self.pool.image_path(source_volume_id)
        if not image.exists():
            raise FailedPrecondition(f"volume {source_volume_id} has no image in the pool; it cannot be snapshotted")
        rec: dict[str, Any] = {
            "id": snapshot_id,
            "name": name,
            "source_volume_id": source_volume_id,
            "source_mode": src.get("mode", "filesystem"),
            "source_fs_type": src.get("fs_type", "ext4"),
            "size_bytes": int(src["size_bytes"]),
            "created_at": time.time(),
            "state": "creating",
            "tags": tags,
        }
        with self.pool.operation():
            self.pool.snapshots.put(snapshot_id, rec)
            target = self.pool.snapshot_path(snapshot_id)
            with self._frozen(self._staged_mountpoint(image)) as consistency:
                method = hostcopy.clone_file(str(image), str(target))
            crashpoints.hit("snapshot.after_copy")
            rec.update(state="ready", consistency=consistency, method=method)
            self.pool.snapshots.put(snapshot_id, rec)
        return snapshot_from_record(rec)

    def delete_snapshot(self, snapshot_id: str) -> None:
        if not ids.is_snapshot_id(snapshot_id):
            return
        image = self.pool.snapshot_path(snapshot_id)
        with self._released(image, f"snapshot {snapshot_id}"):
            image.unlink(missing_ok=True)
            self.pool.snapshots.delete(snapshot_id)

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        rec = self.pool.snapshots.get(snapshot_id) if ids.is_snapshot_id(snapshot_id) else None
        if rec is None:
            raise NotFound(f"snapshot {snapshot_id} does not exist")
        return snapshot_from_record(rec)

    def list_snapshots(self) -> list[Snapshot]:
        recs = [r for r in self.pool.snapshots.all() if r.get("state") == "ready"]
        return sorted((snapshot_from_record(r) for r in recs), key=lambda s: (s.created_at, s.id))


