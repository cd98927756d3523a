"""`elastivol`: everything a user touches.

Only what ``elastivol serve`` needs is imported here: a node plugin on every machine of a cluster
should not load the lab, the benchmarks or rich's tables to serve a socket. Other subcommands
import their modules when they run (``LAZY_COMMANDS``), and rich is loaded for the commands that
print with it.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from elastivol.errors import ElastivolError
from elastivol.units import human, parse_size

if TYPE_CHECKING:
    from rich.console import Console

# Subcommand groups that live beside their feature: name → (module, attribute). A module that is
# not installed (the lab, bench/ outside a source checkout) leaves its command out.
LAZY_COMMANDS = {
    "fs": ("elastivol.fs_cli", "fs"),
    "lab": ("elastivol.lab.cli", "lab"),
    "doctor": ("elastivol.doctor", "doctor"),
    "bench": ("elastivol.bench_cli", "bench"),
}


@functools.cache
def _console() -> Console:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 140)


class LazyGroup(click.Group):
    """A group whose LAZY_COMMANDS are imported when named (or listed by --help), not at start."""

    def _lazy(self, name: str) -> click.Command | None:
        module, attr = LAZY_COMMANDS[name]
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            return None
        command: click.Command = getattr(mod, attr)
        self.add_command(command, name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            return self._lazy(cmd_name)
        return self.commands.get(cmd_name)


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import elastivol

    click.echo(f"elastivol, version {elastivol.__version__}")
    ctx.exit()


class SizeType(click.ParamType):  # type: ignore[type-arg]
    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ElastivolError as exc:
            self.fail(exc.message, param, ctx)


SIZE = SizeType()


def _fail(exc: ElastivolError) -> None:
    click.echo(f"{click.style('error:', fg='red')} {exc.message}", err=True)
    sys.exit(1)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and exit.")
def main() -> None:
    """EBS- and EFS-style CSI volumes, on one machine or on Kubernetes.

    \b
    Start here:   elastivol demo
    Serve a CSI driver:  elastivol serve --driver block --mode all --pool DIR ...
    """


# -- serve -----------------------------------------------------------------------------------
def _split_roots(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    roots: list[str] = []
    for v in value:
        roots.extend(p for p in v.split(":") if p)
    return roots


def _split_zones(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str]:
    return [z.strip() for z in (value or "").split(",") if z.strip()]


def _parse_tags(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not key=value")
        tags[key.strip()] = val.strip()
    return tags


def _octal(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an octal file mode such as 0660") from None
    if not 0 <= mode <= 0o777:
        raise click.BadParameter(f"{value!r} is not a file mode between 0000 and 0777")
    return mode


@main.command()
@click.option("--driver", type=click.Choice(["block", "file"]), default="block", show_default=True, envvar="ELASTIVOL_DRIVER")
@click.option("--mode", type=click.Choice(["controller", "node", "all"]), default="all", show_default=True, envvar="ELASTIVOL_MODE")
@click.option("--provider", type=click.Choice(["local", "aws"]), default="local", show_default=True, envvar="ELASTIVOL_PROVIDER")
@click.option("--endpoint", default="unix:///run/elastivol/csi.sock", show_default=True, envvar="CSI_ENDPOINT",
              help="unix:///path of the CSI socket.")
@click.option("--node-id", default="", envvar="ELASTIVOL_NODE_ID", help="This node's id (node mode).")
@click.option("--zone", default="", envvar="ELASTIVOL_ZONE", help="This node's zone; also the controller's zone when --zones is not given.")
@click.option("--zones", callback=_split_zones, envvar="ELASTIVOL_ZONES", help="Comma-separated zones the controller serves.")
@click.option("--pool", default="", envvar="ELASTIVOL_POOL", help="Local provider: the pool directory (see `pool init`).")
@click.option("--allowed-root", "allowed_roots", multiple=True, callback=_split_roots, envvar="ELASTIVOL_ALLOWED_ROOTS",
              help="Staging/target paths must lie under these (repeatable; env: colon-separated). "
              "Default: /var/lib/kubelet and the pool's parent directory.")
@click.option("--metrics-address", default="", envvar="ELASTIVOL_METRICS_ADDRESS", help="HOST:PORT for Prometheus metrics.")
@click.option("--max-volumes-per-node", type=click.IntRange(min=0), default=0, envvar="ELASTIVOL_MAX_VOLUMES_PER_NODE",
              help="Attachment limit per node (0: none).")
@click.option("--overcommit-ratio", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              envvar="ELASTIVOL_OVERCOMMIT_RATIO", help="How far sparse volumes may promise more than the pool's free space.")
@click.option("--socket-mode", default="0660", show_default=True, callback=_octal, envvar="ELASTIVOL_SOCKET_MODE")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True,
              envvar="ELASTIVOL_LOG_LEVEL")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True, envvar="ELASTIVOL_LOG_FORMAT")
@click.option("--cluster-id", default="", envvar="ELASTIVOL_CLUSTER_ID", help="AWS: tags volumes as owned by this cluster.")
@click.option("--extra-volume-tags", callback=_parse_tags, envvar="ELASTIVOL_EXTRA_VOLUME_TAGS", help="k=v,k2=v2 added to every volume.")
@click.option("--default-volume-size", type=SIZE, default="1Gi", show_default=True, envvar="ELASTIVOL_DEFAULT_VOLUME_SIZE")
@click.option("--allow-privileged-mount-options", is_flag=True, envvar="ELASTIVOL_ALLOW_PRIVILEGED_MOUNT_OPTIONS",
              help="Admit suid, dev and exec mount options.")
@click.option("--force-unsafe-socket-dir", is_flag=True, help="Start even if the socket directory is world-writable.")
@click.option("--enforce-performance/--no-enforce-performance", default=True, show_default=True,
              envvar="ELASTIVOL_ENFORCE_PERFORMANCE",
              help="Local block volumes: throttle each volume to its EBS type's IOPS and throughput (cgroup blkio "
                   "or io.max) unless its StorageClass says enforcePerformance: \"false\".")
@click.option("--shutdown-grace", type=click.FloatRange(min=0), default=25.0, show_default=True,
              envvar="ELASTIVOL_SHUTDOWN_GRACE",
              help="Seconds that SIGTERM leaves running calls and their work to finish (keep it below the "
                   "pod's terminationGracePeriodSeconds).")
def serve(**opts: Any) -> None:
    """Serve a CSI driver on a unix socket until SIGTERM."""
    if opts["provider"] == "local" and not opts["metrics_address"]:
        from elastivol import openssl

        openssl.keep_out()  # before asyncio is imported (below, through the server)
    import asyncio

    from elastivol import logs
    from elastivol.app import build, driver_name
    from elastivol.config import ServeConfig
    from elastivol.metrics import Metrics
    from elastivol.server import serve as run_server

    config = ServeConfig(
        driver=opts["driver"], mode=opts["mode"], provider=opts["provider"], endpoint=opts["endpoint"],
        node_id=opts["node_id"], zone=opts["zone"], zones=opts["zones"], pool=opts["pool"],
        allowed_roots=opts["allowed_roots"], metrics_address=opts["metrics_address"],
        max_volumes_per_node=opts["max_volumes_per_node"], overcommit_ratio=opts["overcommit_ratio"],
        socket_mode=opts["socket_mode"], log_level=opts["log_level"], log_format=opts["log_format"],
        cluster_id=opts["cluster_id"], extra_volume_tags=opts["extra_volume_tags"],
        default_volume_size=opts["default_volume_size"],
        allow_privileged_mount_options=opts["allow_privileged_mount_options"],
        force_unsafe_socket_dir=opts["force_unsafe_socket_dir"],
        enforce_performance=opts["enforce_performance"],
    )
    logs.setup(config.log_level, config.log_format)
    metrics = Metrics(driver_name(config.driver), kept=bool(config.metrics_address))
    try:
        # A caller that runs this CLI with obj=Parts(...) (the test support package) replaces default parts.
        services = build(config, metrics, click.get_current_context().obj)
        if config.metrics_address:
            metrics.serve(config.metrics_address)
        asyncio.run(
            run_server(
                services, config.endpoint, metrics=metrics, socket_mode=config.socket_mode,
                force_unsafe_socket_dir=config.force_unsafe_socket_dir, grace_seconds=opts["shutdown_grace"],
            )
        )
    except ElastivolError as exc:
        _fail(exc)


# -- pool ------------------------------------------------------------------------------------
@main.group()
def pool() -> None:
    """Prepare and inspect local pools."""


@pool.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", type=SIZE, default=None, help="Size of the pool filesystem image, when one is needed (default 20G).")
@click.option("--fs", "fs_type", type=click.Choice(["xfs", "btrfs"]), default=None,
              help="Pool filesystem. Default: the directory's own if it has reflink, else xfs.")
@click.option("--in-place", is_flag=True,
              help="Use the directory's own filesystem even without reflink (snapshots become full copies).")
def pool_init(directory: Path, size: int | None, fs_type: str | None, in_place: bool) -> None:
    """Prepare DIRECTORY as a pool (idempotent).

    If the directory's filesystem has no reflink (needed for O(1) snapshots and clones),
    a filesystem image DIRECTORY.img is created beside it, formatted and mounted at DIRECTORY.
    """
    from elastivol.providers.local.pool import init_pool

    try:
        config = init_pool(directory, size, fs_type, in_place=in_place)
    except ElastivolError as exc:
        _fail(exc)
    _console().print(f"pool [bold]{directory}[/bold] ready: {config.fs_type}, reflink "
                  f"{'yes' if config.reflink else 'NO (snapshots are full copies)'}, quotas {config.quotas}"
                  + (f", backed by {config.backing_image}" if config.backing_image else ""))


@pool.command("info")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), envvar="ELASTIVOL_POOL")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def pool_info(directory: Path, output: str) -> None:
    """Capacity, volumes, filesystem and features of a pool."""
    from elastivol.providers.local.pool import Pool

    try:
        p = Pool(directory)
        usage = p.usage()
        health = p.health()
    except ElastivolError as exc:
        _fail(exc)
    info = {
        "pool": str(p.directory),
        **asdict(p.config),
        **asdict(usage),
        "available_bytes": p.available_bytes(),
        "ready": health.ready,
        "reason": health.reason,
    }
    if output == "json":
        click.echo(json.dumps(info, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"pool {p.directory}", show_header=False)
    table.add_row("filesystem", p.config.fs_type + (f" (image {p.config.backing_image})" if p.config.backing_image else ""))
    table.add_row("reflink", "yes: snapshots and clones are O(1)" if p.config.reflink else "NO: snapshots and clones are full copies")
    table.add_row("quotas", p.config.quotas)
    table.add_row("size", human(usage.total_bytes))
    table.add_row("free", human(usage.free_bytes))
    table.add_row("provisioned", f"{human(usage.provisioned_bytes)} ({human(usage.allocated_bytes)} written)")
    table.add_row("available for new volumes", human(p.available_bytes()))
    table.add_row("volumes / snapshots", f"{usage.volumes} / {usage.snapshots}")
    table.add_row("ready", "yes" if health.ready else f"NO: {health.reason}")
    _console().print(table)


# -- volumes ---------------------------------------------------------------------------------
@main.group()
def volume() -> None:
    """Inspect block volumes in a local pool."""


@volume.command("list")
@click.option("--pool", "pool_dir", required=True, type=click.Path(path_type=Path), envvar="ELASTIVOL_POOL")
def volume_list(pool_dir: Path) -> None:
    """List the pool's block volumes."""
    from elastivol.providers.local.block import LocalBlockProvider
    from elastivol.providers.local.pool import Pool

    try:
        provider = LocalBlockProvider(Pool(pool_dir), ["-"])
        volumes = provider.list_volumes()
    except ElastivolError as exc:
        _fail(exc)
    from rich.table import Table

    table = Table("ID", "NAME", "SIZE", "ZONE", "TYPE", "FS", "ATTACHED TO", "CONDITION")
    for v in volumes:
        table.add_row(v.id, v.name, human(v.size_bytes), v.zone, v.params.get("type", "gp3"),
                      v.fs_type or v.mode.value, ",".join(v.attached_nodes) or "-", v.abnormal or "healthy")
    _console().print(table)


