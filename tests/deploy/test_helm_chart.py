"""The Helm chart in deploy/helm/elastivol, checked offline.

helm lints and renders the chart for a matrix of values (helm comes from npm, see
deploy/tools/install_helm.py); kubernetes-validate checks every rendered object against the
Kubernetes schemas of two minor versions in strict mode; the rest reads the rendered YAML the
way the kubelet and the sidecars will: socket paths, registration paths, driver names, RBAC,
privileges, and the plugin's command line parsed by `elastivol serve` itself.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest

import elastivol
from tests.deploy.chart import (
    DATA,
    DRIVER_NAMES,
    NAMESPACE,
    SCENARIOS,
    SIDECARS,
    SNAPSHOT_API,
    Scenario,
    containers,
    env_names,
    flag,
    flags,
    helm_args,
    iter_containers,
    of_kind,
    pod_spec,
    render_error,
    run_helm,
    volume,
    volume_path,
    workloads,
)

pytestmark = pytest.mark.deploy

Render = Callable[[Scenario], list[dict[str, Any]]]
BY_NAME = {s.name: s for s in SCENARIOS}
# The oldest Kubernetes minor the chart is checked against, and the newest that kubernetes-validate ships.
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
SIDECAR_REGISTRY = "registry.k8s.io/sig-storage/"

scenarios = pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])


# -- lint and schema ---------------------------------------------------------------------------
@scenarios
def test_helm_lint_strict(helm: Path, scenario: Scenario) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = run_helm(helm, *helm_args("lint", scenario.values, Path(tmp), scenario.api_versions), "--strict")
    assert "0 chart(s) failed" in out.stdout, out.stdout


def _validate_volume_snapshot_class(doc: dict[str, Any]) -> None:
    schema = json.loads((DATA / "volumesnapshotclass-v1.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)


def _validate_service_monitor(doc: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
    spec = doc["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}, spec
    wanted = spec["selector"]["matchLabels"]
    services = [s for s in of_kind(docs, "Service") if wanted.items() <= s["metadata"]["labels"].items()]
    assert services, f"ServiceMonitor selects no Service: {wanted}"
    ports = {p["name"] for s in services for p in s["spec"]["ports"]}
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}, endpoint
        assert endpoint["path"] == "/metrics"
    assert "metrics" in {e["port"] for e in spec["endpoints"]}
    assert ports <= {e["port"] for e in spec["endpoints"]}, "a metrics port of the Services is not scraped"


@scenarios
def test_every_object_validates_strictly(rendered: Render, scenario: Scenario) -> None:
    docs = rendered(scenario)
    assert docs
    problems: list[str] = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "VolumeSnapshotClass":
            try:
                _validate_volume_snapshot_class(doc)
            except jsonschema.ValidationError as exc:
                problems.append(f"{name}: {'.'.join(str(p) for p in exc.path)}: {exc.message}")
            continue
        if doc["kind"] == "ServiceMonitor":
            _validate_service_monitor(doc, docs)
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{name} (Kubernetes {version}): {'.'.join(str(p) for p in exc.path)}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{name}: {exc.message}")
    assert not problems, "invalid objects:\n" + "\n".join(problems)


def test_validation_is_strict_enough_to_catch_typos(rendered: Render) -> None:
    """Guards the guard: a misspelled field must fail both validators."""
    docs = rendered(BY_NAME["aws-both-drivers"])
    deployment = of_kind(docs, "Deployment")[0]
    broken = json.loads(json.dumps(deployment))
    pod_spec(broken)["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[0], strict=True)
    vsc = json.loads(json.dumps(of_kind(docs, "VolumeSnapshotClass")[0]))
    vsc["deletionpolicy"] = vsc.pop("deletionPolicy")
    with pytest.raises(jsonschema.ValidationError):
        _validate_volume_snapshot_class(vsc)


# -- the CLI contract ----------------------------------------------------------------------------
def _plugin_containers(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    found = [(w, c) for w, c in iter_containers(docs) if c["name"] == "plugin"]
    assert found, "no plugin container rendered"
    return found


@scenarios
def test_plugin_command_line_parses_with_elastivol_serve(rendered: Render, scenario: Scenario) -> None:
    from elastivol.cli import main

    serve = main.commands["serve"]
    assert isinstance(serve, click.Command)
    for workload, container in _plugin_containers(rendered(scenario)):
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        # No command: the image's ENTRYPOINT (`elastivol serve`) runs with these args.
        assert "command" not in container, f"{where}: the plugin must run the image's entrypoint"
        try:
            with serve.make_context("serve", list(container["args"]), resilient_parsing=False) as ctx:
                params = ctx.params
        except click.ClickException as exc:
            pytest.fail(f"{where}: `elastivol serve {' '.join(container['args'])}` is refused: {exc.format_message()}")
        assert params["provider"] == scenario.value("provider")
        assert params["driver"] in DRIVER_NAMES
        assert params["endpoint"].startswith("unix:///")
        if params["mode"] in ("node", "all"):
            assert params["node_id"] == "$(NODE_NAME)"
            assert "NODE_NAME" in env_names(container), f"{where}: $(NODE_NAME) is not defined"
        if scenario.value("provider") == "local":
            assert params["pool"] == scenario.value("local", "poolPath")


@scenarios
def test_pool_init_container_parses_with_elastivol_pool_init(rendered: Render, scenario: Scenario) -> None:
    from elastivol.cli import main

    pool = main.commands["pool"]
    assert isinstance(pool, click.Group)
    pool_init = pool.commands["init"]
    inits = [(w, c) for w in workloads(rendered(scenario)) for c in pod_spec(w).get("initContainers", [])]
    if not (scenario.value("provider") == "local" and scenario.value("local", "initPool", "enabled")):
        assert not inits
        return
    assert inits and all(c["name"] == "pool-init" for _, c in inits)
    for _, c in inits:
        assert c["command"][:3] == ["elastivol", "pool", "init"]
        try:
            with pool_init.make_context("init", list(c["command"][3:]), resilient_parsing=False) as ctx:
                params = ctx.params
        except click.ClickException as exc:
            pytest.fail(f"`{' '.join(c['command'])}` is refused: {exc.format_message()}")
        assert str(params["directory"]) == scenario.value("local", "poolPath")


# -- sockets and registration ----------------------------------------------------------------
@scenarios
def test_every_sidecar_talks_to_the_plugin_socket(rendered: Render, scenario: Scenario) -> None:
    for workload in workloads(rendered(scenario)):
        cs = containers(workload)
        plugin = cs["plugin"]
        endpoint = flag(plugin, "endpoint")
        assert endpoint.startswith("unix://")
        socket = volume_path(workload, plugin, endpoint[len("unix://"):])
        sidecars = [c for name, c in cs.items() if name != "plugin"]
        assert sidecars
        for c in sidecars:
            assert c["name"] in SIDECARS, f"unexpected container {c['name']}"
            assert volume_path(workload, c, flag(c, "csi-address")) == socket, (
                f"{workload['metadata']['name']}/{c['name']} --csi-address does not reach the plugin's {endpoint}"
            )


@scenarios
def test_plugin_probe_hits_the_livenessprobe_sidecar(rendered: Render, scenario: Scenario) -> None:
    for workload in workloads(rendered(scenario)):
        cs = containers(workload)
        probe = cs["plugin"]["livenessProbe"]["httpGet"]
        ports = {p["name"]: p["containerPort"] for c in cs.values() for p in c.get("ports", [])}
        assert probe["path"] == "/healthz"
        assert flag(cs["liveness-probe"], "http-endpoint") == f":{ports[probe['port']]}", workload["metadata"]["name"]
        assert len(ports) == len(set(ports.values())), f"{workload['metadata']['name']}: two containers share a port"


@scenarios
def test_registrar_registers_the_socket_the_kubelet_can_reach(rendered: Render, scenario: Scenario) -> None:
    kubelet = scenario.value("node", "kubeletPath")
    daemonsets = of_kind(rendered(scenario), "DaemonSet")
    assert daemonsets
    for ds in daemonsets:
        cs = containers(ds)
        driver = DRIVER_NAMES[flag(cs["plugin"], "driver")]
        registrar = cs["node-driver-registrar"]
        expected = f"{kubelet}/plugins/{driver}/csi.sock"
        assert flag(registrar, "kubelet-registration-path") == expected
        # ...and that host path is where the plugin's socket really is.
        vol_name, rel = volume_path(ds, cs["plugin"], flag(cs["plugin"], "endpoint")[len("unix://"):])
        assert f"{volume(ds, vol_name)['hostPath']['path']}/{rel}" == expected
        reg_name, _ = volume_path(ds, registrar, "/registration")
        assert volume(ds, reg_name)["hostPath"]["path"] == f"{kubelet}/plugins_registry"
        # Its /healthz (--http-endpoint) says whether the registration socket exists; the old exec probe
        # (--mode=kubelet-registration-probe) is deprecated in the pinned registrar.
        probe = registrar["livenessProbe"]
        assert "exec" not in probe
        ports = {p["name"]: p["containerPort"] for p in registrar["ports"]}
        assert probe["httpGet"]["path"] == "/healthz"
        assert flag(registrar, "http-endpoint") == f":{ports[probe['httpGet']['port']]}"
        # The kubelet hands the plugin host paths under kubeletPath; it must see them, shared.
        mounts = {m["mountPath"]: m for m in cs["plugin"]["volumeMounts"]}
        assert mounts[kubelet].get("mountPropagation") == "Bidirectional"
        assert flags(cs["plugin"])["allowed-root"] == [kubelet]


# -- drivers ----------------------------------------------------------------------------------
@scenarios
def test_csidrivers_match_the_plugins(rendered: Render, scenario: Scenario) -> None:
    docs = rendered(scenario)
    assert DRIVER_NAMES == {"block": elastivol.BLOCK_DRIVER_NAME, "file": elastivol.FILE_DRIVER_NAME}
    enabled = {d for d in ("block", "file") if scenario.value("drivers", d, "enabled")}
    drivers = {d["metadata"]["name"]: d["spec"] for d in of_kind(docs, "CSIDriver")}
    assert set(drivers) == {DRIVER_NAMES[d] for d in enabled}
    served = {DRIVER_NAMES[flag(c, "driver")] for _, c in _plugin_containers(docs)}
    assert served == set(drivers)
    local = scenario.value("provider") == "local"
    if "block" in enabled:
        spec = drivers[elastivol.BLOCK_DRIVER_NAME]
        assert spec["attachRequired"] is True
        assert spec["fsGroupPolicy"] == "File"
        # The local node plugin throttles a volume in its pod's cgroup: it needs the pod's uid.
        enforce = local and scenario.value("local", "enforcePerformance") is not False
        assert spec["podInfoOnMount"] is enforce
        assert spec["storageCapacity"] is local
    if "file" in enabled:
        spec = drivers[elastivol.FILE_DRIVER_NAME]
        assert spec["attachRequired"] is False
        # A regional file system: no capacity per topology, so the scheduler must not look for any.
        assert spec["storageCapacity"] is False
    for sc in of_kind(docs, "StorageClass"):
        assert sc["provisioner"] in drivers
    for vsc in of_kind(docs, "VolumeSnapshotClass"):
        assert vsc["driver"] in drivers


def test_local_provider_provisions_on_the_node_that_owns_the_pool(rendered: Render) -> None:
    docs = rendered(BY_NAME["local-node-pools"])
    assert not of_kind(docs, "Deployment"), "the local provider has no central controller"
    for ds in of_kind(docs, "DaemonSet"):
        cs = containers(ds)
        plugin = flags(cs["plugin"])
        assert plugin["mode"] == ["all"] and plugin["provider"] == ["local"]
        assert plugin["zone"] == ["$(NODE_NAME)"], "each node is its own topology segment"
        prov = cs["csi-provisioner"]
        f = flags(prov)
        assert f.get("node-deployment") == ["true"]
        topology_and_capacity = (("strict-topology", "true"), ("immediate-topology", "false"), ("enable-capacity", ""),
                                 ("capacity-ownerref-level", "1"))
        if plugin["driver"] == ["block"]:
            for name, value in topology_and_capacity:
                assert f.get(name) == [value], f"csi-provisioner needs --{name}{'=' + value if value else ''}"
        else:  # the file driver reports neither topology nor capacity
            assert not {name for name, _ in topology_and_capacity} & set(f), f
        assert "feature-gates" not in f, "Topology is GA and on by default in the pinned provisioner"
        assert "leader-election" not in f, "per-node provisioners must not elect one leader"
        env = env_names(prov)
        assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        # The pool's parent is shared with the host: a pool image gets mounted there.
        pool = BY_NAME["local-node-pools"].value("local", "poolPath")
        vol_name, rel = volume_path(ds, cs["plugin"], pool)
        assert volume(ds, vol_name)["hostPath"]["path"] + "/" + rel == pool
    capacity = {d["metadata"]["name"]: d["spec"]["storageCapacity"] for d in of_kind(docs, "CSIDriver")}
    assert capacity == {elastivol.BLOCK_DRIVER_NAME: True, elastivol.FILE_DRIVER_NAME: False}
    snap_docs = rendered(BY_NAME["snapshots-forced"])
    for ds in of_kind(snap_docs, "DaemonSet"):
        snap = containers(ds)["csi-snapshotter"]
        assert flags(snap).get("node-deployment") == ["true"]
        assert "NODE_NAME" in env_names(snap)


def test_aws_controller_runs_the_sidecars_with_leader_election(rendered: Render) -> None:
    scenario = BY_NAME["aws-both-drivers"]
    docs = rendered(scenario)
    deployments = {d["metadata"]["labels"]["elastivol.io/driver"]: d for d in of_kind(docs, "Deployment")}
    assert set(deployments) == {"block", "file"}
    for driver, dep in deployments.items():
        assert dep["spec"]["replicas"] == 2
        cs = containers(dep)
        expected = {"plugin", "csi-provisioner", "csi-resizer", "csi-snapshotter", "liveness-probe"}
        if driver == "block":
            expected.add("csi-attacher")
        assert set(cs) == expected
        plugin = flags(cs["plugin"])
        assert plugin["mode"] == ["controller"]
        assert plugin["zones"] == [",".join(scenario.value("aws", "zones"))]
        assert plugin["cluster-id"] == ["lab-cluster"]
        assert plugin["extra-volume-tags"] == ["env=dev,team=storage"]
        prov = flags(cs["csi-provisioner"])
        assert "feature-gates" not in prov, "Topology is GA and on by default; the plugin's capability decides"
        assert prov["extra-create-metadata"] == [""]
        assert "timeout" in prov and "worker-threads" in prov
        assert prov.get("default-fstype") == (["ext4"] if driver == "block" else None)
        for name in ("csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter"):
            if name in cs:
                f = flags(cs[name])
                assert f.get("leader-election") == [""], f"{driver}/{name} must elect a leader"
                assert f["leader-election-namespace"] == ["$(NAMESPACE)"]
                assert "NAMESPACE" in env_names(cs[name])
                assert cs[name]["livenessProbe"]["httpGet"]["path"] == "/healthz/leader-election"
        # The plugin's liveness probe hits /healthz of the livenessprobe sidecar.
        probe = cs["plugin"]["livenessProbe"]["httpGet"]
        ports = {p["name"]: p["containerPort"] for p in cs["plugin"]["ports"]}
        assert probe["path"] == "/healthz"
        assert flag(cs["liveness-probe"], "http-endpoint") == f":{ports[probe['port']]}"
    # One node DaemonSet per driver and zone, each told its zone.
    daemonsets = of_kind(docs, "DaemonSet")
    assert len(daemonsets) == 2 * len(scenario.value("aws", "zones"))
    for ds in daemonsets:
        zone = pod_spec(ds)["nodeSelector"]["topology.kubernetes.io/zone"]
        assert flags(containers(ds)["plugin"])["zone"] == [zone]
        assert flags(containers(ds)["plugin"])["mode"] == ["node"]
        assert set(containers(ds)) == {"plugin", "node-driver-registrar", "liveness-probe"}


def test_snapshotter_runs_when_the_crds_exist_or_when_forced(rendered: Render, helm: Path) -> None:
    def snapshotters(docs: list[dict[str, Any]]) -> int:
        return sum(1 for _, c in iter_containers(docs) if c["name"] == "csi-snapshotter")

    assert snapshotters(rendered(BY_NAME["defaults"])) == 0
    assert not of_kind(rendered(BY_NAME["defaults"]), "VolumeSnapshotClass")
    assert snapshotters(rendered(BY_NAME["file-only"])) == 0
    assert snapshotters(rendered(BY_NAME["snapshots-forced"])) > 0
    assert of_kind(rendered(BY_NAME["snapshots-forced"]), "VolumeSnapshotClass")
    assert snapshotters(rendered(BY_NAME["aws-both-drivers"])) == 2  # CRDs present (--api-versions)
    assert SNAPSHOT_API in BY_NAME["aws-both-drivers"].api_versions


def test_group_snapshots_follow_their_crds(rendered: Render) -> None:
    """csi-snapshotter serves group snapshots (and may read their kinds) only where the CRDs exist: its gate is on by
    default, and without the CRDs it would wait for them and serve no snapshot at all."""
    def gate_and_grants(name: str) -> tuple[list[list[str]], set[str]]:
        docs = rendered(BY_NAME[name])
        gates = [flags(c).get("feature-gates", []) for _, c in iter_containers(docs) if c["name"] == "csi-snapshotter"]
        groups = {res for role in of_kind(docs, "ClusterRole") for rule in role["rules"]
                  if "groupsnapshot.storage.k8s.io" in rule["apiGroups"] for res in rule["resources"]}
        return gates, groups

    gates, groups = gate_and_grants("group-snapshots")
    assert gates and all(g == ["CSIVolumeGroupSnapshot=true"] for g in gates), gates
    assert groups == {"volumegroupsnapshotclasses", "volumegroupsnapshotcontents", "volumegroupsnapshotcontents/status"}
    for name in ("aws-both-drivers", "snapshots-forced"):  # snapshot CRDs without the group ones
        gates, groups = gate_and_grants(name)
        assert gates and all(g == ["CSIVolumeGroupSnapshot=false"] for g in gates), (name, gates)
        assert not groups, name


# -- RBAC ------------------------------------------------------------------------------------
# What each sidecar's upstream deploy/kubernetes/rbac.yaml grants, as (apiGroup, resource): verbs.
REQUIRED: dict[str, dict[tuple[str, str], set[str]]] = {
    "provisioner": {
        ("", "persistentvolumes"): {"get", "list", "watch", "create", "delete"},
        ("", "persistentvolumeclaims"): {"get", "list", "watch", "update"},
        ("storage.k8s.io", "storageclasses"): {"get", "list", "watch"},
        ("", "events"): {"list", "watch", "create", "update", "patch"},
        ("snapshot.storage.k8s.io", "volumesnapshots"): {"get", "list"},
        ("snapshot.storage.k8s.io", "volumesnapshotcontents"): {"get", "list"},
        ("storage.k8s.io", "csinodes"): {"get", "list", "watch"},
        ("", "nodes"): {"get", "list", "watch"},
        ("storage.k8s.io", "volumeattachments"): {"get", "list", "watch"},
    },
    "attacher": {
        ("", "persistentvolumes"): {"get", "list", "watch", "patch"},
        ("storage.k8s.io", "csinodes"): {"get", "list", "watch"},
        ("storage.k8s.io", "volumeattachments"): {"get", "list", "watch", "patch"},
        ("storage.k8s.io", "volumeattachments/status"): {"patch"},
    },
    "resizer": {
        ("", "persistentvolumes"): {"get", "list", "watch", "patch"},
        ("", "persistentvolumeclaims"): {"get", "list", "watch"},
        ("", "persistentvolumeclaims/status"): {"patch"},
        ("", "pods"): {"get", "list", "watch"},
        ("", "events"): {"list", "watch", "create", "update", "patch"},
    },
    "snapshotter": {
        ("", "events"): {"list", "watch", "create", "update", "patch"},
        ("snapshot.storage.k8s.io", "volumesnapshotclasses"): {"get", "list", "watch"},
        ("snapshot.storage.k8s.io", "volumesnapshotcontents"): {"create", "get", "list", "watch", "update", "delete", "patch"},
        ("snapshot.storage.k8s.io", "volumesnapshotcontents/status"): {"update", "patch"},
    },
}
# Granted beyond that list, each for a reason given in templates/rbac.yaml.
EXTRA_ALLOWED: dict[str, dict[tuple[str, str], set[str]]] = {
    "provisioner": {
        ("", "persistentvolumes"): {"patch"},
        ("snapshot.storage.k8s.io", "volumesnapshots"): {"watch", "update"},
        ("storage.k8s.io", "volumeattributesclasses"): {"get"},
    },
    "resizer": {("storage.k8s.io", "volumeattributesclasses"): {"get", "list", "watch"}},
    # Volume group snapshots, only when their CRDs exist (test_group_snapshots_follow_their_crds).
    "snapshotter": {
        ("groupsnapshot.storage.k8s.io", "volumegroupsnapshotclasses"): {"get", "list", "watch"},
        ("groupsnapshot.storage.k8s.io", "volumegroupsnapshotcontents"): {"get", "list", "watch", "update", "patch"},
        ("groupsnapshot.storage.k8s.io", "volumegroupsnapshotcontents/status"): {"update", "patch"},
    },
}
LEASES = {("coordination.k8s.io", "leases"): {"get", "watch", "list", "delete", "update", "create"}}
CAPACITY = {
    ("storage.k8s.io", "csistoragecapacities"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("", "pods"): {"get"},
}


def _grants(docs: list[dict[str, Any]], sa: str, namespaced: bool) -> dict[tuple[str, str], set[str]]:
    role_kind, binding_kind = ("Role", "RoleBinding") if namespaced else ("ClusterRole", "ClusterRoleBinding")
    roles = {r["metadata"]["name"]: r for r in of_kind(docs, role_kind)}
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for b in of_kind(docs, binding_kind):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == sa and s["namespace"] == NAMESPACE for s in b["subjects"]):
            continue
        assert b["roleRef"]["kind"] == role_kind
        for rule in roles[b["roleRef"]["name"]]["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out[(group, resource)] |= set(rule["verbs"])
    return out


def _covers(granted: dict[tuple[str, str], set[str]], needed: dict[tuple[str, str], set[str]]) -> list[str]:
    return [f"{g or 'core'}/{r}: {sorted(v - granted.get((g, r), set()))}"
            for (g, r), v in needed.items() if not v <= granted.get((g, r), set())]


@scenarios
def test_rbac_covers_each_sidecar_and_nothing_broader(rendered: Render, scenario: Scenario) -> None:
    docs = rendered(scenario)
    for rtype in ("ClusterRole", "Role"):
        for role in of_kind(docs, rtype):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role["metadata"]["name"]
                assert "secrets" not in rule["resources"], "no sidecar here needs secrets"
    # Leases are only ever namespaced.
    for role in of_kind(docs, "ClusterRole"):
        assert all("leases" not in r["resources"] for r in role["rules"])
    for role in of_kind(docs, "Role") + of_kind(docs, "RoleBinding"):
        assert role["metadata"]["namespace"] == NAMESPACE

    by_sa: dict[str, set[str]] = defaultdict(set)
    leader: set[str] = set()
    capacity: set[str] = set()
    for w, c in iter_containers(docs):
        kind = SIDECARS.get(c["name"])
        sa = pod_spec(w)["serviceAccountName"]
        if kind in REQUIRED:
            by_sa[sa].add(kind)
        f = flags(c) if c["name"] != "plugin" else {}
        if "leader-election" in f:
            leader.add(sa)
        if "enable-capacity" in f:
            capacity.add(sa)
    assert by_sa, "no sidecar that needs RBAC was rendered"
    for sa, kinds in by_sa.items():
        cluster = _grants(docs, sa, namespaced=False)
        namespaced = _grants(docs, sa, namespaced=True)
        for kind in kinds:
            missing = _covers(cluster, REQUIRED[kind])
            assert not missing, f"{sa} runs {kind} but lacks {missing}"
        allowed: dict[tuple[str, str], set[str]] = defaultdict(set)
        for kind in kinds:
            for table in (REQUIRED, EXTRA_ALLOWED):
                for key, verbs in table.get(kind, {}).items():
                    allowed[key] |= verbs
        broader = _covers(allowed, cluster)
        assert not broader, f"{sa} is granted more than its sidecars ({sorted(kinds)}) need: {broader}"
        if sa in leader:
            assert not _covers(namespaced, LEASES), f"{sa} elects leaders but cannot use leases"
        if sa in capacity:
            assert not _covers(namespaced, CAPACITY), f"{sa} publishes capacity but lacks the Role"
        expected_ns: dict[tuple[str, str], set[str]] = defaultdict(set)
        for ns_table in ([LEASES] if sa in leader else []) + ([CAPACITY] if sa in capacity else []):
            for ns_key, ns_verbs in ns_table.items():
                expected_ns[ns_key] |= ns_verbs
        assert not _covers(expected_ns, namespaced), f"{sa} has namespaced grants it does not use"
    # ServiceAccounts that run no API-calling sidecar get no role at all.
    for w in workloads(docs):
        sa = pod_spec(w)["serviceAccountName"]
        if sa not in by_sa:
            assert not _grants(docs, sa, namespaced=False) and not _grants(docs, sa, namespaced=True)


def test_irsa_annotation_lands_on_the_controller_service_account(rendered: Render) -> None:
    docs = rendered(BY_NAME["aws-both-drivers"])
    sas = {s["metadata"]["name"]: s for s in of_kind(docs, "ServiceAccount")}
    controller_sa = {pod_spec(d)["serviceAccountName"] for d in of_kind(docs, "Deployment")}
    assert len(controller_sa) == 1
    annotations = sas[controller_sa.pop()]["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


# -- privileges ------------------------------------------------------------------------------
@scenarios
def test_only_the_node_plugin_is_privileged(rendered: Render, scenario: Scenario) -> None:
    for w in workloads(rendered(scenario)):
        for init in pod_spec(w).get("initContainers", []):
            assert w["kind"] == "DaemonSet" and init["name"] == "pool-init", "only the pool init may run before the plugin"
    for w, c in iter_containers(rendered(scenario)):
        where = f"{w['kind']}/{w['metadata']['name']}/{c['name']}"
        sc = c.get("securityContext", {})
        spec = pod_spec(w)
        assert not spec.get("hostPID") and not spec.get("hostIPC"), where
        # Only the EFS node plugin shares the host's network: its NFS mounts must outlive the pod.
        nfs_node = w["kind"] == "DaemonSet" and scenario.value("provider") == "aws" and (
            w["metadata"]["labels"]["elastivol.io/driver"] == "file")
        assert bool(spec.get("hostNetwork")) == (nfs_node and scenario.value("drivers", "file", "hostNetwork")), where
        if spec.get("hostNetwork"):
            assert spec["dnsPolicy"] == "ClusterFirstWithHostNet", where
        bidirectional = any(m.get("mountPropagation") == "Bidirectional" for m in c.get("volumeMounts", []))
        if w["kind"] == "DaemonSet" and c["name"] == "plugin":
            assert sc.get("privileged") is True, f"{where} formats and mounts host devices: it must be privileged"
            continue
        assert not sc.get("privileged"), f"{where} must not be privileged"
        assert not bidirectional, f"{where}: Bidirectional propagation needs a privileged container"
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert "add" not in sc.get("capabilities", {}), where
        if w["kind"] == "Deployment":
            pod_sc = spec["securityContext"]
            assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0, f"{where} must not run as root"
            assert "runAsUser" not in sc or sc["runAsUser"] != 0, where


@scenarios
def test_priority_and_tolerations(rendered: Render, scenario: Scenario) -> None:
    docs = rendered(scenario)
    for ds in of_kind(docs, "DaemonSet"):
        assert pod_spec(ds)["priorityClassName"] == "system-node-critical"
        if scenario.value("node", "tolerateAllTaints"):
            assert pod_spec(ds)["tolerations"] == [{"operator": "Exists"}]
    for dep in of_kind(docs, "Deployment"):
        assert pod_spec(dep)["priorityClassName"] == scenario.value("controller", "priorityClassName")


@scenarios
def test_images_are_pinned(rendered: Render, scenario: Scenario) -> None:
    for _w, c in iter_containers(rendered(scenario)):
        image = c["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{c['name']}: image {image} is not pinned"
        if c["name"] in SIDECARS:
            assert image.startswith(SIDECAR_REGISTRY), image
            assert tag.startswith("v") and tag.count(".") == 2, f"{image}: pin a release vX.Y.Z"
        else:
            assert tag == scenario.value("image", "tag") or tag == _app_version()


def _app_version() -> str:
    import yaml

    from tests.deploy.chart import CHART

    return str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])


# -- classes, metrics, notes, refusals -------------------------------------------------------------
def test_storage_classes_mirror_the_seeds(rendered: Render) -> None:
    aws = {s["metadata"]["name"]: s for s in of_kind(rendered(BY_NAME["aws-both-drivers"]), "StorageClass")}
    gp3 = aws["gp3"]
    assert gp3["provisioner"] == elastivol.BLOCK_DRIVER_NAME
    assert gp3["volumeBindingMode"] == "WaitForFirstConsumer"
    assert gp3["allowVolumeExpansion"] is True
    assert gp3["parameters"] == {"type": "gp3", "csi.storage.k8s.io/fstype": "ext4", "encrypted": "true"}
    efs = aws["efs-sc"]
    assert efs["provisioner"] == elastivol.FILE_DRIVER_NAME
    assert efs["parameters"]["provisioningMode"] == "efs-ap"
    assert efs["parameters"]["fileSystemId"].startswith("fs-")
    assert {"directoryPerms", "gidRangeStart", "gidRangeEnd", "basePath"} <= set(efs["parameters"])
    local = {s["metadata"]["name"]: s for s in of_kind(rendered(BY_NAME["defaults"]), "StorageClass")}
    assert set(local) == {"gp3"}, "efs-sc needs the file driver, off by default"
    assert "encrypted" not in local["gp3"]["parameters"], "encryption parameters are for the aws provider"
    for doc in of_kind(rendered(BY_NAME["snapshots-forced"]), "VolumeSnapshotClass"):
        assert doc["deletionPolicy"] in ("Delete", "Retain")


def test_metrics_services_and_service_monitor(rendered: Render) -> None:
    docs = rendered(BY_NAME["metrics-on"])
    services = of_kind(docs, "Service")
    assert {s["metadata"]["labels"]["elastivol.io/driver"] for s in services} == {"block", "file"}
    assert len(services) == 4  # controller and node, per driver
    assert len(of_kind(docs, "ServiceMonitor")) == 1
    pods = {(w["metadata"]["labels"]["app.kubernetes.io/component"], w["metadata"]["labels"]["elastivol.io/driver"]): w
            for w in workloads(docs)}
    for svc in services:
        sel = svc["spec"]["selector"]
        target = pods[(sel["app.kubernetes.io/component"], sel["elastivol.io/driver"])]
        assert sel.items() <= target["spec"]["template"]["metadata"]["labels"].items()
        named_ports = {p["name"] for c in pod_spec(target)["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in named_ports, f"{svc['metadata']['name']}: no container port {port['targetPort']}"
    for _, c in iter_containers(docs):
        if c["name"] == "plugin":
            assert flag(c, "metrics-address").startswith("0.0.0.0:")
    assert not of_kind(rendered(BY_NAME["aws-both-drivers"]), "Service"), "metrics are off by default"


def test_notes_tell_how_to_check_the_install(helm: Path) -> None:
    for scenario in (BY_NAME["defaults"], BY_NAME["aws-both-drivers"]):
        with tempfile.TemporaryDirectory() as tmp:
            out = run_helm(helm, *helm_args("install", scenario.values, Path(tmp)), "--dry-run=client").stdout
        notes = out.split("NOTES:", 1)[1]
        assert "kubectl get csidriver,csinode" in notes
        assert "kind: PersistentVolumeClaim" in notes and "storageClassName: gp3" in notes
    with tempfile.TemporaryDirectory() as tmp:
        out = run_helm(helm, *helm_args("install", {}, Path(tmp)), "--dry-run=client").stdout
    assert "elastivol pool init /var/lib/elastivol/pool" in out


def test_chart_refuses_what_cannot_work(helm: Path) -> None:
    assert "aws.zones" in render_error(helm, {"provider": "aws"})
    assert "'local', 'aws'" in render_error(helm, {"provider": "gcp"})  # values.schema.json
    assert "blok" in render_error(helm, {"drivers": {"blok": {"enabled": True}}})
    assert "at least one driver" in render_error(helm, {"drivers": {"block": {"enabled": False}}})
    msg = render_error(helm, {"provider": "aws", "aws": {"zones": ["us-east-1a"]}, "drivers": {"file": {"enabled": True}}})
    assert "fileSystemId" in msg


@pytest.mark.parametrize("enforce", [True, False])
def test_local_block_performance_enforcement_is_a_chart_value(rendered: Render, enforce: bool) -> None:
    from elastivol.cli import main

    serve = main.commands["serve"]
    assert isinstance(serve, click.Command)
    docs = rendered(Scenario(f"local-enforce-{enforce}", {
        "provider": "local", "drivers": {"file": {"enabled": True}}, "local": {"enforcePerformance": enforce}}))
    block_driver = next(d for d in of_kind(docs, "CSIDriver") if d["metadata"]["name"] == DRIVER_NAMES["block"])
    assert block_driver["spec"]["podInfoOnMount"] is enforce
    for workload, container in _plugin_containers(docs):
        with serve.make_context("serve", list(container["args"]), resilient_parsing=False) as ctx:
            params = ctx.params
        block = params["driver"] == "block"
        # Only the block node plugin throttles: it gets the flag and the host's cgroups.
        assert params["enforce_performance"] is (enforce if block else True)
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert ("/sys/fs/cgroup" in mounts) is (enforce and block), workload["metadata"]["name"]
        host_paths = {v["hostPath"]["path"] for v in workload["spec"]["template"]["spec"]["volumes"] if "hostPath" in v}
        assert ("/sys/fs/cgroup" in host_paths) is (enforce and block)
