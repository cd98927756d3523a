"""Tunables of the aws provider that the CLI does not carry, read once from the environment.

The defaults suit real AWS. Tests shorten the waits (moto answers in milliseconds) and point the
node side at a fake device tree; nothing here changes what is sent to AWS.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from elastivol.errors import InvalidArgument

PREFIX = "ELASTIVOL_AWS_"


@dataclass(frozen=True)
class AwsSettings:
    region: str = ""
    # Coalesce DescribeVolumes/Snapshots/Instances of concurrent waiters into one call per interval.
    batching: bool = True
    batch_interval: float = 0.2
    max_batch: int = 500
    # Waits. Polls start at poll_initial and back off by 1.5x up to poll_max.
    poll_initial: float = 1.0
    poll_max: float = 10.0
    create_timeout: float = 300.0
    attach_timeout: float = 180.0
    detach_timeout: float = 180.0
    modify_timeout: float = 300.0
    snapshot_timeout: float = 1800.0
    # Window in which expand and modify requests for one volume merge into one ModifyVolume.
    modify_window: float = 0.5
    # botocore: adaptive retry mode (client-side rate limiting on throttles), bounded attempts.
    max_attempts: int = 8
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    # "auto" tries CopyVolumes and falls back to snapshot-then-create where it is not offered.
    clone: str = "auto"
    # Node side: where /dev and /sys are (tests point these at a fake tree).
    dev_root: str = "/dev"
    sys_root: str = "/sys"
    device_wait: float = 60.0
    reserved_attachments: int = -1  # -1: the table's default for the instance family
    imds_timeout: float = 1.0
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
        d = cls()
        return cls(
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "",
            batching=flag("BATCHING", d.batching),
            batch_interval=num("BATCH_INTERVAL", d.batch_interval, 0.001),
            max_batch=int(num("MAX_BATCH", d.max_batch, 1)),
            poll_initial=num("POLL_INITIAL", d.poll_initial, 0.001),
            poll_max=num("POLL_MAX", d.poll_max, 0.001),
            create_timeout=num("CREATE_TIMEOUT", d.create_timeout, 0.1),
            attach_timeout=num("ATTACH_TIMEOUT", d.attach_timeout, 0.1),
            detach_timeout=num("DETACH_TIMEOUT", d.detach_timeout, 0.1),
            modify_timeout=num("MODIFY_TIMEOUT", d.modify_timeout, 0.1),
            snapshot_timeout=num("SNAPSHOT_TIMEOUT", d.snapshot_timeout, 0.1),
            modify_window=num("MODIFY_WINDOW", d.modify_window),
            max_attempts=int(num("MAX_ATTEMPTS", d.max_attempts, 1)),
            connect_timeout=num("CONNECT_TIMEOUT", d.connect_timeout, 0.1),
            read_timeout=num("READ_TIMEOUT", d.read_timeout, 0.1),
            clone=clone,
            dev_root=get("DEV_ROOT") or d.dev_root,
            sys_root=get("SYS_ROOT") or d.sys_root,
            device_wait=num("DEVICE_WAIT", d.device_wait, 0.0),
            reserved_attachments=int(num("RESERVED_ATTACHMENTS", d.reserved_attachments, -1)),
            imds_timeout=num("IMDS_TIMEOUT", d.imds_timeout, 0.05),
            instance_type=get("INSTANCE_TYPE") or "",
            probe_cache=num("PROBE_CACHE", d.probe_cache),
        )
