"""The chart passes each sidecar only flags that its pinned release documents.

DOCUMENTED lists, per sidecar, the flags the chart uses that the sidecar's README (or its flag
definitions) documents, for the release in CHECKED_AGAINST; deploy/README.md names the same
releases. Moving a tag in values.yaml fails test_pins_are_the_checked_releases until the flags
have been checked against the new release and both tables (and the README) say so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.deploy.chart import CHART, DEPLOY, SCENARIOS, SIDECARS, Scenario, flags, iter_containers

pytestmark = pytest.mark.deploy

Render = Callable[[Scenario], list[dict[str, Any]]]

# values.yaml key -> (image, release the flags below were checked against)
CHECKED_AGAINST = {
    "provisioner": ("registry.k8s.io/sig-storage/csi-provisioner", "v6.4.0"),
    "attacher": ("registry.k8s.io/sig-storage/csi-attacher", "v4.13.0"),
    "resizer": ("registry.k8s.io/sig-storage/csi-resizer", "v2.3.0"),
    "snapshotter": ("registry.k8s.io/sig-storage/csi-snapshotter", "v8.7.0"),
    "nodeDriverRegistrar": ("registry.k8s.io/sig-storage/csi-node-driver-registrar", "v2.18.0"),
    "livenessProbe": ("registry.k8s.io/sig-storage/livenessprobe", "v2.20.0"),
}
_COMMON = {"v", "csi-address", "http-endpoint"}
_LEADER = {"leader-election", "leader-election-namespace"}
DOCUMENTED = {
    "provisioner": _COMMON | _LEADER | {"timeout", "worker-threads", "extra-create-metadata", "default-fstype",
                                        "node-deployment", "strict-topology", "immediate-topology",
                                        "enable-capacity", "capacity-ownerref-level"},
    "attacher": _COMMON | _LEADER | {"timeout", "worker-threads"},
    "resizer": _COMMON | _LEADER | {"timeout", "workers"},
    # feature-gates: only CSIVolumeGroupSnapshot (GA, on by default since v8.6), said explicitly either way.
    "snapshotter": _COMMON | _LEADER | {"timeout", "worker-threads", "extra-create-metadata", "node-deployment",
                                        "feature-gates"},
    # --mode=kubelet-registration-probe is documented as deprecated ("no longer needed"): not used.
    "nodeDriverRegistrar": _COMMON | {"kubelet-registration-path"},
    "livenessProbe": _COMMON | {"probe-timeout"},
}
_KEY = {"provisioner": "provisioner", "attacher": "attacher", "resizer": "resizer", "snapshotter": "snapshotter",
        "registrar": "nodeDriverRegistrar", "livenessprobe": "livenessProbe"}


def test_pins_are_the_checked_releases() -> None:
    sidecars = yaml.safe_load((CHART / "values.yaml").read_text())["sidecars"]
    pinned = {key: (sidecars[key]["image"]["repository"], sidecars[key]["image"]["tag"]) for key in CHECKED_AGAINST}
    assert pinned == CHECKED_AGAINST, "a sidecar moved: check its documented flags, then update these tables"


def test_deploy_readme_names_the_checked_releases() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for image, tag in CHECKED_AGAINST.values():
        name = image.rsplit("/", 1)[1]
        assert f"{name}:{tag}" in readme, f"deploy/README.md does not say the flags were checked against {name}:{tag}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_sidecars_get_only_documented_flags(rendered: Render, scenario: Scenario) -> None:
    seen = set()
    for _workload, container in iter_containers(rendered(scenario)):
        kind = SIDECARS.get(container["name"])
        if kind is None:
            continue
        key = _KEY[kind]
        seen.add(key)
        extra = set(scenario.value("sidecars", key, "extraArgs") or [])
        used = set(flags({"name": container["name"], "args": [a for a in container["args"] if a not in extra]}))
        undocumented = used - DOCUMENTED[key]
        assert not undocumented, f"{container['name']}: {sorted(undocumented)} are not documented for " \
                                 f"{CHECKED_AGAINST[key][1]}"
        gates = flags(container).get("feature-gates", [])
        assert not gates or (key == "snapshotter" and gates in (["CSIVolumeGroupSnapshot=true"],
                                                                ["CSIVolumeGroupSnapshot=false"])), gates
        # A probe that runs the sidecar's binary would pass flags too; none does.
        assert "exec" not in (container.get("livenessProbe") or {}), container["name"]
    assert seen, "no sidecar was rendered"
