"""Assembles a server process from its configuration: which driver, which provider, which roles."""

from __future__ import annotations

from elastivol import BLOCK_DRIVER_NAME, FILE_DRIVER_NAME
from elastivol.assembly.parts import Parts
from elastivol.config import ServeConfig
from elastivol.errors import InvalidArgument
from elastivol.metrics import Metrics
from elastivol.server import Services

__all__ = ["ServeConfig", "build", "driver_name", "validate"]


def validate(config: ServeConfig) -> None:
    if config.driver not in ("block", "file"):
        raise InvalidArgument(f"--driver {config.driver!r}: choose block or file")
    if config.mode not in ("controller", "node", "all"):
        raise InvalidArgument(f"--mode {config.mode!r}: choose controller, node or all")
    if config.provider not in ("local", "aws"):
        raise InvalidArgument(f"--provider {config.provider!r}: choose local or aws")
    if config.provider == "local" and not config.pool:
        raise InvalidArgument("the local provider needs --pool DIR (prepare it with `elastivol pool init DIR`)")
    # With the aws provider a node learns its instance id and zone from IMDSv2 (the flags are the
    # fallback), and a controller without --zones serves the region's zones (DescribeAvailabilityZones).
    aws = config.provider == "aws"
    if config.node and not config.node_id and not aws:
        raise InvalidArgument("node mode needs --node-id (or ELASTIVOL_NODE_ID)")
    if config.node and not config.zone and not aws:
        raise InvalidArgument("node mode needs --zone (or ELASTIVOL_ZONE)")
    if config.controller and not config.served_zones() and not aws:
        raise InvalidArgument("controller mode needs --zone or --zones: the zones this controller serves")


def build(config: ServeConfig, metrics: Metrics, parts: Parts | None = None) -> Services:
    """The servicers of one `serve` process; ``parts`` replace default parts (see assembly.parts)."""
    validate(config)
    if config.driver == "block" and config.provider == "local":
        from elastivol.assembly.local_block import local_block_services

        return local_block_services(config, metrics)
    if config.driver == "file" and config.provider == "local":
        from elastivol.assembly.local_file import local_file_services

        return local_file_services(config, metrics)
    if config.provider == "aws":
        from elastivol.assembly.aws import aws_services

        return aws_services(config, metrics, parts)
    raise InvalidArgument(f"{config.driver} driver with the {config.provider} provider is not available")


def driver_name(driver: str) -> str:
    return BLOCK_DRIVER_NAME if driver == "block" else FILE_DRIVER_NAME
