"""Each local role imports only what it serves (issue 15, item 6): no boto3 for the local provider,
no rich, lab, bench or charts on any serve path; no Prometheus client or OpenSSL where nothing needs
them. Checked on the real server process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lean import NEVER_SERVED, NOT_FOR_LOCAL, present, serve_imports

ROLES = {
    "block node": ["--driver", "block", "--mode", "node", "--node-id", "lean-node", "--zone", "zone-a"],
    "block controller": ["--driver", "block", "--mode", "controller", "--zone", "zone-a"],
    "file node": ["--driver", "file", "--mode", "node", "--node-id", "lean-node", "--zone", "zone-a"],
}


@pytest.mark.parametrize("role", ROLES)
def test_a_local_role_imports_neither_aws_nor_the_tools(pool_dir: Path, role: str) -> None:
    mapped: list[str] = []
    names = serve_imports(pool_dir.parent, [*ROLES[role], "--pool", str(pool_dir),
                                            "--allowed-root", str(pool_dir.parent)], mapped=mapped)
    assert present(names, NEVER_SERVED + NOT_FOR_LOCAL) == []
    # Without --metrics-address: no Prometheus client, and no OpenSSL (it speaks only over its socket).
    assert present(names, ("prometheus_client", "elastivol.csi.csi_pb2_grpc")) == []
    assert [m for m in mapped if "libcrypto" in m or "libssl" in m or "_ssl." in m] == []
    assert any("cygrpc" in m for m in mapped)  # the maps were read from the live server
    assert "importlib.metadata" not in names  # the version is read on first GetPluginInfo
    # What it does serve is there: the servicers of its role, and not the other role's provider side.
    if role.endswith("node"):
        assert any(n.endswith(".node") and n.startswith("elastivol.drivers.") for n in names)
