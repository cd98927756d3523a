"""The file driver's publications are nosuid,nodev; privileged words need the operator's consent."""

from __future__ import annotations

from pathlib import Path

import grpc

from elastivol.client import CsiClient
from tests.helpers import expect_error
from tests.integration.file.helpers import create, delete, published, sc
from tests.integration.node.test_mount_safety import findmnt_options


def test_publish_is_nosuid_nodev_and_suid_is_refused(client: CsiClient, plain_fs: str, fwork: Path) -> None:
    vol = create(client, "pvc-mount-safety", sc(plain_fs))
    pod = published(client, fwork, vol.volume_id, "safety", mount_flags=("noatime",))
    try:
        assert {"nosuid", "nodev", "noatime"} <= findmnt_options(pod.target)
        # Without --allow-privileged-mount-options the words that would undo the defaults are refused.
        other = fwork / "kubelet" / "node-a" / "pods" / "safety-suid" / "volumes" / "mount"
        expect_error(grpc.StatusCode.INVALID_ARGUMENT, published, client, fwork, vol.volume_id, "safety-suid",
                     mount_flags=("suid",), match="--allow-privileged-mount-options")
        assert not other.is_mount()
    finally:
        pod.unpublish()
        delete(client, vol.volume_id)
