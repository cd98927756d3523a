"""Hostile ids, paths outside the allowed roots, symlinks swapped in at the target, smuggled mount options."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from elastivol.client import CsiClient, volume_capability
from elastivol.csi import csi_pb2
from elastivol.node import mount
from tests.helpers import code_of, expect_error, new_volume
from tests.reliability.conftest import NODE, ServerFactory
from tests.reliability.invariants import all_clean

C = grpc.StatusCode
# A malformed id is treated as unknown (NOT_FOUND, or OK for the deletes), one with a NUL byte too.
HOSTILE_IDS = ["../../etc", "vol-../../../etc/passwd", "/etc/passwd", "vol-0123456789abcdef0/..", "vol-\x00",
               "VOL-0123456789ABCDEF0", "vol-0123456789abcdef0 "]


@pytest.mark.parametrize("volume_id", HOSTILE_IDS)
def test_malformed_ids_are_unknown(volume_id: str, rel_pool: Path, server_factory: ServerFactory) -> None:
    server = server_factory("ids").start()
    with CsiClient(server.endpoint) as client:
        cap = volume_capability(fs_type="ext4")
        assert code_of(client.controller.ControllerPublishVolume, csi_pb2.ControllerPublishVolumeRequest(
            volume_id=volume_id, node_id=NODE, volume_capability=cap)) == C.NOT_FOUND
        assert code_of(client.controller.DeleteVolume, csi_pb2.DeleteVolumeRequest(volume_id=volume_id)) == C.OK
        assert code_of(client.controller.ValidateVolumeCapabilities, csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=volume_id, volume_capabilities=[cap])) == C.NOT_FOUND
        assert code_of(client.controller.DeleteSnapshot,
                       csi_pb2.DeleteSnapshotRequest(snapshot_id=volume_id.replace("vol", "snap"))) == C.OK
        staging = rel_pool.parent / "kubelet" / "staging" / "x"
        assert code_of(client.node.NodeStageVolume, csi_pb2.NodeStageVolumeRequest(
            volume_id=volume_id, staging_target_path=str(staging), volume_capability=cap)) == C.NOT_FOUND
    assert all_clean(rel_pool) == []
    assert Path("/etc/passwd").exists()


def test_paths_and_symlinks_and_options(rel_pool: Path, server_factory: ServerFactory) -> None:
    work = rel_pool.parent
    outside = work / "outside-ps"
    outside.mkdir(exist_ok=True)
    (work / "kubelet").mkdir(exist_ok=True)
    server = server_factory("paths", roots=(work / "kubelet",)).start()
    with CsiClient(server.endpoint) as client:
        vol = new_volume(client, work, "path-safety", kind="ext4", node_id=NODE)
        assert str(vol.staging).startswith(str(work / "kubelet"))
        vol.controller_publish()
        vol.stage()
        # A target outside the allowed roots, directly or through "..", is refused.
        for target in (outside / "t", work / "kubelet" / ".." / "outside-ps" / "t2", Path("/tmp/elastivol-evil")):
            code = code_of(vol.publish, target)
            assert code != C.OK and code not in (C.INTERNAL, C.UNKNOWN), (target, code)
        # A symlink swapped in at the target path must not redirect the bind mount.
        link = work / "kubelet" / "pods" / "swapped" / "mount"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(outside)
        code = code_of(vol.publish, link)
        assert code != C.OK and code not in (C.INTERNAL, C.UNKNOWN), code
        assert not any(m.target.startswith(str(outside)) for m in mount.mounts()), "a bind mount escaped"
        link.unlink()
        # Smuggled and privilege-widening mount options are refused; a plain one is accepted.
        for flags in (["ro,suid"], ["suid"], ["dev"], ["exec"], ["noatime,dev"], ["context=x,suid"], ["a=b,suid"]):
            vol.cap = volume_capability(fs_type="ext4", mount_flags=tuple(flags))
            expect_error(C.INVALID_ARGUMENT, vol.publish, work / "kubelet" / "pods" / "opts" / "mount")
        vol.cap = volume_capability(fs_type="ext4", mount_flags=("noatime",))
        vol.publish()
        vol.unpublish()
        vol.unstage()
        vol.controller_unpublish()
        vol.delete()
    assert all_clean(rel_pool) == []
