"""EFS without NFS, for tests: a mounter that records the command a node would run and binds a local
directory in its place (the aws assembly takes it through :class:`elastivol.assembly.parts.Parts`)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from elastivol.node import mount as hostmount
from elastivol.providers.aws.mounter import MountRequest, mount_command, mount_conflict

# Test servers: bind directories under this root instead of mounting NFS (read by tests.support.serve).
FAKE_EFS_ENV = "ELASTIVOL_EFS_FAKE_ROOT"


class RecordingMounter:
    """For tests, where there is no NFS: records the command a node would run and bind-mounts a
    local directory that plays the file system, so that data flows between publications. On the
    first mount of an access point it creates the root directory with the access point's owner and
    permissions, as EFS does."""

    def __init__(self, root: Path, region: str = "", log_path: Path | None = None) -> None:
        self.root = root
        self.region = region
        self.log_path = log_path
        self.records: list[dict[str, object]] = []
        self._lock = threading.Lock()

    def _record(self, entry: dict[str, object]) -> None:
        with self._lock:
            self.records.append(entry)
            if self.log_path is not None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry) + "\n")

    def backing(self, req: MountRequest) -> Path:
        base = self.root / req.fs_id
        ap = req.access_point
        if ap is not None:
            base = base / ap.directory.strip("/")
            if not base.exists():
                base.mkdir(parents=True)
                os.chown(base, ap.uid, ap.gid)
                base.chmod(ap.perms)
        return base / req.path.strip("/")

    def mount(self, req: MountRequest) -> None:
        self._record({"op": "mount", "argv": mount_command(req, self.region, True), "target": req.target})
        os.makedirs(req.target, exist_ok=True)
        source = self.backing(req)
        source.mkdir(parents=True, exist_ok=True)
        found = hostmount.find_by_target(req.target)
        if found is not None:
            # The stand-in's "source" is the directory that plays the file system: compare by identity.
            here, wanted = os.stat(req.target), os.stat(source)
            if (here.st_dev, here.st_ino) != (wanted.st_dev, wanted.st_ino):
                raise mount_conflict(req, f"another directory ({found.source}{found.root})")
            if found.read_only != req.readonly:
                raise mount_conflict(req, f"{req.fs_id}:{req.path} {'read-only' if found.read_only else 'read-write'}")
            return
        # Per-mount words apply to the bind; NFS/EFS transport words have nothing to act on in it.
        hostmount.bind(str(source), req.target, readonly=req.readonly,
                       options=hostmount.volume_options(req.options))

    def unmount(self, target: str) -> None:
        self._record({"op": "unmount", "target": target})
        hostmount.unmount_all(target)
