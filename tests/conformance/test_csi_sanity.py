"""The community's conformance suite, csi-sanity (kubernetes-csi/csi-test v5.5), against real servers.

Four runs, each against a controller and a node plugin running as separate `elastivol serve`
processes, as they run in a cluster (a Deployment and a DaemonSet):

* block driver, local provider, filesystem volumes (``--csi.testvolumeaccesstype mount``);
* block driver, local provider, raw block volumes (``--csi.testvolumeaccesstype block``);
* file driver, local provider (access points on a registered file system);
* block driver, aws provider: the controller talks to moto in server mode through the fault layer
  (latency, eventual consistency, transitional states), the node finds its devices in the fake
  NVMe tree that ``EbsDataPlane`` keeps in step with moto's attachments.

Each must end with 0 failed and at least a floor of passed specs, so a run that silently tests
little (a wrong flag, a missing capability) cannot pass. Specs that cannot pass here are skipped
by name in ``SKIPS`` with the reason (also listed in the README's conformance section).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from elastivol.node import loop, mount
from elastivol.process import ServerProcess, serve_args
from elastivol.providers.local.file.registry import FileRegistry
from elastivol.providers.local.pool import Pool, init_pool
from tests.aws.conftest import FAST
from tests.aws.support import ZONE_A, ZONE_B, Disks, FakeImds, free_port
from tests.conformance import sanity
from tests.conformance.ebs_plane import EbsDataPlane
from tests.support import SERVE_MODULE, serve_env

GiB = 1 << 30
ARTIFACTS_ENV = "CSI_SANITY_ARTIFACTS"  # a directory to copy logs into before the work dir is removed

# Specs that cannot pass here, by name, with the reason (README.md's conformance section lists
# them too; keep both in step).
MAXLEN_NAME = "should not fail when creating volume with maximum-length name"
CLONE = "should create volume from an existing source volume"
SKIPS: dict[str, dict[str, str]] = {
    "block-mount": {},
    "block-block": {},
    "file": {
        MAXLEN_NAME: (
            "an access point's directory is named after the volume, as EFS names it, and EFS caps that "
            "path at 100 characters: a 128-character CSI name cannot fit, and CreateVolume refuses it with "
            "INVALID_ARGUMENT saying so (a Kubernetes PV name, pvc-<uid>, is 40 characters)"
        ),
    },
    "aws-block": {
        CLONE: (
            "csi-sanity reuses the CSI name of a volume that the previous spec created and deleted; the "
            "aws provider derives EC2's ClientToken from the name (as the EBS CSI driver does), and EC2 "
            "answers a reused token with the deleted volume for hours. Kubernetes never reuses a PV name. "
            "Cloning on the aws provider is covered by tests/aws/test_block_grpc.py"
        ),
    },
}

# Floors of passed specs: a little under what each run passes today, so that a run that lost
# its capabilities or its flags fails loudly instead of passing with a handful of specs.
MIN_PASSED = {"block-mount": 70, "block-block": 70, "file": 50, "aws-block": 65}

# The fault layer's transitional states, as in tests/aws/test_block_grpc.py, except that a new
# snapshot stays pending for one poll, not two: csi-sanity waits 5 s before it asks again.
TRANSITIONS = {"latency_ms": 5, "consistency_lag": 1, "creating_polls": 2, "attaching_polls": 2, "detaching_polls": 2,
               "snapshot_pending_polls": 1, "modifying_polls": 1, "optimizing_polls": 1}


@pytest.fixture(scope="module")
def exe() -> Path:
    found = sanity.binary()
    if found is None:
        pytest.skip(f"csi-sanity is not installed here: looked for {sanity.where_looked()}")
    return found


def _release(work: Path) -> None:
    """Unmount what is left under ``work`` (deepest first), then detach loop devices backed there."""
    for m in sorted(mount.mounts(), key=lambda m: len(m.target), reverse=True):
        if m.target.startswith(str(work) + "/"):
            mount.unmount_all(m.target)
    # Volume images first (they live on the pools), then the pools' own images.
    for d in sorted(loop.list_all(), key=lambda d: d.backing_file.endswith("pool.img")):
        if d.backing_file.startswith(str(work) + "/"):
            loop.detach(d.path)


@pytest.fixture(scope="module")
def swork() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="elastivol-sanity-", dir="/var/tmp"))
    yield work
    _release(work)
    keep = os.environ.get(ARTIFACTS_ENV)
    if keep:
        # For CI artifacts or a failure to read later: the servers' logs and csi-sanity's output.
        shutil.copytree(work, Path(keep) / work.name, ignore=shutil.ignore_patterns("*.img", "*.sock", "pool", "fake"),
                        dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)


@dataclass
class Pair:
    """A controller and a node plugin: the two endpoints csi-sanity is given."""

    controller: ServerProcess
    node: ServerProcess
    work: Path

    def stop(self) -> None:
        self.node.stop()
        self.controller.stop()


def _pair(work: Path, ctl_args: list[str], node_args: list[str], env: dict[str, str] | None = None,
          node_env: dict[str, str] | None = None) -> Pair:
    logs = work / "logs"
    # The support package's entry point: the aws controller gets its fault layer from the environment.
    controller = ServerProcess(ctl_args, f"unix://{work}/controller.sock", logs / "controller.log", serve_env(env),
                               module=SERVE_MODULE)
    node = ServerProcess(node_args, f"unix://{work}/node.sock", logs / "node.log", serve_env(node_env),
                         module=SERVE_MODULE)
    pair = Pair(controller, node, work)
    try:
        controller.start(wait=False)
        node.start(wait=False)
        controller.wait_ready(60)
        node.wait_ready(60)
    except BaseException:
        pair.stop()
        raise
    return pair


def _local_leftovers(work: Path, pool: Path) -> list[str]:
    """Volume loop devices of the pool and mounts under the run's directory, other than the pool."""
    found = [f"{d.path}->{d.backing_file}" for d in loop.list_all() if d.backing_file.startswith(str(pool) + "/")]
    found += [m.target for m in mount.mounts() if m.target.startswith(str(work) + "/") and m.target != str(pool)]
    return found


