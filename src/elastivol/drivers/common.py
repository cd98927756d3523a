"""Validation and translation shared by the block and file servicers.

Servicers check requests here, turn protobufs into domain values, call a provider, and
turn the result back. They never touch the host and never set gRPC codes themselves:
they raise domain errors, which the server's interceptor maps in one place.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from elastivol.csi import csi_pb2
from elastivol.domain import K8S_ZONE_KEY, ZONE_KEY, AccessMode, VolumeMode
from elastivol.errors import Aborted, Exhausted, InvalidArgument, NotFound
from elastivol.node.paths import PathGuard

T = TypeVar("T")

# The name users know from the Kubernetes side, for messages.
K8S_MODE_NAMES = {
    AccessMode.SINGLE_NODE_WRITER: "ReadWriteOnce",
    AccessMode.SINGLE_NODE_SINGLE_WRITER: "ReadWriteOncePod",
    AccessMode.SINGLE_NODE_MULTI_WRITER: "ReadWriteOnce",
    AccessMode.SINGLE_NODE_READER_ONLY: "ReadOnlyMany (single node)",
    AccessMode.MULTI_NODE_READER_ONLY: "ReadOnlyMany",
    AccessMode.MULTI_NODE_SINGLE_WRITER: "ReadWriteMany (single writer)",
    AccessMode.MULTI_NODE_MULTI_WRITER: "ReadWriteMany",
}


def require(value: Any, field: str) -> None:
    if not value:
        raise InvalidArgument(f"{field} is required")


def require_text(value: str, field: str, *, max_len: int = 4096) -> None:
    """A required string field: present, not too long and, unless it is an id, free of NUL bytes.

    An id field (``volume_id``, ``node_id``, ``snapshot_id``...) with a NUL byte is let through:
    every caller matches ids against their exact format (elastivol.ids, parse_volume_handle)
    before using them, so such an id is simply unknown (NOT_FOUND, or OK for the deletes), as
    the CSI spec asks of any malformed id. Names and paths with a NUL byte are refused here.
    """
    require(value, field)
    if not field.endswith("_id") and "\x00" in value:
        at = value.index("\x00")
        raise InvalidArgument(f"{field} contains a NUL byte (at character {at}): names and paths cannot contain NUL")
    if len(value) > max_len:
        raise InvalidArgument(f"{field} is {len(value)} characters long; at most {max_len} are accepted")


@dataclass(frozen=True)
class Capability:
    """One VolumeCapability, in domain terms."""

    mode: AccessMode
    volume_mode: VolumeMode
    fs_type: str
    mount_flags: tuple[str, ...]
    volume_mount_group: str = ""


def capability(cap: csi_pb2.VolumeCapability, field: str = "volume_capability") -> Capability:
    which = cap.WhichOneof("access_type")
    if which is None:
        raise InvalidArgument(f"{field}.access_type must be set to either mount or block")
    raw_mode = cap.access_mode.mode
    try:
        mode = AccessMode(raw_mode)
    except ValueError:
        raise InvalidArgument(f"{field}.access_mode.mode {raw_mode} is not a known access mode") from None
    if which == "block":
        return Capability(mode, VolumeMode.BLOCK, "", ())
    return Capability(
        mode,
        VolumeMode.FILESYSTEM,
        cap.mount.fs_type,
        tuple(cap.mount.mount_flags),
        cap.mount.volume_mount_group,
    )


def capabilities(caps: Sequence[csi_pb2.VolumeCapability], field: str = "volume_capabilities") -> list[Capability]:
    require(caps, field)
    return [capability(c, f"{field}[{i}]") for i, c in enumerate(caps)]


def topology(zone: str) -> csi_pb2.Topology:
    return csi_pb2.Topology(segments={ZONE_KEY: zone, K8S_ZONE_KEY: zone})


def zone_of(topo: csi_pb2.Topology) -> str | None:
    segments = dict(topo.segments)
    zones = {v for k, v in segments.items() if k in (ZONE_KEY, K8S_ZONE_KEY)}
    if len(zones) > 1:
        raise InvalidArgument(f"topology {segments} names two different zones")
    return zones.pop() if zones else None


def choose_zone(requirement: csi_pb2.TopologyRequirement | None, served: Sequence[str]) -> str:
    """The zone for a new volume: preferred first, then requisite, among the zones served."""
    if requirement is None or (not requirement.requisite and not requirement.preferred):
        return served[0]
    requisite = [z for z in (zone_of(t) for t in requirement.requisite) if z is not None]
    for topo in requirement.preferred:
        zone = zone_of(topo)
        if zone is not None and zone in served and (not requisite or zone in requisite):
            return zone
    for zone in requisite:
        if zone in served:
            return zone
    asked = sorted(set(requisite) | {z for z in (zone_of(t) for t in requirement.preferred) if z})
    raise Exhausted(
        f"no zone asked for ({', '.join(asked) or 'none named'}) can be served; this driver serves "
        f"{', '.join(served)}: change the StorageClass allowedTopologies or the pod's node"
    )


def paginate(
    items: Sequence[T],
    key: Callable[[T], str],
    starting_token: str,
    max_entries: int,
    token_ok: Callable[[str], bool],
) -> tuple[list[T], str]:
    """One page of ``items`` (sorted by ``key``) from ``starting_token`` on, and the next token.

    The token is the key of the first item of the next page, so a page stays correct when
    items before it are deleted in between.
    """
    if max_entries < 0:
        raise InvalidArgument("max_entries must not be negative")
    if starting_token and not token_ok(starting_token):
        raise Aborted(f"starting_token {starting_token[:80]!r} is not valid: list again without a token")
    ordered = sorted(items, key=key)
    start = bisect.bisect_left([key(i) for i in ordered], starting_token) if starting_token else 0
    end = len(ordered) if max_entries == 0 else min(len(ordered), start + max_entries)
    next_token = key(ordered[end]) if end < len(ordered) else ""
    return list(ordered[start:end]), next_token


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking provider or host call off the event loop."""
    return await asyncio.to_thread(fn, *args)


async def guarded_path(
    guard: PathGuard, path: str, field: str, *, directory: bool = False, new_mount: bool = False
) -> str:
    """``guard.check(path)`` off the event loop: resolving a path stats every component, and a
    hung mount (a stopped FUSE daemon, a dead NFS server) on the way must stall only this call."""
    checked = await asyncio.to_thread(
        lambda: guard.check(path, field=field, directory=directory, new_mount=new_mount)
    )
    return str(checked)


async def volume_path(guard: PathGuard, volume_id: str, path: str) -> str:
    """The ``volume_path`` of NodeGetVolumeStats / NodeExpandVolume, checked like any path.

    For these two calls the spec's table has one answer for a path that cannot hold the volume
    (relative, outside the allowed roots): NOT_FOUND, no volume with that id is at that path.
    """
    try:
        return await guarded_path(guard, path, "volume_path")
    except InvalidArgument as exc:
        raise NotFound(f"volume {volume_id[:80]!r} is not at {path[:200]!r}: {exc.message}") from None
