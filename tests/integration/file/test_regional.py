"""A file system is regional: the file driver has no accessibility constraints, so an Immediate
efs-ap claim is provisioned and bound before any node has registered the driver.

The lab's external-provisioner loop runs here against the real file controller over its socket,
with no node plugin known to it (an empty node topology map), as a cluster whose nodes have not
registered file.csi.elastivol.io yet.
"""

from __future__ import annotations

from pathlib import Path

from elastivol import FILE_DRIVER_NAME
from elastivol.client import CsiClient
from elastivol.csi import csi_pb2
from elastivol.lab.binding import STORAGE_PROVISIONER
from elastivol.lab.context import Context
from elastivol.lab.layout import LabConfig, Layout
from elastivol.lab.provisioner import Provisioner, has_accessibility
from elastivol.lab.store import Store
from tests.integration.file.helpers import delete


def test_the_file_driver_advertises_no_accessibility_constraints(client: CsiClient) -> None:
    caps = client.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest()).capabilities
    services = {c.service.type for c in caps if c.HasField("service")}
    assert csi_pb2.PluginCapability.Service.VOLUME_ACCESSIBILITY_CONSTRAINTS not in services
    assert not has_accessibility(client)


def test_an_immediate_efs_ap_claim_binds_without_a_node(client: CsiClient, btrfs_fs: str, tmp_path: Path) -> None:
    store = Store(tmp_path)
    ctx = Context(Layout(tmp_path), LabConfig(nodes=[], zones=[]), store,
                  clients={(FILE_DRIVER_NAME, None): client},
                  accessibility={FILE_DRIVER_NAME: has_accessibility(client)})
    assert ctx.node_topology == {}, "no node has registered the driver"
    store.create({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "efs-sc"},
                  "provisioner": FILE_DRIVER_NAME, "volumeBindingMode": "Immediate",
                  "parameters": {"provisioningMode": "efs-ap", "fileSystemId": btrfs_fs, "directoryPerms": "700"}})
    pvc = store.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": "efs-claim", "annotations": {STORAGE_PROVISIONER: FILE_DRIVER_NAME}},
                        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "efs-sc",
                                 "resources": {"requests": {"storage": "5Gi"}}}})
    Provisioner(ctx).reconcile()
    pv = store.get("PersistentVolume", f"pvc-{pvc['metadata']['uid']}")
    events = [(e["reason"], e["message"]) for e in store.events_for(pvc)]
    assert pv is not None, f"no PV was provisioned; the claim's events: {events}"
    try:
        assert "nodeAffinity" not in pv["spec"], "a regional volume must not be pinned to a zone"
        assert pv["spec"]["csi"]["driver"] == FILE_DRIVER_NAME
        assert any(reason == "ProvisioningSucceeded" for reason, _ in events), events
    finally:
        delete(client, pv["spec"]["csi"]["volumeHandle"])
