"""Small parts of the aws provider on their own: batcher, device names, limits, coalescing, GIDs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from elastivol.errors import Exhausted, FailedPrecondition, InvalidArgument, NotFound
from elastivol.providers.aws.controller.batcher import Batcher
from elastivol.providers.aws.controller.devices import NAMES, DeviceAllocator
from elastivol.providers.aws.controller.ebs_model import NAME_TAG, tag_list
from elastivol.providers.aws.controller.gid import GidAllocator
from elastivol.providers.aws.controller.modify import ModifyCoalescer
from elastivol.providers.aws.limits import max_volumes
from elastivol.providers.aws.mounter import HostMounter, MountRequest, mount_command
from elastivol.providers.aws.settings import AwsSettings
from elastivol.providers.file import AccessPoint


def run_all(fns: list[Callable[[], object]]) -> None:
    threads = [threading.Thread(target=f) for f in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def test_batcher_shares_one_call_among_concurrent_waiters() -> None:
    seen: list[list[str]] = []

    def fetch(ids: list[str]) -> dict[str, str]:
        seen.append(ids)
        time.sleep(0.01)
        return {i: i.upper() for i in ids if not i.endswith("missing")}

    batcher: Batcher[str] = Batcher("test", fetch, interval=0.05, max_batch=40)
    got: dict[str, str | None] = {}
    keys = [f"k{i}" for i in range(100)] + ["x-missing"]
    run_all([lambda k=k: got.update({k: batcher.get(k)}) for k in keys])  # type: ignore[misc]
    assert got["k7"] == "K7" and got["x-missing"] is None
    assert all(len(chunk) <= 40 for chunk in seen)
    assert len(seen) <= 8, f"{len(seen)} fetches for 101 waiters"


def test_batcher_hands_errors_to_every_waiter_and_can_be_disabled() -> None:
    def broken(ids: list[str]) -> dict[str, str]:
        raise NotFound("boom")

    with pytest.raises(NotFound):
        Batcher("broken", broken, interval=0.01).get("a")
    calls: list[list[str]] = []

    def record(ids: list[str]) -> dict[str, str]:
        calls.append(ids)
        return {}

    plain: Batcher[str] = Batcher("off", record, interval=1, enabled=False)
    run_all([lambda: plain.get("a"), lambda: plain.get("b")])
    assert sorted(calls) == [["a"], ["b"]]


def test_device_names_in_flight_are_never_handed_out_twice() -> None:
    alloc = DeviceAllocator()
    held: list[str] = []
    release = threading.Event()

    def hold() -> None:
        with alloc.hold("i-1", in_use=["/dev/sda1", "/dev/xvdaa"]) as name:
            held.append(name)
            release.wait(5)

    threads = [threading.Thread(target=hold) for _ in range(20)]
    for t in threads:
        t.start()
    while len(held) < 20:
        time.sleep(0.01)
    assert len(set(held)) == 20 and "/dev/xvdaa" not in held
    release.set()
    for t in threads:
        t.join()
    with alloc.hold("i-1", in_use=["/dev/sdab"]) as name:
        assert name == "/dev/xvdaa", "freed names are reused, and /dev/sdab is the same slot as /dev/xvdab"
    with alloc.hold("i-1", in_use=[], avoid=["/dev/xvdaa"]) as name:
        assert name == "/dev/xvdab"
    with pytest.raises(Exhausted):
        with alloc.hold("i-2", in_use=list(NAMES)):
            pass


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    [("m5.large", 26), ("t3.medium", 26), ("m7i.large", 31), ("m7i.48xlarge", 127), ("m4.xlarge", 38),
     ("i3.metal", 26), ("unknown.size", 26)],
)
def test_volume_limits_table(instance_type: str, expected: int) -> None:
    assert max_volumes(instance_type) == expected


def test_volume_limits_overrides() -> None:
    assert max_volumes("m5.large", override=10) == 10
    assert max_volumes("m5.large", reserved=5) == 23


def test_modify_coalescer_merges_a_window() -> None:
    sent: list[dict[str, int]] = []
    coalescer = ModifyCoalescer(lambda vid, changes: sent.append(dict(changes)), window=0.2)
    run_all([lambda: coalescer.submit("vol-1", {"Size": 20}), lambda: coalescer.submit("vol-1", {"Iops": 6000}),
             lambda: coalescer.submit("vol-1", {"Size": 15})])
    assert sent == [{"Size": 20, "Iops": 6000}]


def test_gid_allocation_is_race_free() -> None:
    created: list[int] = []
    alloc = GidAllocator()

    def create() -> None:
        with alloc.allocate("fs-1", (100, 120), lambda: set(created)) as gid:
            time.sleep(0.01)  # CreateAccessPoint takes a while; others must not take the same GID meanwhile
        created.append(gid)

    run_all([create for _ in range(21)])
    assert sorted(created) == list(range(100, 121))
    with pytest.raises(Exhausted, match="gidRangeStart"):
        with alloc.allocate("fs-1", (100, 120), lambda: set(created)):
            pass


def test_mount_commands_for_efs_utils_and_the_nfs_fallback() -> None:
    ap = AccessPoint(id="fsap-0123456789abcdef0", fs_id="fs-0123456789abcdef0", name="pvc-1", directory="/d",
                     uid=1000, gid=1000, perms=0o700, capacity_bytes=0)
    req = MountRequest("fs-0123456789abcdef0", "/sub", ap, "/var/lib/kubelet/pods/x/mount", readonly=True,
                       options=("noatime",))
    assert mount_command(req, "us-east-1", efs_utils=True) == [
        "mount", "-t", "efs", "-o", "tls,accesspoint=fsap-0123456789abcdef0,nosuid,nodev,ro,noatime",
        "fs-0123456789abcdef0:/sub", "/var/lib/kubelet/pods/x/mount"]
    plain = MountRequest("fs-0123456789abcdef0", "/", None, "/mnt/t")
    assert mount_command(plain, "us-east-1", efs_utils=False) == [
        "mount", "-t", "nfs4", "-o",
        "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport,nosuid,nodev",
        "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com:/", "/mnt/t"]


def test_access_point_mounts_need_efs_utils(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HostMounter, "efs_utils", staticmethod(lambda: False))
    ap = AccessPoint(id="fsap-0123456789abcdef0", fs_id="fs-0123456789abcdef0", name="", directory="/d",
                     uid=0, gid=0, perms=0o700, capacity_bytes=0)
    with pytest.raises(FailedPrecondition, match="amazon-efs-utils"):
        HostMounter("us-east-1").mount(MountRequest("fs-0123456789abcdef0", "/", ap, str(tmp_path / "t")))


def test_tags_aws_cannot_carry_are_refused_before_sending() -> None:
    """XML 1.0 has no place for most control characters: such a tag made moto's answers unreadable."""
    assert tag_list({NAME_TAG: "pvc-1 \t\u00e9\u4e2d", "k": ""}) == [
        {"Key": NAME_TAG, "Value": "pvc-1 \t\u00e9\u4e2d"}, {"Key": "k", "Value": ""}]
    for tags in ({NAME_TAG: "a\x01b"}, {"k\x1f": "v"}, {NAME_TAG: "\ufffe"}):
        with pytest.raises(InvalidArgument, match=r"tag .*control character U\+00(01|1F)|U\+FFFE"):
            tag_list(tags)


