"""``serve --provider aws``: the block driver on EBS and the file driver on EFS.

The servicers are the same as with the local provider; only the providers differ. Settings that
the CLI does not carry come from ``ELASTIVOL_AWS_*`` variables (:mod:`elastivol.providers.aws.settings`);
a caller may hook the AWS clients and replace the EFS mounter through :class:`~elastivol.assembly.parts.Parts`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from elastivol import BLOCK_DRIVER_NAME, FILE_DRIVER_NAME
from elastivol.assembly.node import node_settings
from elastivol.assembly.parts import Parts
from elastivol.domain import Health
from elastivol.errors import InvalidArgument
from elastivol.locks import InFlight
from elastivol.metrics import Metrics
from elastivol.node.paths import PathGuard
from elastivol.providers.aws.awsmetrics import AwsMetrics
from elastivol.providers.aws.clients import AwsClients
from elastivol.providers.aws.imds import InstanceIdentity, resolve_identity
from elastivol.providers.aws.limits import max_volumes
from elastivol.providers.aws.mounter import HostMounter, Mounter
from elastivol.providers.aws.settings import AwsSettings
from elastivol.server import Services

if TYPE_CHECKING:
    from elastivol.config import ServeConfig

log = logging.getLogger("elastivol.aws")


def aws_services(config: ServeConfig, metrics: Metrics, parts: Parts | None = None) -> Services:
    parts = parts or Parts()
    settings = AwsSettings.from_env()
    identity: InstanceIdentity | None = None
    if config.node or not settings.region:
        identity = resolve_identity(config.node_id, config.zone, settings.instance_type, timeout=settings.imds_timeout)
    region = settings.region or (identity.region if identity else "")
    if not region and config.controller:
        # Nodes can do without: the block node never calls AWS, the file node mounts by id.
        raise InvalidArgument("no AWS region: set AWS_REGION (on EC2 it is read from IMDS, which did not answer)")
    aws_metrics = AwsMetrics.for_registry(metrics.registry) if metrics.kept else None
    clients = AwsClients(settings, aws_metrics, parts.aws_client_hooks, region)
    if config.node and identity is None:
        raise InvalidArgument(
            "this node's instance id and zone are unknown: IMDSv2 did not answer and --node-id/--zone were not "
            "given. In a pod, raise the instance's metadata hop limit to 2 (or use hostNetwork), or pass the "
            "node's instance id and zone (from the node labels) as --node-id and --zone"
        )
    inflight = InFlight(None)
    if config.driver == "block":
        return _block(config, settings, clients, identity, inflight)
    mounter = (parts.efs_mounter or HostMounter)(region)
    return _file(config, settings, clients, identity, inflight, mounter)


def _block(config: ServeConfig, settings: AwsSettings, clients: AwsClients, identity: InstanceIdentity | None,
           inflight: InFlight) -> Services:
    from elastivol.drivers.block.controller import BlockController
    from elastivol.drivers.block.node import BlockNode
    from elastivol.drivers.identity import Identity
    from elastivol.providers.aws.controller.ebs import EbsProvider
    from elastivol.providers.aws.node.nvme import EbsNodeProvider

    provider = None
    if config.controller:
        provider = EbsProvider(clients, settings, cluster_id=config.cluster_id, zones=config.served_zones(),
                               extra_tags=config.extra_volume_tags, max_volumes_per_node=config.max_volumes_per_node)
    services = Services(identity=Identity(BLOCK_DRIVER_NAME, provider.health if provider else _ready,
                                          group_controller=True), inflight=inflight)
    if provider is not None:
        services.controller = BlockController(provider, inflight, default_size=config.default_volume_size)
        from elastivol.drivers.block.group import BlockGroupController
        from elastivol.providers.aws.controller.ebs_group import EbsGroupSnapshots

        services.group_controller = BlockGroupController(EbsGroupSnapshots(provider), inflight)
    if config.node and identity is not None:
        limit = max_volumes(identity.instance_type or settings.instance_type,
                            override=config.max_volumes_per_node, reserved=settings.reserved_attachments)
        services.node = BlockNode(EbsNodeProvider(settings), inflight, PathGuard(config.roots()), max_volumes=limit,
                                  **node_settings(config, node_id=identity.instance_id, zone=identity.zone))
    return services


def _file(config: ServeConfig, settings: AwsSettings, clients: AwsClients, identity: InstanceIdentity | None,
          inflight: InFlight, mounter: Mounter) -> Services:
    from elastivol.drivers.file.controller import FileController
    from elastivol.drivers.file.node import FileNode
    from elastivol.drivers.identity import Identity
    from elastivol.providers.aws.controller.efs import EfsProvider
    from elastivol.providers.aws.node.efs import EfsCatalog, EfsNodeProvider

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
        services.node = FileNode(node, provider or EfsCatalog(clients.client("efs")), inflight, guard,
                                 max_volumes=config.max_volumes_per_node,
                                 **node_settings(config, node_id=identity.instance_id, zone=identity.zone))
    return services


def _ready() -> Health:
    return Health(True)
