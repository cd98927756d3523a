"""``serve --driver block --provider local``: the block driver on a local image pool and loop devices."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from elastivol import BLOCK_DRIVER_NAME
from elastivol.config import ServeConfig
from elastivol.domain import Health
from elastivol.locks import InFlight
from elastivol.metrics import Metrics
from elastivol.providers.local.pool import Pool
from elastivol.server import Services

if TYPE_CHECKING:
    from elastivol.providers.local.block_node import LocalBlockNode

log = logging.getLogger("elastivol.app")

IO_RECONCILE_SECONDS = 5.0  # how soon a recorded performance change or a container's new cgroup (v1) is limited


def local_block_services(config: ServeConfig, metrics: Metrics) -> Services:
    from elastivol.drivers.identity import Identity
    pool = Pool(Path(config.pool), overcommit_ratio=config.overcommit_ratio)
    pool.require_usable()
    notice = pool.health().notice
    if notice:
        log.warning(notice)
    from elastivol.recovery import reconcile

    reconcile(pool, controller=config.controller, node=config.node)
    inflight = InFlight(pool.lock_dir)
    health = pool.health
    if config.node and config.enforce_performance:
        health = _with_throttle_notice(pool.health)
    services = Services(identity=Identity(BLOCK_DRIVER_NAME, health, group_controller=True), inflight=inflight)
    if config.controller:
        # Each role imports only what it serves: a node plugin never loads the controller's modules.
        from elastivol.drivers.block.controller import BlockController
        from elastivol.providers.local.block import LocalBlockProvider

        provider = LocalBlockProvider(pool, config.served_zones(), max_volumes_per_node=config.max_volumes_per_node)
        services.controller = BlockController(provider, inflight, default_size=config.default_volume_size)
        from elastivol.drivers.block.group import BlockGroupController, freeze_observer
        from elastivol.providers.local.group_snapshots import LocalGroupSnapshots

        groups = LocalGroupSnapshots(pool, provider, on_freeze=freeze_observer(metrics))
        services.group_controller = BlockGroupController(groups, inflight)
        if metrics.kept:
            services.background.append(lambda: _pool_gauges(pool, metrics))
    if config.node:
        from elastivol.assembly.node import node_settings
        from elastivol.drivers.block.node import BlockNode
        from elastivol.node.paths import PathGuard
        from elastivol.providers.local.block_node import LocalBlockNode

        if not has_capability(CAP_SYS_RESOURCE):
            log.warning(
                "this process lacks CAP_SYS_RESOURCE: mounted ext4 volumes cannot grow online "
                "(NodeExpandVolume fails with FAILED_PRECONDITION); they grow at their next stage. "
                "xfs volumes grow online regardless"
            )
        node_provider = LocalBlockNode(pool, config.node_id, enforce_performance=config.enforce_performance)
        node_provider.register_node(config.node_id, config.zone, config.max_volumes_per_node)
        services.node = BlockNode(node_provider, inflight, PathGuard(config.roots()),
                                  max_volumes=config.max_volumes_per_node, **node_settings(config))

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(30)
                await asyncio.to_thread(
                    node_provider.register_node, config.node_id, config.zone, config.max_volumes_per_node
                )

        services.background.append(heartbeat)
        if config.enforce_performance:
            services.background.append(lambda: _reconcile_io_limits(node_provider))
    return services


async def _reconcile_io_limits(node: LocalBlockNode) -> None:
    """Keep the kernel's limits in line with the volumes' records: a performance change recorded by the
    controller reaches running pods, and (cgroup v1, whose throttling is flat) containers that start in
    new cgroups after NodePublishVolume limited their pod's get the limits too."""
    from elastivol.node import iothrottle

    if await asyncio.to_thread(iothrottle.detect) is None:
        return  # said at start (Probe's notice)
    while True:
        try:
            await asyncio.to_thread(node.reconcile_io_limits)
        except Exception:  # a throttle that could not be reconciled must never take the server down
            log.exception("could not reconcile volume I/O limits")
        await asyncio.sleep(IO_RECONCILE_SECONDS)


def _with_throttle_notice(health: Callable[[], Health]) -> Callable[[], Health]:
    """Probe's notice (and one warning now) when volume performance cannot be enforced on this host."""
    from elastivol.node import iothrottle

    hierarchy = iothrottle.detect()
    if hierarchy is not None:
        log.info("volume performance is enforced with %s", hierarchy)
        return health
    log.warning(iothrottle.NO_CONTROLLER)

    def noticed() -> Health:
        h = health()
        return replace(h, notice="; ".join(x for x in (h.notice, iothrottle.NO_CONTROLLER) if x)) if h.ready else h

    return noticed


async def _pool_gauges(pool: Pool, metrics: Metrics) -> None:
    while True:
        try:
            usage = await asyncio.to_thread(pool.usage)
            for kind in ("total_bytes", "free_bytes", "provisioned_bytes", "allocated_bytes"):
                metrics.pool_bytes.labels(metrics.driver, kind.removesuffix("_bytes")).set(getattr(usage, kind))
            metrics.pool_objects.labels(metrics.driver, "volumes").set(usage.volumes)
            metrics.pool_objects.labels(metrics.driver, "snapshots").set(usage.snapshots)
        except Exception:  # gauges must never take the server down
            log.exception("could not read pool usage")
        await asyncio.sleep(15)


CAP_SYS_RESOURCE = 24


def has_capability(bit: int) -> bool:
    """Whether this process holds a Linux capability (from /proc, no extra dependency)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << bit))
    except OSError:
        pass
    return False
