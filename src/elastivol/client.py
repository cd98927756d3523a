"""A small synchronous CSI client over a unix socket, for the CLI, the demo, tests and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import grpc

from elastivol.csi import csi_pb2, csi_pb2_grpc
from elastivol.errors import Unavailable

MOUNT = "mount"
BLOCK = "block"


def volume_capability(
    access: str = MOUNT, mode: str = "SINGLE_NODE_WRITER", fs_type: str = "", mount_flags: tuple[str, ...] = ()
) -> csi_pb2.VolumeCapability:
    cap = csi_pb2.VolumeCapability()
    cap.access_mode.mode = csi_pb2.VolumeCapability.AccessMode.Mode.Value(mode)  # type: ignore[assignment]
    if access == BLOCK:
        cap.block.SetInParent()
    else:
        cap.mount.fs_type = fs_type
        cap.mount.mount_flags.extend(mount_flags)
    return cap


class CsiClient:
    def __init__(self, endpoint: str, timeout: float = 120.0) -> None:
        target = endpoint if endpoint.startswith("unix:") else f"unix://{endpoint}"
        self.channel = grpc.insecure_channel(target)
        self.timeout = timeout
        self.identity = csi_pb2_grpc.IdentityStub(self.channel)
        self.controller = csi_pb2_grpc.ControllerStub(self.channel)
        self.node = csi_pb2_grpc.NodeStub(self.channel)
        self.group = csi_pb2_grpc.GroupControllerStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CsiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                resp = self.identity.Probe(csi_pb2.ProbeRequest(), timeout=2)
                if resp.ready.value:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(f"the CSI server did not become ready within {timeout:.0f}s")
            time.sleep(0.05)

    def call(self, service: str, method: str, request: Any) -> Any:
        stub = getattr(self, service)
        return getattr(stub, method)(request, timeout=self.timeout)

    # Convenience wrappers used across the demo, tests and benchmarks.
    def create_volume(
        self,
        name: str,
        size: int,
        *,
        parameters: Mapping[str, str] | None = None,
        cap: csi_pb2.VolumeCapability | None = None,
        zone: str | None = None,
        source: csi_pb2.VolumeContentSource | None = None,
    ) -> csi_pb2.Volume:
        req = csi_pb2.CreateVolumeRequest(
            name=name,
            capacity_range=csi_pb2.CapacityRange(required_bytes=size),
            volume_capabilities=[cap or volume_capability()],
            parameters=dict(parameters or {}),
        )
        if zone:
            req.accessibility_requirements.requisite.add(segments={"topology.kubernetes.io/zone": zone})
        if source is not None:
            req.volume_content_source.CopyFrom(source)
        volume: csi_pb2.Volume = self.controller.CreateVolume(req, timeout=self.timeout).volume
        return volume