def _check(run: str, result: sanity.Result) -> None:
    print(f"\ncsi-sanity [{run}]: {result.summary()}")
    assert result.failed == 0, (f"csi-sanity [{run}]: {result.summary()}; failed specs:\n" + "\n".join(result.failures)
                                + "\n\n" + "\n\n".join(result.reasons))
    assert result.passed >= MIN_PASSED[run], f"csi-sanity [{run}] passed only {result.passed} specs: {result.summary()}"


# -- block driver, local provider ----------------------------------------------------------------
@pytest.fixture(scope="module")
def block_pair(swork: Path, exe: Path) -> Iterator[Pair]:
    work = swork / "block"
    pool = work / "pool"
    # Big enough for the snapshot-listing specs, which keep several 1 GiB volumes at once; sparse.
    init_pool(pool, 32 * GiB, "xfs")
    pair = _pair(
        work,
        serve_args(mode="controller", pool=pool, zone="zone-a"),
        serve_args(mode="node", pool=pool, node_id="node-a", zone="zone-a", allowed_roots=[work]),
    )
    yield pair
    pair.stop()


@pytest.mark.parametrize("access_type", ["mount", "block"])
def test_block_driver_local_provider(block_pair: Pair, exe: Path, access_type: str) -> None:
    run = f"block-{access_type}"
    result = sanity.run(exe, block_pair.work / f"sanity-{access_type}", node=block_pair.node.endpoint,
                        controller=block_pair.controller.endpoint, access_type=access_type, skips=SKIPS[run])
    _check(run, result)
    assert _local_leftovers(block_pair.work, block_pair.work / "pool") == []