@volume.command("show")
@click.argument("volume_id")
@click.option("--pool", "pool_dir", required=True, type=click.Path(path_type=Path), envvar="ELASTIVOL_POOL")
def volume_show(volume_id: str, pool_dir: Path) -> None:
    """Show one volume, with its recorded parameters."""
    from elastivol.providers.local.block import LocalBlockProvider
    from elastivol.providers.local.pool import Pool

    try:
        v = LocalBlockProvider(Pool(pool_dir), ["-"]).get_volume(volume_id)
    except ElastivolError as exc:
        _fail(exc)
    data = asdict(v)
    data["mode"] = v.mode.value
    click.echo(json.dumps(data, indent=2, default=str))


# -- demo ------------------------------------------------------------------------------------
@main.command()
@click.option("--dir", "work_dir", type=click.Path(path_type=Path), default=None,
              help="Where the demo keeps its lab and manifests (default: a temporary directory).")
@click.option("--keep", is_flag=True, help="Keep the manifests (and, with --raw-csi, the pool) for inspection.")
@click.option("--raw-csi", is_flag=True,
              help="Instead: the bare CSI lifecycle (ext4, xfs, raw block) straight through the socket, no lab.")
def demo(work_dir: Path | None, keep: bool, raw_csi: bool) -> None:
    """The seeds' walkthrough end to end in a 3-node lab, step by step, with a summary.

    \b
    1. bring up the lab (real plugin processes on their own sockets)
    2. gp3 StorageClass, 4Gi PVC, a pod appending `date` to /data/out.txt; the PV's zone affinity
    3. grow to 10Gi while the pod writes; df inside the pod
    4. VolumeSnapshot, delete pod and PVC, restore into a new PVC; the old lines are there
    5. a shared efs-ap StorageClass: two pods in two zones read each other's files
    6. a ReadWriteMany PVC on gp3 fails, with the event
    7. tear down, leaving nothing behind
    """
    if os.geteuid() != 0:
        _fail(ElastivolError("the demo attaches loop devices and mounts filesystems: run it as root"))
        sys.exit(1)
    if raw_csi:
        from elastivol.demo import run_demo as run_raw

        sys.exit(run_raw(work_dir, keep=keep, console=_console()))
    from elastivol.lab.walkthrough import run_demo

    sys.exit(run_demo(work_dir, keep=keep, console=_console()))
