"""`elastivol fs`: register, list and forget shared file systems of a local pool."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from elastivol.errors import ElastivolError
from elastivol.units import human

if TYPE_CHECKING:
    from elastivol.providers.local.file.registry import FileRegistry

console = Console()
err_console = Console(stderr=True)

_POOL = click.option(
    "--pool", "pool_dir", required=True, type=click.Path(file_okay=False, path_type=Path), envvar="ELASTIVOL_POOL",
    help="The pool directory (see `elastivol pool init`).",
)


def _fail(exc: ElastivolError) -> None:
    err_console.print(f"[red]error:[/red] {exc.message}")
    sys.exit(1)


def _registry(pool_dir: Path) -> FileRegistry:
    from elastivol.providers.local.file.registry import FileRegistry
    from elastivol.providers.local.pool import Pool

    return FileRegistry(Pool(pool_dir))


fs = click.Group("fs", help="Shared file systems (EFS-style) of a local pool: roots that every node sees.")


@fs.command("create")
@_POOL
@click.option("--name", required=True, help="A name for people; unique in the pool.")
@click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The directory every node sees at the same path (local dir, NFS or CephFS mount).")
def fs_create(pool_dir: Path, name: str, root: Path) -> None:
    """Register ROOT as a file system and print its id (fs-...): the StorageClass's fileSystemId.

    Idempotent: the same name and root print the same id again.
    """
    try:
        registry = _registry(pool_dir)
        created = registry.register(name, str(root))
        rec = registry.filesystem_record(created.id)
    except ElastivolError as exc:
        _fail(exc)
    notes = []
    notes.append("snapshots: yes (copy-on-write)" if created.reflink else "snapshots: NO (no reflink on this filesystem)")
    notes.append(
        "enforceCapacity: yes (btrfs quotas)" if created.quotas != "none"
        else "enforceCapacity: no (needs btrfs with quotas: `elastivol pool init DIR --fs btrfs`)"
    )
    err_console.print(f"file system [bold]{created.name}[/bold] at {created.root} ({rec.get('fs_type')}); "
                      + "; ".join(notes))
    # The id alone on stdout, so scripts can capture it: FS_ID=$(elastivol fs create ...)
    click.echo(created.id)


@fs.command("list")
@_POOL
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def fs_list(pool_dir: Path, output: str) -> None:
    """List the pool's file systems, with their access points and what each supports."""
    try:
        registry = _registry(pool_dir)
        systems = registry.list_filesystems()
        aps = registry.access_points_of(None)
        snaps = registry.snapshots.all()
        records = {f.id: registry.filesystem_record(f.id) for f in systems}
    except ElastivolError as exc:
        _fail(exc)
    if output == "json":
        rows = []
        for f in systems:
            rows.append({
                **records[f.id],
                "access_points": sum(1 for a in aps if a.get("fs_id") == f.id),
                "snapshots": sum(1 for s in snaps if s.get("fs_id") == f.id),
            })
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("ID", "NAME", "ROOT", "FS", "SNAPSHOTS", "ENFORCE CAPACITY", "ACCESS POINTS", "CAPACITY RECORDED")
    for f in systems:
        mine = [a for a in aps if a.get("fs_id") == f.id]
        table.add_row(
            f.id,
            f.name,
            f.root,
            str(records[f.id].get("fs_type", "?")),
            "yes" if f.reflink else "no",
            "yes" if f.quotas != "none" else "no",
            str(len(mine)),
            human(sum(int(a.get("capacity_bytes", 0)) for a in mine)),
        )
    console.print(table)


@fs.command("delete")
@_POOL
@click.argument("fs_id")
@click.option("--force", is_flag=True, help="Forget the file system even though access points still use it.")
def fs_delete(pool_dir: Path, fs_id: str, force: bool) -> None:
    """Forget file system FS_ID. Refuses while access points exist, unless --force.

    Nothing under the root is deleted: the directories stay for you to keep or remove.
    """
    try:
        forgotten = _registry(pool_dir).unregister(fs_id, force=force)
    except ElastivolError as exc:
        _fail(exc)
    extra = f", and forgot {len(forgotten)} access point(s); their directories are still there" if forgotten else ""
    console.print(f"deleted file system {fs_id}{extra}")
