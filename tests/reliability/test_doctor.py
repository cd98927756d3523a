"""Inject each fault `elastivol doctor` knows, check it reports it with a remedy, and that --fix repairs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from elastivol import ids
from elastivol.node import fs as hostfs
from elastivol.node import loop, mount
from elastivol.providers.local.pool import Pool
from elastivol.store import SCHEMA_VERSION
from tests.reliability.conftest import ServerFactory
from tests.reliability.invariants import all_clean


def doctor(pool: Path, *args: str) -> tuple[int, list[dict[str, object]], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "elastivol", "doctor", "--pool", str(pool), "--kubelet-dir",
         str(pool.parent / "kubelet"), "--json", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )
    return proc.returncode, json.loads(proc.stdout or "[]"), proc.stderr


def _record(vol_id: str, name: str, **extra: object) -> dict[str, object]:
    rec: dict[str, object] = {"id": vol_id, "name": name, "size_bytes": 64 << 20, "requested_size_bytes": 64 << 20,
                              "zone": "zone-a", "params": {}, "mode": "filesystem", "fs_type": "ext4",
                              "created_at": time.time(), "state": "ready", "attachments": []}
    rec.update(extra)
    return rec


def _image(pool: Pool, vol_id: str, size: int = 64 << 20) -> Path:
    image = pool.image_path(vol_id)
    with open(image, "wb") as fh:
        fh.truncate(size)
    return image


def inject(pool: Pool, work: Path) -> dict[str, str]:
    """One of every fault; returns kind -> subject as doctor should name it."""
    faults: dict[str, str] = {}
    orphan = _image(pool, ids.new_id("vol"))
    faults["orphan-image"] = str(orphan)
    partial = pool.images / f"{ids.new_id('vol')}.img.partial"
    partial.write_bytes(b"")
    faults["partial-image"] = str(partial)
    deleting = ids.new_id("vol")
    pool.volumes.put(deleting, _record(deleting, "half-deleted", state="deleting"))
    faults["half-deleted-volume"] = deleting
    snap = ids.new_id("snap")
    pool.snapshots.put(snap, {"id": snap, "name": "half-snap", "source_volume_id": deleting, "size_bytes": 1,
                              "created_at": time.time(), "state": "creating"})
    pool.snapshot_path(snap).write_bytes(b"")
    faults["half-made-snapshot"] = snap
    stray_snap = pool.snapshot_path(ids.new_id("snap"))
    stray_snap.write_bytes(b"")
    faults["orphan-snapshot-image"] = str(stray_snap)
    bad = pool.volumes.directory / f"{ids.new_id('vol')}.json"
    bad.write_text(json.dumps({"schema": SCHEMA_VERSION + 7, "kind": "volume", "data": {}}))
    faults["bad-metadata"] = str(bad)
    torn = pool.volumes.directory / f".{ids.new_id('vol')}.json.999999999.1.tmp"
    torn.write_text("{")
    faults["stale-temp-record"] = str(torn)
    # A loop device over an image whose record is gone, unmounted.
    loose = loop.attach(_image(pool, ids.new_id("vol")))
    faults["loop-without-volume"] = loose.path
    # A staged-and-published volume whose record was removed behind the driver's back.
    gone = _image(pool, ids.new_id("vol"))
    dev = loop.attach(gone)
    hostfs.make(dev.path, "ext4")
    target = work / "kubelet" / "pods" / "gone" / "mount"
    target.mkdir(parents=True, exist_ok=True)
    mount.mount(dev.path, str(target), "ext4")
    faults["mount-without-volume"] = str(target)
    # A volume attached to a node that never reports.
    ghost_vol = ids.new_id("vol")
    _image(pool, ghost_vol)
    pool.volumes.put(ghost_vol, _record(ghost_vol, "on-ghost",
                                        attachments=[{"node_id": "ghost-node", "readonly": False, "attached_at": 0}]))
    faults["attached-to-silent-node"] = ghost_vol
    return faults


def test_doctor_finds_and_fixes(rel_pool: Path) -> None:
    pool = Pool(rel_pool)
    faults = inject(pool, rel_pool.parent)
    code, findings, _ = doctor(rel_pool)
    assert code == 1
    found = {(str(f["kind"]), str(f["subject"])) for f in findings}
    missing = [kv for kv in faults.items() if kv not in found]
    assert missing == [], f"doctor missed {missing}; it found {found}"
    assert all(f["remedy"] for f in findings)
    assert not next(f for f in findings if f["kind"] == "attached-to-silent-node")["safe_fix"]

    code, findings, stderr = doctor(rel_pool, "--fix")
    left = {str(f["kind"]) for f in findings}
    assert left == {"attached-to-silent-node"}, (findings, stderr)
    assert (rel_pool / "quarantine").is_dir()
    assert not mount.is_mountpoint(faults["mount-without-volume"])

    code, findings, _ = doctor(rel_pool, "--fix", "--forget-node", "ghost-node")
    assert (code, findings) == (0, [])
    # The ghost-node volume is an ordinary, detached volume now: remove it as the CO would.
    ghost_vol = faults["attached-to-silent-node"]
    Pool(rel_pool).volumes.delete(ghost_vol)
    os.unlink(Pool(rel_pool).image_path(ghost_vol))
    assert all_clean(rel_pool) == []
    assert doctor(rel_pool)[0] == 0


def test_startup_recovery_repairs_and_logs(rel_pool: Path, server_factory: ServerFactory) -> None:
    pool = Pool(rel_pool)
    faults = inject(pool, rel_pool.parent)
    # Left for a person (doctor covers them): a mounted volume whose record is gone, a silent node.
    target = faults.pop("mount-without-volume")
    faults.pop("attached-to-silent-node")
    server = server_factory("recovery").start()
    server.stop()
    log = server.log_path.read_text()
    repaired = [json.loads(line) for line in log.splitlines() if "start-up recovery:" in line]
    text = "\n".join(json.dumps(r) for r in repaired)
    for kind, subject in faults.items():
        assert f"{kind} {subject}" in text, f"{kind} {subject} not repaired at start-up:\n{text}"
    assert "start-up recovery left" in log  # what it would not touch is logged too
    code, _, stderr = doctor(rel_pool, "--fix", "--forget-node", "ghost-node")
    assert code == 0, stderr
    assert not mount.is_mountpoint(target)
    for rec in Pool(rel_pool).volumes.all():
        Pool(rel_pool).volumes.delete(rec["id"])
        Pool(rel_pool).image_path(rec["id"]).unlink()
    assert all_clean(rel_pool) == []
