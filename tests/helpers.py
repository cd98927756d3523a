"""Small helpers for driving a real server through its socket."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from elastivol.client import BLOCK, MOUNT, CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.node import loop, mount
from elastivol.process import ServerProcess, serve_args


def code_of(fn, *args, **kwargs) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    """Call ``fn`` and return the gRPC code it fails with (OK if it succeeds)."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def expect_error(code: grpc.StatusCode, fn, *args, match: str = "", **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    assert info.value.code() == code, f"expected {code.name}, got {info.value.code().name}: {info.value.details()}"
    details = info.value.details() or ""
    if match:
        assert match in details, f"{match!r} not in {details!r}"
    return details


@dataclass
class Vol:
    """One volume going through the node steps, with its paths."""

    client: CsiClient
    volume: csi_pb2.Volume
    cap: csi_pb2.VolumeCapability
    staging: Path
    target: Path
    node_id: str
    publish_context: dict[str, str]

    @property
    def id(self) -> str:
        return self.volume.volume_id

    @property
    def block(self) -> bool:
        return self.cap.HasField("block")

    @contextmanager
    def reconnected(self, endpoint: str) -> Iterator[CsiClient]:
        """Go on through a new client of ``endpoint`` (a restarted server), closed on leaving the block."""
        with CsiClient(endpoint) as client:
            self.client = client
            yield client

    def controller_publish(self, readonly: bool = False) -> None:
        resp = self.client.controller.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
            volume_id=self.id, node_id=self.node_id, volume_capability=self.cap, readonly=readonly), timeout=60)
        self.publish_context = dict(resp.publish_context)

    def controller_unpublish(self) -> None:
        self.client.controller.ControllerUnpublishVolume(
            csi_pb2.ControllerUnpublishVolumeRequest(volume_id=self.id, node_id=self.node_id), timeout=60)

    def stage(self) -> None:
        self.client.node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
            volume_id=self.id, staging_target_path=str(self.staging), volume_capability=self.cap,
            publish_context=self.publish_context, volume_context=dict(self.volume.volume_context)), timeout=120)

    def unstage(self) -> None:
        self.client.node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
            volume_id=self.id, staging_target_path=str(self.staging)), timeout=60)

    def publish(self, target: Path | None = None, readonly: bool = False) -> None:
        self.client.node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
            volume_id=self.id, staging_target_path=str(self.staging), target_path=str(target or self.target),
            volume_capability=self.cap, readonly=readonly, publish_context=self.publish_context,
            volume_context=dict(self.volume.volume_context)), timeout=60)

    def unpublish(self, target: Path | None = None) -> None:
        self.client.node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
            volume_id=self.id, target_path=str(target or self.target)), timeout=60)

    def delete(self) -> None:
        self.client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=self.id), timeout=60)

    def up(self) -> None:
        self.controller_publish()
        self.stage()
        self.publish()

    def down(self) -> None:
        self.unpublish()
        self.unstage()
        self.controller_unpublish()

    def write(self, size: int = 8 << 20, name: str = "data.bin") -> str:
        data = os.urandom(size)
        if self.block:
            with open(self.target, "r+b") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        else:
            with open(self.target / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        return hashlib.sha256(data).hexdigest()

    def checksum(self, size: int = 8 << 20, name: str = "data.bin") -> str:
        if self.block:
            with open(self.target, "rb") as fh:
                return hashlib.sha256(fh.read(size)).hexdigest()
        return hashlib.sha256((self.target / name).read_bytes()).hexdigest()


def new_volume(
    client: CsiClient,
    work: Path,
    name: str,
    *,
    kind: str = "ext4",
    size: int = 1 << 30,
    node_id: str = "node-a",
    zone: str | None = "zone-a",
    parameters: dict[str, str] | None = None,
    mode: str = "SINGLE_NODE_WRITER",
) -> Vol:
    cap = volume_capability(BLOCK if kind == "block" else MOUNT, mode=mode, fs_type="" if kind == "block" else kind)
    vol = client.create_volume(name, size, parameters=parameters, cap=cap, zone=zone)
    staging = work / "kubelet" / "staging" / vol.volume_id
    target = work / "kubelet" / "pods" / name / ("dev" if kind == "block" else "mount")
    return Vol(client, vol, cap, staging, target, node_id, {})


def served(work: Path, sock: str, log: str, *, pool: Path, **serve: Any) -> Iterator[ServerProcess]:
    """The body of a server fixture: ``elastivol serve`` on ``pool`` (files under ``work`` allowed), at
    WORK/SOCK.sock logging to WORK/logs/LOG.log, running until the fixture ends; ``serve``: more
    :func:`serve_args`."""
    server = ServerProcess(serve_args(pool=pool, allowed_roots=[work], **serve), f"unix://{work}/{sock}.sock",
                           work / "logs" / f"{log}.log").start()
    yield server
    server.stop()


def leaked(pool: Path) -> list[str]:
    """Loop devices backed by files in the pool, and mounts under its work dir (except the pool)."""
    work = pool.parent
    # By the backing file's identity: devices attached from another mount namespace count too.
    found = [f"{d.path}->{d.backing_file}" for d in loop.under(pool)]
    found += [m.target for m in mount.mounts() if m.target.startswith(str(work) + "/") and m.target != str(pool)]
    return found
