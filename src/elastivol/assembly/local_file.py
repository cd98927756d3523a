"""Builds the file driver's services on the local provider (``serve --driver file --provider local``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from elastivol import FILE_DRIVER_NAME
from elastivol.assembly.node import node_settings
from elastivol.drivers.file.controller import FileController
from elastivol.drivers.file.node import FileNode
from elastivol.drivers.identity import Identity
from elastivol.errors import Unavailable
from elastivol.locks import InFlight
from elastivol.metrics import Metrics
from elastivol.node.paths import PathGuard
from elastivol.providers.local.file.controller import LocalFileProvider, pool_health
from elastivol.providers.local.file.node import LocalFileNode
from elastivol.providers.local.file.registry import FileRegistry
from elastivol.providers.local.pool import Pool
from elastivol.server import Services

if TYPE_CHECKING:
    from elastivol.config import ServeConfig

log = logging.getLogger("elastivol.drivers.file")


def local_file_services(config: ServeConfig, metrics: Metrics) -> Services:
    pool = Pool(Path(config.pool), overcommit_ratio=config.overcommit_ratio)
    health = pool_health(pool)
    if not health.ready:
        raise Unavailable(health.reason)
    registry = FileRegistry(pool)
    inflight = InFlight(pool.lock_dir)
    # No attach step (attachRequired: false), and quotas grow online with no node step. No
    # accessibility constraints: a file system is regional, so a claim binds before any node exists.
    identity = Identity(
        FILE_DRIVER_NAME,
        lambda: pool_health(pool),
        topology=False,
        online_expansion=True,
        offline_expansion=False,
    )
    services = Services(identity=identity, inflight=inflight)
    if config.controller:
        provider = LocalFileProvider(registry)
        for fs in provider.list_filesystems():
            if not fs.reflink:
                log.warning("file system %s (%s, root %s) has no reflink: CreateSnapshot will refuse it", fs.id,
                            fs.name, fs.root)
        services.controller = FileController(provider, inflight, default_size=config.default_volume_size)
    if config.node:
        node = LocalFileNode(registry)
        services.node = FileNode(node, node, inflight, PathGuard(config.roots()),
                                 max_volumes=config.max_volumes_per_node, **node_settings(config))
    return services