def test_settings_from_the_environment() -> None:
    """Every tunable is read from ELASTIVOL_AWS_<FIELD>; the region from AWS's own variables."""
    defaults = AwsSettings.from_env({})
    assert defaults == AwsSettings()
    env = {
        "AWS_DEFAULT_REGION": "eu-west-1", "ELASTIVOL_AWS_BATCHING": " off ", "ELASTIVOL_AWS_MAX_BATCH": "7.9",
        "ELASTIVOL_AWS_CREATE_TIMEOUT": "12", "ELASTIVOL_AWS_MODIFY_WINDOW": "0", "ELASTIVOL_AWS_CLONE": "copy",
        "ELASTIVOL_AWS_DEV_ROOT": "/tmp/dev", "ELASTIVOL_AWS_RESERVED_ATTACHMENTS": "-1",
        "ELASTIVOL_AWS_INSTANCE_TYPE": "m5.large", "ELASTIVOL_AWS_SYS_ROOT": "  ",
    }
    s = AwsSettings.from_env(env)
    assert (s.region, s.batching, s.max_batch, s.create_timeout, s.modify_window) == ("eu-west-1", False, 7, 12.0, 0.0)
    assert (s.clone, s.dev_root, s.sys_root, s.reserved_attachments, s.instance_type) == (
        "copy", "/tmp/dev", "/sys", -1, "m5.large")
    assert AwsSettings.from_env({"AWS_REGION": "us-east-2", "AWS_DEFAULT_REGION": "x"}).region == "us-east-2"
    # Each field is parsed by its type, with its own lower bound.
    assert isinstance(s.max_batch, int) and isinstance(s.create_timeout, float)
    assert AwsSettings.from_env({"ELASTIVOL_AWS_PROBE_CACHE": "0"}).probe_cache == 0.0


# Each number's lower bound: (field, a value just below it, the bound as the message prints it).
BOUNDS = [("POLL_INITIAL", "0", "0.001"), ("MAX_ATTEMPTS", "0", "1"), ("RESERVED_ATTACHMENTS", "-2", "-1"),
          ("IMDS_TIMEOUT", "0.01", "0.05"), ("DEVICE_WAIT", "-1", "0.0"), ("DETACH_TIMEOUT", "0.05", "0.1")]


@pytest.mark.parametrize(("name", "raw", "bound"), BOUNDS)
def test_settings_refuse_numbers_below_their_bound(name: str, raw: str, bound: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        AwsSettings.from_env({f"ELASTIVOL_AWS_{name}": raw})
    assert caught.value.message == f"ELASTIVOL_AWS_{name}={raw!r} must be at least {bound}"


@pytest.mark.parametrize(("env", "message"), [
    ({"ELASTIVOL_AWS_POLL_MAX": "soon"}, "ELASTIVOL_AWS_POLL_MAX='soon' is not a number"),
    ({"ELASTIVOL_AWS_BATCHING": "maybe"}, 'ELASTIVOL_AWS_BATCHING=\'maybe\': write "true" or "false"'),
    ({"ELASTIVOL_AWS_CLONE": "rsync"}, "ELASTIVOL_AWS_CLONE='rsync': choose auto, copy or snapshot"),
    # The clone mode is checked first, then the fields in their order.
    ({"ELASTIVOL_AWS_CLONE": "rsync", "ELASTIVOL_AWS_BATCH_INTERVAL": "x"}, "ELASTIVOL_AWS_CLONE='rsync'"),
    ({"ELASTIVOL_AWS_PROBE_CACHE": "x", "ELASTIVOL_AWS_BATCH_INTERVAL": "y"}, "ELASTIVOL_AWS_BATCH_INTERVAL='y'"),
])
def test_settings_refuse_what_they_cannot_use(env: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        AwsSettings.from_env(env)
    assert str(caught.value.message).startswith(message)
