"""What every assembly gives a node servicer besides its providers."""

from __future__ import annotations

from elastivol.config import ServeConfig
from elastivol.drivers.node_rpcs import NodeSettings
from elastivol.node.host import RealHost


def node_settings(config: ServeConfig, *, node_id: str | None = None, zone: str | None = None) -> NodeSettings:
    """The node's identity (from the flags, or as the provider learned it, e.g. from IMDS), the mount
    option policy, and the real host."""
    return NodeSettings(
        node_id=config.node_id if node_id is None else node_id,
        zone=config.zone if zone is None else zone,
        allow_privileged_mount_options=config.allow_privileged_mount_options,
        host=RealHost(),
    )
