"""`elastivol doctor`: inspect a node and a pool, say what is wrong and what to run; `--fix` the safe cases."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from elastivol import ids
from elastivol.errors import ElastivolError
from elastivol.node import iothrottle, mount
from elastivol.providers.local.pool import Pool, PoolLoop
from elastivol.recovery import Finding, Fix, apply, scan_loops, scan_pool

DEFAULT_KUBELET_DIR = "/var/lib/kubelet"
# Nodes re-register every 30 s; three missed beats and a margin mean the node is gone or cut off.
DEFAULT_NODE_TIMEOUT = 120.0
FIX_ROUNDS = 4


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def scan_mounts(pool: Pool, roots: list[str]) -> list[Finding]:
    """Mounts under the kubelet roots of a loop device over a pool image whose volume is gone.

    Recognised by what is mounted (the device's "major:minor", or a bind of its device node),
    not by the source path mountinfo prints.
    """
    by_number: dict[str, PoolLoop] = {}
    by_node: dict[str, PoolLoop] = {}
    for pl in pool.loop_devices():
        by_number[pl.device.major_minor] = pl
        by_node[f"/loop{pl.device.number}"] = pl
    out = []
    for m in mount.mounts():
        found = by_number.get(m.major_minor) or (by_node.get(m.root) if m.fstype == "devtmpfs" else None)
        if found is None or not _under(m.target, roots):
            continue
        volume_id = found.object_id
        if found.image is not None and found.kind == "volume" and pool.volumes.get(volume_id) is not None:
            continue
        out.append(Finding("mount-without-volume", m.target,
                           f"{m.target} mounts {found.device.path}, whose volume {volume_id or '?'} is gone from the "
                           "pool; --fix unmounts it",
                           f"umount {m.target}", _unmount(m.target)))
    return out


def _unmount(target: str) -> Fix:
    def fix() -> None:
        mount.unmount_all(target)
    return fix


def scan_nodes(pool: Pool, timeout: float, now: float | None = None) -> list[Finding]:
    """Volumes attached to nodes that stopped reporting (no heartbeat within ``timeout``)."""
    now = time.time() if now is None else now
    out = []
    for rec in pool.volumes.all():
        for a in rec.get("attachments", []):
            node_id = str(a.get("node_id", ""))
            node = pool.nodes.get(node_id) if ids.is_node_id(node_id) else None
            age = now - float(node.get("last_seen", 0.0)) if node else None
            if age is not None and age <= timeout:
                continue
            silent = "is not registered in the pool" if age is None else f"last reported {age:.0f}s ago"
            out.append(Finding(
                "attached-to-silent-node", rec["id"],
                f"volume {rec['id']} ({rec.get('name')}) is attached to node {node_id}, which {silent}",
                f"check the node; if it is gone for good: elastivol doctor --pool {pool.directory} "
                f"--forget-node {node_id}"))
    return out


def forget_node(pool: Pool, node_id: str) -> list[str]:
    """Drop every attachment to ``node_id`` and its registration: for a node that will not come back."""
    done = []
    for rec in pool.volumes.all():
        kept = [a for a in rec.get("attachments", []) if a.get("node_id") != node_id]
        if len(kept) != len(rec.get("attachments", [])):
            rec["attachments"] = kept
            pool.volumes.put(rec["id"], rec)
            done.append(f"detached {rec['id']} from node {node_id}")
    if ids.is_node_id(node_id) and pool.nodes.delete(node_id):
        done.append(f"forgot node {node_id}")
    return done


def scan_throttle() -> list[Finding]:
    """No cgroup I/O controller: volumes cannot be held to their type's performance on this host."""
    if iothrottle.detect() is not None:
        return []
    return [Finding("no-io-controller", "/sys/fs/cgroup", iothrottle.NO_CONTROLLER,
                    "mount the blkio (cgroup v1) or io (cgroup v2) controller, or serve with --no-enforce-performance")]


def inspect(pool: Pool, roots: list[str], node_timeout: float) -> list[Finding]:
    with pool.quiesced() as alone:
        findings = scan_pool(pool) if alone else []
    if not alone:
        findings.append(Finding("pool-busy", str(pool.directory), "another process is changing the pool",
                                "run doctor again in a moment"))
    return (findings + scan_loops(pool) + scan_mounts(pool, roots) + scan_nodes(pool, node_timeout)
            + scan_throttle())


def _show(findings: list[Finding], as_json: bool) -> None:
    if as_json:
        rows = [{"kind": f.kind, "subject": f.subject, "detail": f.detail, "remedy": f.remedy, "safe_fix": f.safe}
                for f in findings]
        click.echo(json.dumps(rows, indent=1))
        return
    if not findings:
        click.echo("no problems found")
    for f in findings:
        tag = "fixable with --fix" if f.safe else "needs a person"
        click.echo(f"{f.kind}: {f.subject}\n  {f.detail}\n  run: {f.remedy} ({tag})")


@click.command("doctor")
@click.option("--pool", "pool_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              envvar="ELASTIVOL_POOL", help="The pool directory to inspect.")
@click.option("--kubelet-dir", "roots", multiple=True, default=[DEFAULT_KUBELET_DIR], show_default=True,
              help="Where kubelet mounts volumes (repeatable).")
@click.option("--node-timeout", type=float, default=DEFAULT_NODE_TIMEOUT, show_default=True,
              help="Seconds without a heartbeat after which a node counts as gone.")
@click.option("--fix", is_flag=True, help="Repair the safe cases, then report what is left.")
@click.option("--forget-node", "forget", multiple=True,
              help="Detach every volume from NODE and forget it (only for a node that is gone for good).")
@click.option("--json", "as_json", is_flag=True, help="Print findings as JSON.")
def doctor(pool_dir: Path, roots: tuple[str, ...], node_timeout: float, fix: bool, forget: tuple[str, ...],
           as_json: bool) -> None:
    """Report orphan images, loose loop devices and mounts, silent nodes and bad metadata.

    Exits 0 when nothing is left to do, 1 when findings remain.
    """
    try:
        pool = Pool(pool_dir)
        resolved = [str(Path(r).resolve()) for r in roots]
        for node_id in forget:
            for line in forget_node(pool, node_id):
                click.echo(line, err=True)
        findings = inspect(pool, resolved, node_timeout)
        # One repair can expose the next (an unmounted loop, then its detached image): a few rounds.
        for _round in range(FIX_ROUNDS if fix else 0):
            repaired = apply(findings)
            for line in repaired:
                click.echo(f"fixed {line}", err=True)
            findings = inspect(Pool(pool_dir), resolved, node_timeout)
            if not repaired:
                break
    except ElastivolError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
    _show(findings, as_json)
    sys.exit(1 if findings else 0)
