"""``serve --provider aws``: the block driver on EBS and the file driver on EFS.

The servicers are the same as with the local provider; only the providers differ. Settings that
the CLI does not carry come from ``ELASTIVOL_AWS_*`` variables (:mod:`.settings`); the fault layer
and the recording EFS mounter exist for tests and are enabled only by their own variables.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from elastivol import BLOCK_DRIVER_NAME, FILE_DRIVER_NAME
from elastivol.errors import InvalidArgument
from elastivol.locks import InFlight
from elastivol.metrics import Metrics
from elastivol.node.paths import PathGuard
from elastivol.providers.aws import faults as fault_layer
from elastivol.providers.aws.awsmetrics import AwsMetrics
from elastivol.providers.aws.clients import AwsClients
from elastivol.providers.aws.imds import InstanceIdentity, resolve_identity
from elastivol.providers.aws.limits import max_volumes
from elastivol.providers.aws.mounter import HostMounter, Mounter, RecordingMounter
from elastivol.providers.aws.settings import AwsSettings
from elastivol.providers.types import Health
from elastivol.server import Services

if TYPE_CHECKING:
    from elastivol.app import ServeConfig

log = logging.getLogger("elastivol.aws")

FAKE_EFS_ENV = "ELASTIVOL_EFS_FAKE_ROOT"  # tests: bind a local directory instead of mounting NFS


def aws_services(config: ServeConfig, metrics: Metrics) -> Services:
    settings = AwsSettings.from_env()
    faults = fault_layer.from_env()
    if faults is not None:
        log.warning("the AWS fault layer is enabled (%s): for tests only", fault_layer.ENV)
    identity: InstanceIdentity | None = None
    if config.node or not settings.region:
        identity = resolve_identity(config.node_id, config.zone, settings.instance_type, timeout=settings.imds_timeout)
    region = settings.region or (identity.region if identity else "")
    if not region and config.controller:
        # Nodes can do without: the block node never calls AWS, the file node mounts by id.
        raise InvalidArgument("no AWS region: set AWS_REGION (on EC2 it is read from IMDS, which did not answer)")
    clients = AwsClients(settings, AwsMetrics.for_registry(metrics.registry), faults, region)
    if config.node and identity is None:
        raise InvalidArgument(
            "this node's instance id and zone are unknown: IMDSv2 did not answer and --node-id/--zone were not "
            "given. In a pod, raise the instance's metadata hop limit to 2 (or use hostNetwork), or pass the "
            "node's instance id and zone (from the node labels) as --node-id and --zone"
        )
    inflight = InFlight(None)
    if config.driver == "block":
        return _block(config, settings, clients, identity, inflight)
    return _file(config, settings, clients, identity, inflight, region)


def _block(config: ServeConfig, settings: AwsSettings, clients: AwsClients, identity: InstanceIdentity | None,
           inflight: InFlight) -> Services:
    from elastivol.drivers.block.controller import BlockController
    from elastivol.drivers.block.node import BlockNode
    from elastivol.drivers.identity import Identity
    from elastivol.providers.aws.ebs import EbsProvider
    from elastivol.providers.aws.nvme import EbsNodeProvider

    provider = None
    if config.controller:
        provider = EbsProvider(clients, settings, cluster_id=config.cluster_id, zones=config.served_zones(),
                               extra_tags=config.extra_volume_tags, max_volumes_per_node=config.max_volumes_per_node)
    services = Services(identity=Identity(BLOCK_DRIVER_NAME, provider.health if provider else _ready,
                                          group_controller=True), inflight=inflight)
    if provider is not None:
        services.controller = BlockController(provider, inflight, default_size=config.default_volume_size)
        from elastivol.drivers.block.group import BlockGroupController
        from elastivol.providers.aws.ebs_group import EbsGroupSnapshots

        services.group_controller = BlockGroupController(EbsGroupSnapshots(provider), inflight)
    if config.node and identity is not None:
        limit = max_volumes(identity.instance_type or settings.instance_type,
                            override=config.max_volumes_per_node, reserved=settings.reserved_attachments)
        services.node = BlockNode(
            EbsNodeProvider(settings), inflight, PathGuard(config.roots()),
            node_id=identity.instance_id, zone=identity.zone, max_volumes=limit,
            allow_privileged_mount_options=config.allow_privileged_mount_options,
        )
    return services


def _file(config: ServeConfig, settings: AwsSettings, clients: AwsClients, identity: InstanceIdentity | None,
          inflight: InFlight, region: str) -> Services:
    from elastivol.drivers.file.controller import FileController
    from elastivol.drivers.file.node import FileNode
    from elastivol.drivers.identity import Identity
    from elastivol.providers.aws.efs import EfsProvider
    from elastivol.providers.aws.efs_node import EfsCatalog, EfsNodeProvider

    mounter = _mounter(region)
    provider = None
    if config.controller:
        provider = EfsProvider(clients, settings, cluster_id=config.cluster_id, mounter=mounter)
    # EFS is regional: no accessibility constraints, so an Immediate claim binds before any node registers.
    identity_service = Identity(FILE_DRIVER_NAME, provider.health if provider else _ready, topology=False,
                                online_expansion=True, offline_expansion=False)
    services = Services(identity=identity_service, inflight=inflight)
    if provider is not None:
        services.controller = FileController(provider, inflight, default_size=config.default_volume_size)
    if config.node and identity is not None:
        guard = PathGuard(config.roots())
        node = EfsNodeProvider(mounter, guard, allow_privileged_mount_options=config.allow_privileged_mount_options)
        services.node = FileNode(
            node, provider or EfsCatalog(clients.client("efs")), inflight,
            guard, node_id=identity.instance_id, zone=identity.zone,
            max_volumes=config.max_volumes_per_node,
            allow_privileged_mount_options=config.allow_privileged_mount_options,
        )
    return services


def _mounter(region: str) -> Mounter:
    fake = os.environ.get(FAKE_EFS_ENV, "").strip()
    if fake:
        log.warning("EFS mounts are simulated under %s (%s): for tests only", fake, FAKE_EFS_ENV)
        root = Path(fake)
        return RecordingMounter(root, region, root / "mounts.jsonl")
    return HostMounter(region)


def _ready() -> Health:
    return Health(True)
