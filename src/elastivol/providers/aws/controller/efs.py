"""The EFS FileProvider: one access point per dynamically provisioned volume (``efs-ap`` mode).

CreateAccessPoint carries the POSIX user, the root directory with its CreationInfo (owner and
permissions EFS applies when it creates the directory), our tags, and a ClientToken from the CSI
name, so a retried or crashed creation yields one access point. Capacity is recorded as a tag
only: EFS has no per-directory quota.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import posixpath
import tempfile
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from elastivol import crashpoints
from elastivol.domain import AccessPointSpec, Health, Snapshot
from elastivol.errors import (
    AlreadyExists,
    ElastivolError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    Unimplemented,
)
from elastivol.params.file import RESERVED_TOP_DIR
from elastivol.providers.aws.awserrors import call, call_delete, code_of
from elastivol.providers.aws.clients import AwsClients
from elastivol.providers.aws.controller.ebs_model import client_token, tag_list
from elastivol.providers.aws.controller.gid import GidAllocator
from elastivol.providers.aws.controller.probe import CachedProbe
from elastivol.providers.aws.controller.waits import poll
from elastivol.providers.aws.efs_model import (
    BASE_PATH_TAG,
    CAPACITY_TAG,
    CLUSTER_TAG,
    DELETE_ROOT_TAG,
    NAME_TAG,
    REUSE_TAG,
    Obj,
    _tags,
    to_access_point,
)
from elastivol.providers.aws.mounter import Mounter, MountRequest, remove_tree
from elastivol.providers.aws.settings import AwsSettings
from elastivol.providers.file import AccessPoint, FileSystem, check_reusable

log = logging.getLogger("elastivol.aws.efs")

crashpoints.register("aws.efs.after_create")

class EfsProvider:
    PAGE = 100  # DescribeAccessPoints page size (EFS's largest)

    def __init__(self, clients: AwsClients, settings: AwsSettings, *, cluster_id: str, mounter: Mounter,
                 work_dir: str | None = None) -> None:
        if not cluster_id:
            raise InvalidArgument("--cluster-id is required with --provider aws: access points are tagged with it")
        self.efs = clients.client("efs")
        self.settings = settings
        self.cluster_id = cluster_id
        self.mounter = mounter
        self.work_dir = work_dir
        self.gids = GidAllocator()
        self._lock = threading.Lock()
        self._probe = CachedProbe(settings.probe_cache, "EFS access points")

    # -- reading ----------------------------------------------------------------------------
    def _pages(self, operation: str, key: str, token_in: str, token_out: str, **params: Any) -> Iterator[Obj]:
        token = ""
        for _ in range(10_000):
            resp = call(self.efs, operation, **params, **({token_in: token} if token else {}))
            yield from resp.get(key, [])
            token = resp.get(token_out) or ""
            if not token:
                return

    def _access_points(self, fs_id: str | None) -> list[Obj]:
        params: dict[str, Any] = {"MaxResults": self.PAGE}
        if fs_id:
            params["FileSystemId"] = fs_id
        return list(self._pages("DescribeAccessPoints", "AccessPoints", "NextToken", "NextToken", **params))

    def _describe(self, ap_id: str) -> Obj | None:
        try:
            found = call(self.efs, "DescribeAccessPoints", AccessPointId=ap_id).get("AccessPoints", [])
        except NotFound:
            return None
        return found[0] if found else None

    def health(self) -> Health:
        return self._probe(self._describe_one)

    def _describe_one(self) -> Health | ElastivolError:
        try:
            call(self.efs, "DescribeFileSystems", MaxItems=1)
            return Health(True)
        except ElastivolError as exc:
            return exc

    def get_filesystem(self, fs_id: str) -> FileSystem:
        try:
            found = call(self.efs, "DescribeFileSystems", FileSystemId=fs_id).get("FileSystems", [])
        except NotFound:
            found = []
        if not found:
            raise NotFound(f"file system {fs_id} does not exist in this region")
        return _filesystem(found[0])

    def list_filesystems(self) -> list[FileSystem]:
        return [_filesystem(f) for f in self._pages("DescribeFileSystems", "FileSystems", "Marker", "NextMarker",
                                                     MaxItems=100)]

    def get_access_point(self, fs_id: str, ap_id: str) -> AccessPoint:
        found = self._describe(ap_id)
        if found is None or found.get("FileSystemId") != fs_id:
            raise NotFound(f"access point {ap_id} of file system {fs_id} does not exist")
        return to_access_point(found)

    def list_access_points(self, fs_id: str | None = None) -> list[AccessPoint]:
        return [to_access_point(a) for a in self._access_points(fs_id) if _tags(a).get(CLUSTER_TAG) == self.cluster_id]

    # -- create -----------------------------------------------------------------------------
    def create_access_point(self, spec: AccessPointSpec) -> AccessPoint:
        if spec.enforce_capacity:
            raise InvalidArgument(
                'enforceCapacity: "true" cannot be honoured on AWS: EFS has no per-directory quota, so an access '
                "point's capacity is recorded but never enforced; remove enforceCapacity from the StorageClass"
            )
        existing = self._access_points(spec.fs_id)
        for ap in existing:
            tags = _tags(ap)
            if tags.get(NAME_TAG) == spec.name:
                return self._same(ap, spec)
        if spec.reuse and spec.reuse_key:
            for ap in existing:
                if _tags(ap).get(REUSE_TAG) == spec.reuse_key:
                    found = to_access_point(ap)
                    check_reusable(found.id, found.directory, found.uid, found.gid, spec)
                    return found
        if spec.gid is not None:
            return self._create(spec, spec.gid)
        with self.gids.allocate(spec.fs_id, spec.gid_range, lambda: self._used_gids(spec.fs_id)) as gid:
            return self._create(spec, gid)

    def _used_gids(self, fs_id: str) -> set[int]:
        return {int((a.get("PosixUser") or {}).get("Gid", -1)) for a in self._access_points(fs_id)}

    def _same(self, ap: Obj, spec: AccessPointSpec) -> AccessPoint:
        found = to_access_point(ap)
        differences = []
        if found.directory != spec.directory:
            differences.append(f"directory {found.directory} != {spec.directory}")
        if found.perms != spec.perms:
            differences.append(f"directoryPerms {found.perms:o} != {spec.perms:o}")
        if spec.gid is not None and found.gid != spec.gid:
            differences.append(f"gid {found.gid} != {spec.gid}")
        if spec.gid is None and not spec.gid_range[0] <= found.gid <= spec.gid_range[1]:
            differences.append(f"gid {found.gid} is outside {spec.gid_range[0]}-{spec.gid_range[1]}")
        if spec.uid is not None and found.uid != spec.uid:
            differences.append(f"uid {found.uid} != {spec.uid}")
        if differences:
            raise AlreadyExists(
                f"a volume named {spec.name!r} already exists as access point {found.id} with different settings "
                f"({'; '.join(differences)}); use another name or delete that volume"
            )
        return found

    def _create(self, spec: AccessPointSpec, gid: int) -> AccessPoint:
        uid = spec.uid if spec.uid is not None else gid  # as EFS: the allocated GID doubles as the UID
        tags = {**spec.tags, "Name": spec.name, NAME_TAG: spec.name, CLUSTER_TAG: self.cluster_id,
                CAPACITY_TAG: str(spec.capacity_bytes)}
        if spec.delete_root_dir:
            tags[DELETE_ROOT_TAG] = "true"
        if spec.reuse_key:
            tags[REUSE_TAG] = spec.reuse_key
        if spec.base_path:
            tags[BASE_PATH_TAG] = spec.base_path
        try:
            resp = call(
                self.efs, "CreateAccessPoint",
                ClientToken=client_token(spec.name)[:64],
                FileSystemId=spec.fs_id,
                PosixUser={"Uid": uid, "Gid": gid},
                RootDirectory={"Path": spec.directory,
                               "CreationInfo": {"OwnerUid": uid, "OwnerGid": gid, "Permissions": f"{spec.perms:o}"}},
                Tags=tag_list(tags),
            )
        except AlreadyExists as exc:
            if code_of(exc) == "IdempotentParameterMismatch":
                raise AlreadyExists(
                    f"an access point for {spec.name!r} was already requested with different settings (EFS said "
                    "IdempotentParameterMismatch for the ClientToken derived from the name); a retried CreateVolume "
                    "must ask for the same directory, uid, gid and permissions"
                ) from exc
            raise
        except NotFound as exc:
            raise InvalidArgument(
                f"file system {spec.fs_id} does not exist in this region ({exc.message}); check fileSystemId in "
                "the StorageClass"
            ) from exc
        crashpoints.hit("aws.efs.after_create")
        return to_access_point(self._wait_available(str(resp["AccessPointId"]), resp))

    def _wait_available(self, ap_id: str, created: Obj) -> Obj:
        def check() -> Obj | None:
            found = self._describe(ap_id)
            if found is not None and found.get("LifeCycleState", "available") == "available":
                return found
            if found is not None and found.get("LifeCycleState") == "error":
                raise FailedPrecondition(f"EFS could not create access point {ap_id}")
            return None

        try:
            return poll(check, self.settings, timeout=self.settings.create_timeout,
                        on_timeout=lambda: Unavailable(f"access point {ap_id} is not available yet; retry"))
        except Unavailable:
            return created

    # -- delete -----------------------------------------------------------------------------
    def delete_access_point(self, fs_id: str, ap_id: str) -> None:
        found = self._describe(ap_id)
        if found is None or found.get("FileSystemId") != fs_id:
            return  # already gone: success
        ap = to_access_point(found)
        if ap.delete_root_dir:
            self._delete_root_dir(ap)
        call_delete(self.efs, "DeleteAccessPoint", AccessPointId=ap_id)

    def _delete_root_dir(self, ap: AccessPoint) -> None:
        """Remove the access point's directory, with the local provider's guards: never the file
        system root or the base path itself, never a directory another access point still uses."""
        directory = posixpath.normpath("/" + ap.directory.lstrip("/"))
        base = posixpath.normpath("/" + ap.tags.get(BASE_PATH_TAG, "/").lstrip("/"))
        top = directory.split("/")[1] if directory != "/" else ""
        if directory in ("/", base) or top == RESERVED_TOP_DIR or not _inside(directory, base):
            log.warning("not deleting %s of %s: only a directory below the base path %s is deleted", directory,
                        ap.id, base)
            return
        for other in self._access_points(ap.fs_id):
            if other.get("AccessPointId") == ap.id:
                continue
            theirs = posixpath.normpath(str((other.get("RootDirectory") or {}).get("Path", "/")))
            if _inside(theirs, directory):
                log.info("keeping %s: access point %s still uses it", directory, other.get("AccessPointId"))
                return
        with self._mounted_root(ap.fs_id) as root:
            target = root / directory.lstrip("/")
            if os.path.realpath(target) != os.path.join(os.path.realpath(root), directory.lstrip("/")):
                log.warning("not deleting %s of %s: the path goes through a symbolic link", directory, ap.id)
                return
            remove_tree(target)

    @contextlib.contextmanager
    def _mounted_root(self, fs_id: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix=f"efs-{fs_id}-", dir=self.work_dir) as tmp:
            target = Path(tmp) / "root"
            self.mounter.mount(MountRequest(fs_id, "/", None, str(target)))
            try:
                yield target
            finally:
                self.mounter.unmount(str(target))

    # -- capacity ---------------------------------------------------------------------------
    def expand_access_point(self, fs_id: str, ap_id: str, new_size_bytes: int) -> AccessPoint:
        ap = self.get_access_point(fs_id, ap_id)
        if new_size_bytes <= ap.capacity_bytes:
            return ap  # already that big: a capacity never shrinks
        call(self.efs, "TagResource", ResourceId=ap_id, Tags=tag_list({CAPACITY_TAG: str(new_size_bytes)}))
        return dataclasses.replace(ap, capacity_bytes=new_size_bytes,
                                   tags={**ap.tags, CAPACITY_TAG: str(new_size_bytes)})

    # -- snapshots: EFS has none per access point -----------------------------------------
    def create_snapshot(self, name: str, fs_id: str, ap_id: str, tags: dict[str, str]) -> Snapshot:
        raise Unimplemented("snapshots of EFS access points are not offered by the aws provider; use AWS Backup")

    def delete_snapshot(self, snapshot_id: str) -> None:
        return None

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        raise NotFound(f"snapshot {snapshot_id} does not exist")

    def list_snapshots(self) -> list[Snapshot]:
        return []


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _filesystem(f: Obj) -> FileSystem:
    created = f.get("CreationTime")
    return FileSystem(
        id=str(f["FileSystemId"]),
        name=str(f.get("Name") or f["FileSystemId"]),
        root="",
        created_at=created.timestamp() if isinstance(created, datetime) else 0.0,
    )
