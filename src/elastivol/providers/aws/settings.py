"""Tunables of the aws provider that the CLI does not carry, read once from the environment.

The defaults suit real AWS. Tests shorten the waits (moto answers in milliseconds) and point the
node side at a fake device tree; nothing here changes what is sent to AWS.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from elastivol.errors import InvalidArgument

PREFIX = "ELASTIVOL_AWS_"


Number = TypeVar("Number", int, float)


def _at_least(minimum: float, default: Number) -> Number:
    """A numeric field whose environment value below ``minimum`` is refused (the others: below 0)."""
    return field(default=default, metadata={"minimum": minimum})


@dataclass(frozen=True)
class AwsSettings:
    """Each field but ``region`` is read from ELASTIVOL_AWS_<FIELD NAME IN CAPITALS>, by its type."""

    region: str = ""  # from AWS_REGION or AWS_DEFAULT_REGION, as the SDKs read it
    # Coalesce DescribeVolumes/Snapshots/Instances of concurrent waiters into one call per interval.
    batching: bool = True
    batch_interval: float = _at_least(0.001, 0.2)
    max_batch: int = _at_least(1, 500)
    # Waits. Polls start at poll_initial and back off by 1.5x up to poll_max.
    poll_initial: float = _at_least(0.001, 1.0)
    poll_max: float = _at_least(0.001, 10.0)
    create_timeout: float = _at_least(0.1, 300.0)
    attach_timeout: float = _at_least(0.1, 180.0)
    detach_timeout: float = _at_least(0.1, 180.0)
    modify_timeout: float = _at_least(0.1, 300.0)
    snapshot_timeout: float = _at_least(0.1, 1800.0)
    # Window in which expand and modify requests for one volume merge into one ModifyVolume.
    modify_window: float = 0.5
    # botocore: adaptive retry mode (client-side rate limiting on throttles), bounded attempts.
    max_attempts: int = _at_least(1, 8)
    connect_timeout: float = _at_least(0.1, 5.0)
    read_timeout: float = _at_least(0.1, 30.0)
    # "auto" tries CopyVolumes and falls back to snapshot-then-create where it is not offered.
    clone: str = "auto"
    # Node side: where /dev and /sys are (tests point these at a fake tree).
    dev_root: str = "/dev"
    sys_root: str = "/sys"
    device_wait: float = 60.0
    reserved_attachments: int = _at_least(-1, -1)  # -1: the table's default for the instance family
    imds_timeout: float = _at_least(0.05, 1.0)
    instance_type: str = ""  # fallback when IMDS cannot be reached
    probe_cache: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AwsSettings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(PREFIX + name)
            return value.strip() if value is not None and value.strip() else None

        def num(name: str, default: float, minimum: float = 0.0) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise InvalidArgument(f"{PREFIX}{name}={raw!r} is not a number") from None
            if value < minimum:
                raise InvalidArgument(f"{PREFIX}{name}={raw!r} must be at least {minimum}")
            return value

        def flag(name: str, default: bool) -> bool:
            raw = get(name)
            if raw is None:
                return default
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise InvalidArgument(f'{PREFIX}{name}={raw!r}: write "true" or "false"')

        clone = get("CLONE") or "auto"
        if clone not in ("auto", "copy", "snapshot"):
            raise InvalidArgument(f"{PREFIX}CLONE={clone!r}: choose auto, copy or snapshot")
        # With ``from __future__ import annotations`` a field's type is its annotation's text.
        read: dict[str, Callable[[str, Any, float], Any]] = {
            "bool": lambda name, default, _: flag(name, default),
            "str": lambda name, default, _: get(name) or default,
            "int": lambda name, default, minimum: int(num(name, default, minimum)),
            "float": num,
        }
        values = {
            f.name: read[str(f.type)](f.name.upper(), f.default, f.metadata.get("minimum", 0.0))
            for f in fields(cls) if f.name != "region"
        }
        return cls(**values, region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "")