# -- file driver, local provider -----------------------------------------------------------------
@pytest.fixture(scope="module")
def file_pair(swork: Path, exe: Path) -> Iterator[tuple[Pair, str]]:
    work = swork / "file"
    pool = work / "pool"
    init_pool(pool, 4 * GiB, "xfs")
    root = pool / "fs" / "sanity"
    root.mkdir(parents=True)
    fs = FileRegistry(Pool(pool)).register("sanity", str(root))
    pair = _pair(
        work,
        serve_args(driver="file", mode="controller", pool=pool, zone="zone-a"),
        serve_args(driver="file", mode="node", pool=pool, node_id="node-a", zone="zone-a", allowed_roots=[work]),
    )
    yield pair, fs.id
    pair.stop()


def test_file_driver_local_provider(file_pair: tuple[Pair, str], exe: Path) -> None:
    pair, fs_id = file_pair
    result = sanity.run(exe, pair.work / "sanity", node=pair.node.endpoint, controller=pair.controller.endpoint,
                        parameters={"provisioningMode": "efs-ap", "fileSystemId": fs_id, "directoryPerms": "700"},
                        skips=SKIPS["file"])
    _check("file", result)
    assert _local_leftovers(pair.work, pair.work / "pool") == []


# -- block driver, aws provider (moto + fault layer; fake NVMe tree on the node) -------------------
@pytest.fixture(scope="module")
def aws_pair(swork: Path, exe: Path, aws_env: dict[str, str], raw_ec2: Any) -> Iterator[tuple[Pair, EbsDataPlane, str]]:
    work = swork / "aws"
    work.mkdir()
    instance = raw_ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="m5.large",
                                     Placement={"AvailabilityZone": ZONE_A})["Instances"][0]["InstanceId"]
    cluster = f"sanity-{uuid.uuid4().hex[:8]}"
    disks = Disks(work / "fake")
    plane = EbsDataPlane(raw_ec2, disks, instance, cluster).start()
    imds = FakeImds(instance_id=instance, zone=ZONE_A, instance_type="m5.large").start()
    try:
        ctl_env = {**FAST, "ELASTIVOL_AWS_FAULTS": json.dumps(TRANSITIONS)}
        node_env = {**FAST, "ELASTIVOL_AWS_DEV_ROOT": str(disks.dev), "ELASTIVOL_AWS_SYS_ROOT": str(disks.sys),
                    "AWS_EC2_METADATA_DISABLED": "false", "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url}
        common = ["--driver", "block", "--provider", "aws", "--log-format", "json"]
        pair = _pair(
            work,
            [*common, "--mode", "controller", "--cluster-id", cluster, "--zone", ZONE_A,
             "--zones", f"{ZONE_A},{ZONE_B}", "--metrics-address", f"127.0.0.1:{free_port()}"],
            # IMDS, not --node-id, is what a node on EC2 trusts for its identity.
            [*common, "--mode", "node", "--node-id", "i-0ffffffffffffffff", "--zone", ZONE_A,
             "--allowed-root", str(work)],
            ctl_env, node_env,
        )
        try:
            yield pair, plane, cluster
        finally:
            pair.stop()
    finally:
        plane.stop()
        imds.stop()
        disks.cleanup()


def test_block_driver_aws_provider(aws_pair: tuple[Pair, EbsDataPlane, str], exe: Path, raw_ec2: Any) -> None:
    pair, plane, cluster = aws_pair
    result = sanity.run(exe, pair.work / "sanity", node=pair.node.endpoint, controller=pair.controller.endpoint,
                        parameters={"type": "gp3"}, skips=SKIPS["aws-block"])
    _check("aws-block", result)
    assert plane.errors == []
    # Everything csi-sanity made is gone from "AWS", and nothing is left attached on the node.
    left = raw_ec2.describe_volumes(Filters=[{"Name": "tag:elastivol.io/cluster", "Values": [cluster]}])["Volumes"]
    assert [v["VolumeId"] for v in left] == []
    deadline = time.monotonic() + 5
    while (plane.sizes or plane.stuck) and time.monotonic() < deadline:
        time.sleep(0.05)  # the follower sees the last detach on its next poll
    assert plane.sizes == {} and plane.stuck == {}
    assert [m.target for m in mount.mounts() if m.target.startswith(str(pair.work) + "/")] == []
