"""elastivol.params.block: EBS CSI StorageClass parameters, sizes, performance, mkfs flags, records."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastivol.errors import InvalidArgument, InvalidParameter, OutOfRange
from elastivol.params.block import (
    ACCEPTED_KEYS,
    BlockParameters,
    Performance,
    VolumeType,
    mkfs_args,
    parse_block_parameters,
    recompute_for_resize,
    resolve_performance,
    round_capacity,
    same_request,
    size_limits_gib,
    to_record,
)
from elastivol.units import GiB

SEED_1 = {"type": "gp3", "allowAutoIOPSPerGBIncrease": "true", "encrypted": "true"}
SEED_2 = {"csi.storage.k8s.io/fstype": "xfs", "type": "gp3", "iopsPerGB": "50", "encrypted": "true"}


def bad(raw: dict[str, str], key: str, *fragments: str) -> InvalidParameter:
    """Parse ``raw``, expect InvalidParameter for ``key`` whose message holds every fragment."""
    with pytest.raises(InvalidParameter) as info:
        parse_block_parameters(raw)
    assert info.value.key == key
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    return info.value


# -- seeds and basics ---------------------------------------------------------------------------
def test_seed_storage_classes_parse() -> None:
    one = parse_block_parameters(SEED_1)
    assert one.volume_type is VolumeType.GP3
    assert one.allow_auto_iops_per_gb_increase and one.encrypted
    assert one.fs_type is None and one.iops is None and one.iops_per_gb is None
    two = parse_block_parameters(SEED_2)
    assert (two.volume_type, two.iops_per_gb, two.fs_type, two.encrypted) == (VolumeType.GP3, 50, "xfs", True)


def test_empty_map_gives_defaults() -> None:
    p = parse_block_parameters({})
    assert p == BlockParameters()
    assert p.volume_type is VolumeType.GP3 and p.fs_type is None and p.tags == {}
    assert resolve_performance(p, 1) == Performance(3000, 125)


def test_volume_types() -> None:
    assert [str(t) for t in VolumeType] == ["gp2", "gp3", "io1", "io2", "sc1", "st1", "standard"]
    assert parse_block_parameters({"type": ""}).volume_type is VolumeType.GP3
    bad({"type": "gp4"}, "type", "'gp4'", "gp2, gp3, io1, io2, sc1, st1, standard")
    bad({"type": "GP3"}, "type", 'write "gp3"')


def test_keys_are_case_insensitive_and_recorded_canonically() -> None:
    p = parse_block_parameters(
        {
            "TYPE": "io2",
            "IOPSPERGB": "10",
            "allowautoiopspergbincrease": "TRUE",
            "KmsKeyID": "arn:aws:kms:eu-west-1:1:key/x",
            "BlockSize": "4096",
            "MULTIATTACH": "true",
            "CSI.Storage.K8s.io/FsType": "ext4",
            "TagSpecification_1": "team=db",
            "PreAllocate": "True",
        }
    )
    assert (p.volume_type, p.iops_per_gb, p.allow_auto_iops_per_gb_increase) == (VolumeType.IO2, 10, True)
    assert p.kms_key_id == "arn:aws:kms:eu-west-1:1:key/x" and p.encrypted
    assert (p.block_size, p.multi_attach, p.fs_type, p.preallocate) == (4096, True, "ext4", True)
    assert p.tags == {"team": "db"}
    assert to_record(p) == {
        "allowAutoIOPSPerGBIncrease": "true",
        "blockSize": "4096",
        "csi.storage.k8s.io/fstype": "ext4",
        "encrypted": "true",
        "iopsPerGB": "10",
        "kmsKeyId": "arn:aws:kms:eu-west-1:1:key/x",
        "multiAttach": "true",
        "preallocate": "true",
        "tagSpecification_1": "team=db",
        "type": "io2",
    }


def test_same_key_twice_in_different_case_is_rejected() -> None:
    bad({"iops": "3000", "IOPS": "4000"}, "IOPS", "given twice", "'iops'", "'IOPS'")


def test_unknown_key_names_it_and_lists_accepted_keys() -> None:
    err = bad({"type": "gp3", "zone": "a"}, "zone", "'zone'", "tagSpecification_<N>")
    for key in ACCEPTED_KEYS:
        assert key in err.message
    bad({"blockExpress": "true"}, "blockExpress", "unknown parameter")
    bad({"tagSpecification_x": "a=b"}, "tagSpecification_x", "unknown parameter")


def test_other_csi_keys_are_ignored() -> None:
    p = parse_block_parameters(
        {
            "csi.storage.k8s.io/provisioner-secret-name": "s",
            "csi.storage.k8s.io/node-stage-secret-namespace": "ns",
            "csi.storage.k8s.io/pvc/name": "data",
            "csi.storage.k8s.io/pvc/namespace": "db",
            "csi.storage.k8s.io/pv/name": "pvc-123",
        }
    )
    assert (p.pvc_name, p.pvc_namespace, p.pv_name) == ("data", "db", "pvc-123")


# -- values -------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["encrypted", "allowAutoIOPSPerGBIncrease", "ext4BigAlloc", "preallocate", "multiAttach"])
@pytest.mark.parametrize("value", ["yes", "1", "", "True ", "on"])
def test_bools_accept_only_true_and_false(key: str, value: str) -> None:
    bad({"type": "io2", "iops": "100", key: value}, key, key, repr(value))


@pytest.mark.parametrize("text,expected", [("true", True), ("TRUE", True), ("False", False), ("false", False)])
def test_bool_spellings(text: str, expected: bool) -> None:
    assert parse_block_parameters({"preallocate": text}).preallocate is expected


@pytest.mark.parametrize("value", ["3e3", "-5", "+5", " 3000", "3000 ", "1_000", "0x10", "\u0663", "", "3.5"])
def test_integers_must_be_plain_decimal(value: str) -> None:
    bad({"iops": value}, "iops", "iops", repr(value))


def test_integers_must_be_positive_and_bounded() -> None:
    bad({"iops": "0"}, "iops", "positive", "'0'")
    bad({"blockSize": "00"}, "blockSize", "positive")
    bad({"iops": str(2**31)}, "iops", "too large")
    assert parse_block_parameters({"iops": "03000"}).iops == 3000


def test_fs_type() -> None:
    for fs in ("ext2", "ext3", "ext4", "xfs"):
        assert parse_block_parameters({"csi.storage.k8s.io/fstype": fs}).fs_type == fs
    assert parse_block_parameters({"csi.storage.k8s.io/fstype": ""}).fs_type is None
    bad({"csi.storage.k8s.io/fstype": "btrfs"}, "csi.storage.k8s.io/fstype", "'btrfs'", "ext2, ext3, ext4, xfs")
    bad({"csi.storage.k8s.io/fstype": "XFS"}, "csi.storage.k8s.io/fstype", 'write "xfs"')


def test_legacy_fstype_key_is_an_alias() -> None:
    assert parse_block_parameters({"fsType": "xfs"}).fs_type == "xfs"
    assert to_record(parse_block_parameters({"fstype": "xfs"}))["csi.storage.k8s.io/fstype"] == "xfs"
    same = {"fsType": "xfs", "csi.storage.k8s.io/fstype": "xfs"}
    assert parse_block_parameters(same).fs_type == "xfs"
    bad({"fsType": "xfs", "csi.storage.k8s.io/fstype": "ext4"}, "csi.storage.k8s.io/fstype", "given twice")


# -- type-dependent keys ------------------------------------------------------------------------
@pytest.mark.parametrize("vtype", ["gp2", "st1", "sc1", "standard"])
@pytest.mark.parametrize("key", ["iops", "iopsPerGB"])
def test_iops_on_a_type_without_provisioned_iops(vtype: str, key: str) -> None:
    bad({"type": vtype, key: "3000"}, key, f"{vtype} volumes do not take provisioned IOPS", "gp3, io1 or io2")


@pytest.mark.parametrize("vtype", ["gp2", "io1", "io2", "st1", "sc1", "standard"])
def test_throughput_only_on_gp3(vtype: str) -> None:
    extra = {"iops": "1000"} if vtype.startswith("io") else {}
    bad({"type": vtype, "throughput": "250", **extra}, "throughput", "only gp3", f"type {vtype}")


def test_iops_and_iops_per_gb_together() -> None:
    bad({"iops": "3000", "iopsPerGB": "10"}, "iopsPerGB", "cannot both be set")


@pytest.mark.parametrize("vtype,text", [("io1", "100-64000"), ("io2", "100-256000")])
def test_io_types_need_iops(vtype: str, text: str) -> None:
    bad({"type": vtype}, "iops", f"{vtype} volumes need provisioned IOPS", text, "iopsPerGB")


def test_throughput_range() -> None:
    assert parse_block_parameters({"throughput": "125"}).throughput == 125
    assert parse_block_parameters({"throughput": "1000"}).throughput == 1000
    bad({"throughput": "124"}, "throughput", "between 125 and 1000", "124")
    bad({"throughput": "1001"}, "throughput", "between 125 and 1000", "1001")


def test_kms_key_implies_encryption() -> None:
    p = parse_block_parameters({"kmsKeyId": "alias/mine"})
    assert p.encrypted and p.kms_key_id == "alias/mine"
    assert parse_block_parameters({"kmsKeyId": "", "encrypted": "false"}) == BlockParameters()
    bad({"kmsKeyId": "alias/mine", "encrypted": "false"}, "kmsKeyId", 'encrypted is "false"', "remove kmsKeyId")


def test_cluster_size_needs_bigalloc() -> None:
    bad({"ext4ClusterSize": "16384"}, "ext4ClusterSize", 'ext4BigAlloc: "true"')
    bad({"ext4ClusterSize": "16384", "ext4BigAlloc": "false"}, "ext4ClusterSize", "bigalloc")


def test_multi_attach_needs_io2() -> None:
    assert parse_block_parameters({"type": "io2", "iops": "1000", "multiAttach": "true"}).multi_attach
    assert not parse_block_parameters({"multiAttach": "false"}).multi_attach
    bad({"multiAttach": "true"}, "multiAttach", "needs type io2", "gp3")


# -- tags ---------------------------------------------------------------------------------------
def test_tags() -> None:
    p = parse_block_parameters(
        {
            "tagSpecification_1": "key1=value1",
            "tagSpecification_2": "key2=hello world",
            "tagSpecification_3": "key3=",
            "tagSpecification_10": "expr=a=b",
        }
    )
    assert p.tags == {"key1": "value1", "key2": "hello world", "key3": "", "expr": "a=b"}


def test_tag_templates() -> None:
    raw = {
        "tagSpecification_1": "pvcnamespace={{ .PVCNamespace }}",
        "tagSpecification_2": "pvcname={{.PVCName}}",
        "tagSpecification_3": "pvname={{   .PVName }}",
        "tagSpecification_4": "both={{ .PVCNamespace }}/{{ .PVCName }}",
        "csi.storage.k8s.io/pvc/name": "ebs-claim",
        "csi.storage.k8s.io/pvc/namespace": "default",
        "csi.storage.k8s.io/pv/name": "pvc-1",
    }
    assert parse_block_parameters(raw).tags == {
        "pvcnamespace": "default",
        "pvcname": "ebs-claim",
        "pvname": "pvc-1",
        "both": "default/ebs-claim",
    }
    # Without --extra-create-metadata the names are empty, as with the EBS driver.
    assert parse_block_parameters({"tagSpecification_1": "n={{ .PVCName }}"}).tags == {"n": ""}


@pytest.mark.parametrize(
    "template",
    ["{{ .PVCName | toUpper }}", "{{ .pvcname }}", "{{ .Other }}", "x{{", "{{ .PVCName }}{{ js }}"],
)
def test_unsupported_templates(template: str) -> None:
    bad({"tagSpecification_1": f"k={template}"}, "tagSpecification_1", "{{ .PVCName }}", "cannot evaluate")


def test_bad_tags() -> None:
    bad({"tagSpecification_1": "novalue"}, "tagSpecification_1", '"key=value"', "'novalue'")
    bad({"tagSpecification_2": "=v"}, "tagSpecification_2", "empty tag key")
    bad({"tagSpecification_1": "k" * 129 + "=v"}, "tagSpecification_1", "129", "128")
    bad({"tagSpecification_1": "k=" + "v" * 257}, "tagSpecification_1", "257", "256")
    for key in ("CSIVolumeName", "ebs.csi.aws.com/cluster", "kubernetes.io/created-for/pvc/name", "AWS:x"):
        bad({"tagSpecification_1": f"{key}=v"}, "tagSpecification_1", "reserved", repr(key))
    bad({"tagSpecification_1": "a=1", "tagSpecification_2": "a=2"}, "tagSpecification_2", "'a'", "tagSpecification_1")
    many = {f"tagSpecification_{i}": f"k{i}=v" for i in range(51)}
    bad(many, "tagSpecification_0", "51 tags", "at most 50")
    assert len(parse_block_parameters(dict(list(many.items())[:50])).tags) == 50


# -- sizes --------------------------------------------------------------------------------------
def test_size_limits() -> None:
    assert size_limits_gib("gp2") == size_limits_gib(VolumeType.GP3) == (1, 16384)
    assert size_limits_gib("io1") == (4, 16384)
    assert size_limits_gib("io2") == (4, 65536)
    assert size_limits_gib("st1") == size_limits_gib("sc1") == (125, 16384)
    assert size_limits_gib("standard") == (1, 1024)


def test_round_capacity_examples() -> None:
    assert round_capacity(0, 0, "gp3", 5 * GiB) == 5 * GiB
    assert round_capacity(0, 0, "gp3", GiB + 1) == 2 * GiB
    assert round_capacity(0, 0, "st1", GiB) == 125 * GiB  # the default is raised to the type minimum
    assert round_capacity(0, 0, "standard", 2000 * GiB) == 1024 * GiB
    assert round_capacity(0, 3 * GiB, "gp3", 5 * GiB) == 3 * GiB  # default kept under the limit
    assert round_capacity(1, 0, "gp3", GiB) == GiB
    assert round_capacity(GiB + 1, 0, "gp3", GiB) == 2 * GiB
    assert round_capacity(GiB, 0, "io1", GiB) == 4 * GiB
    assert round_capacity(GiB, 10 * GiB, "io1", GiB) == 4 * GiB
    assert round_capacity(16384 * GiB, 0, "gp3", GiB) == 16384 * GiB


def test_round_capacity_errors() -> None:
    with pytest.raises(OutOfRange) as info:
        round_capacity(GiB, 2 * GiB, "io1", GiB)
    for fragment in ("required_bytes 1073741824", "limit_bytes 2147483648", "io1 volumes are 4-16384 GiB"):
        assert fragment in info.value.message
    with pytest.raises(OutOfRange, match="whole GiB"):
        round_capacity(GiB + 1, GiB + 100, "gp3", GiB)
    with pytest.raises(OutOfRange, match=r"too large: gp3 volumes are 1-16384 GiB"):
        round_capacity(16384 * GiB + 1, 0, "gp3", GiB)
    with pytest.raises(OutOfRange, match="standard volumes are 1-1024 GiB"):
        round_capacity(1025 * GiB, 0, "standard", GiB)
    with pytest.raises(InvalidArgument, match="negative"):
        round_capacity(-1, 0, "gp3", GiB)
    with pytest.raises(InvalidArgument, match="negative"):
        round_capacity(0, -1, "gp3", GiB)
    with pytest.raises(InvalidArgument, match="inverted") as inverted:
        round_capacity(3 * GiB, 2 * GiB, "gp3", GiB)
    assert not isinstance(inverted.value, OutOfRange)


@settings(max_examples=400)
@given(
    required=st.one_of(st.just(0), st.integers(1, 70000 * GiB), st.integers(1, 200 * GiB)),
    limit=st.one_of(st.just(0), st.integers(1, 70000 * GiB), st.integers(1, 200 * GiB)),
    vtype=st.sampled_from(list(VolumeType)),
    default=st.integers(0, 2000 * GiB),
)
def test_round_capacity_properties(required: int, limit: int, vtype: VolumeType, default: int) -> None:
    lo, hi = size_limits_gib(vtype)
    smallest = max(-(-required // GiB), lo)
    feasible = smallest <= hi and (limit == 0 or smallest * GiB <= limit)
    if limit and required > limit:
        with pytest.raises(InvalidArgument):
            round_capacity(required, limit, vtype, default)
        return
    if not feasible:
        with pytest.raises(OutOfRange):
            round_capacity(required, limit, vtype, default)
        return
    size = round_capacity(required, limit, vtype, default)
    assert size % GiB == 0
    assert size >= required
    assert limit == 0 or size <= limit
    assert lo * GiB <= size <= hi * GiB
    if required:
        assert size == smallest * GiB  # the smallest size that satisfies everything


# -- performance --------------------------------------------------------------------------------
def perf(raw: dict[str, str], size_gib: int) -> Performance:
    return resolve_performance(parse_block_parameters(raw), size_gib)


def perf_error(raw: dict[str, str], size_gib: int, key: str, *fragments: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        perf(raw, size_gib)
    assert info.value.key == key
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message


def test_gp3_defaults_and_explicit_values() -> None:
    assert perf({}, 100) == Performance(3000, 125)
    assert perf({"iops": "6000", "throughput": "500"}, 100) == Performance(6000, 500)
    assert perf({"iops": "4000", "throughput": "1000"}, 100) == Performance(4000, 1000)


def test_gp3_caps() -> None:
    assert perf({"iops": "20000"}, 1000) == Performance(16000, 125)  # capped at the type maximum
    assert perf({"iops": "16000"}, 10) == Performance(5000, 125)  # capped at 500 IOPS per GiB
    assert perf({"iopsPerGB": "600"}, 10) == Performance(5000, 125)
    assert perf({"iopsPerGB": "50"}, 1000) == Performance(16000, 125)  # iopsPerGB x size capped at the max
    assert perf({"iops": "3000"}, 1) == Performance(3000, 125)  # the baseline fits any size


def test_gp3_small_volume_above_baseline() -> None:
    perf_error({"iops": "5000"}, 4, "iops", "4 GiB gp3 volume takes at most 3000 IOPS", "at least 10 GiB")
    perf_error({"iopsPerGB": "1000"}, 4, "iopsPerGB", "at most 3000 IOPS", "lower iopsPerGB")


def test_gp3_below_minimum() -> None:
    perf_error({"iops": "2000"}, 100, "iops", "iops 2000", "minimum of 3000", "allowAutoIOPSPerGBIncrease")
    perf_error(
        SEED_2, 10, "iopsPerGB", "iopsPerGB 50 x 10 GiB gives 500 IOPS", "minimum of 3000",
        "raise iopsPerGB to at least 300", "at least 60 GiB", 'allowAutoIOPSPerGBIncrease: "true"',
    )
    assert perf({**SEED_2, "allowAutoIOPSPerGBIncrease": "true"}, 10) == Performance(3000, 125)
    assert perf({"iops": "2000", "allowAutoIOPSPerGBIncrease": "true"}, 100) == Performance(3000, 125)
    assert perf(SEED_2, 100) == Performance(5000, 125)


def test_gp3_throughput_per_iops() -> None:
    perf_error({"throughput": "1000"}, 100, "throughput", "needs at least 4000 IOPS", "at most 750",
               "set iops to at least 4000")
    perf_error({"iops": "3999", "throughput": "1000"}, 100, "throughput", "0.25 MiB/s per IOPS")
    perf_error({"iopsPerGB": "10", "throughput": "1000"}, 300, "throughput", "raise iopsPerGB")
    assert perf({"throughput": "750"}, 100) == Performance(3000, 750)


def test_a_small_volume_refusal_quotes_the_iops_asked_not_the_capped_value() -> None:
    """Issue 16: 20000 IOPS on 1 GiB gp3 used to say "16000 were asked; ... ask for at least 32 GiB",
    advice that silently gives 16000. The message must quote 20000 and say gp3 cannot reach it."""
    with pytest.raises(InvalidParameter) as info:
        perf({"iops": "20000"}, 1)
    message = info.value.message
    assert "iops 20000 was asked" in message
    assert "16000 were asked" not in message
    assert "gp3 volumes reach at most 16000 IOPS, so no size gives 20000" in message
    # The other types it offers do give 20000 at the size it names.
    offers = re.findall(r"type (io1|io2) \(up to \d+ IOPS, \d+ per GiB; at least (\d+) GiB\)", message)
    assert {t for t, _ in offers} == {"io1", "io2"}
    for vtype, gib in offers:
        assert perf({"type": vtype, "iops": "20000"}, int(gib)).iops == 20000


def _apply_advice(raw: dict[str, str], size: int, message: str) -> tuple[dict[str, str], int] | None:
    """The parameters and size the refusal's first piece of advice leads to (None: none to apply)."""
    raw = dict(raw)
    m = re.search(r"ask for at least (\d+) GiB to get (\d+) IOPS", message)
    if m:
        return raw, int(m.group(1))
    m = re.search(r", or ask for at least (\d+) GiB \(a \d+ GiB volume is capped", message)
    if m:
        return raw, int(m.group(1))
    m = re.search(r"(?:raise|set) (iops|iopsPerGB) to at least (\d+)(?: and ask for at least (\d+) GiB)?", message)
    if m:
        raw[m.group(1)] = m.group(2)
        return raw, int(m.group(3) or size)
    return None


@settings(max_examples=400)
@given(
    size=st.integers(1, 40),
    iops=st.one_of(st.none(), st.integers(3001, 16000)),
    per_gb=st.one_of(st.none(), st.integers(1, 500)),
    throughput=st.one_of(st.none(), st.integers(125, 1000)),
)
def test_following_the_advice_gives_what_was_asked(size: int, iops: int | None, per_gb: int | None,
                                                   throughput: int | None) -> None:
    """Whatever a gp3 refusal advises (a size, an iops, an iopsPerGB) really gives the IOPS and the
    throughput that were asked, with nothing capped along the way."""
    raw = {"type": "gp3", "allowAutoIOPSPerGBIncrease": "true"}
    if iops is not None:
        raw["iops"] = str(iops)
    elif per_gb is not None:
        raw["iopsPerGB"] = str(per_gb)
    if throughput is not None:
        raw["throughput"] = str(throughput)
    messages: list[str] = []
    for _ in range(3):  # each refusal names one problem; following its advice may reveal the next
        try:
            got = perf(raw, size)
            break
        except InvalidParameter as e:
            messages.append(e.message)
        advised = _apply_advice(raw, size, messages[-1])
        assert advised is not None, f"no advice to follow in: {messages[-1]}"
        raw, new_size = advised
        assert new_size >= size, messages[-1]
        size = new_size
    else:
        raise AssertionError("still refused after following the advice:\n" + "\n".join(messages))
    if not messages:
        return
    if throughput is not None:
        assert got.throughput == throughput, messages
    if iops is not None:
        # The asked IOPS, exactly; more only where a throughput refusal asked to raise them.
        assert got.iops == iops or (got.iops is not None and got.iops > iops and "throughput" in messages[-1]), \
            (got, messages)


def test_io1() -> None:
    assert perf({"type": "io1", "iops": "1000"}, 100) == Performance(1000, None)
    assert perf({"type": "io1", "iopsPerGB": "10"}, 100) == Performance(1000, None)
    assert perf({"type": "io1", "iops": "100000"}, 16384) == Performance(64000, None)
    assert perf({"type": "io1", "iopsPerGB": "100"}, 100) == Performance(5000, None)  # 50 per GiB
    assert perf({"type": "io1", "iops": "1000"}, 4) == Performance(200, None)
    perf_error({"type": "io1", "iopsPerGB": "2"}, 4, "iopsPerGB", "gives 8 IOPS", "minimum of 100", "at least 25")
    assert perf({"type": "io1", "iopsPerGB": "2", "allowAutoIOPSPerGBIncrease": "true"}, 4) == Performance(100, None)


def test_io2() -> None:
    assert perf({"type": "io2", "iops": "300000"}, 65536) == Performance(256000, None)
    assert perf({"type": "io2", "iopsPerGB": "1000"}, 100) == Performance(100000, None)
    assert perf({"type": "io2", "iopsPerGB": "2000"}, 100) == Performance(100000, None)  # 1000 per GiB
    perf_error({"type": "io2", "iops": "50"}, 100, "iops", "minimum of 100")


@pytest.mark.parametrize("vtype", ["gp2", "st1", "sc1", "standard"])
def test_types_without_provisioned_performance(vtype: str) -> None:
    assert perf({"type": vtype}, 500) == Performance(None, None)
    direct = BlockParameters(volume_type=VolumeType(vtype), iops=3000)
    with pytest.raises(InvalidParameter, match=f"{vtype} volumes do not take iops"):
        resolve_performance(direct, 500)


def test_resolve_checks_params_built_directly() -> None:
    with pytest.raises(InvalidParameter, match="cannot both be set"):
        resolve_performance(BlockParameters(iops=3000, iops_per_gb=10), 100)
    with pytest.raises(InvalidParameter, match="io1 volumes need provisioned IOPS"):
        resolve_performance(BlockParameters(volume_type=VolumeType.IO1), 100)
    with pytest.raises(InvalidParameter, match="only gp3"):
        resolve_performance(BlockParameters(volume_type=VolumeType.IO1, iops=100, throughput=200), 100)
    with pytest.raises(InvalidArgument, match="at least 1 GiB"):
        resolve_performance(BlockParameters(), 0)


@settings(max_examples=300)
@given(
    vtype=st.sampled_from([VolumeType.GP3, VolumeType.IO1, VolumeType.IO2]),
    size=st.integers(4, 65536),
    per_gb=st.one_of(st.none(), st.integers(1, 3000)),
    iops=st.integers(1, 400000),
    throughput=st.one_of(st.none(), st.integers(125, 1000)),
)
def test_resolved_performance_is_within_ec2_limits(
    vtype: VolumeType, size: int, per_gb: int | None, iops: int, throughput: int | None
) -> None:
    params = BlockParameters(
        volume_type=vtype,
        iops=None if per_gb else iops,
        iops_per_gb=per_gb,
        allow_auto_iops_per_gb_increase=True,
        throughput=throughput if vtype is VolumeType.GP3 else None,
    )
    try:
        got = resolve_performance(params, size)
    except InvalidParameter as e:
        assert e.key in ("iops", "iopsPerGB", "throughput")
        return
    minimum, maximum, per_gib = {
        VolumeType.GP3: (3000, 16000, 500), VolumeType.IO1: (100, 64000, 50), VolumeType.IO2: (100, 256000, 1000)
    }[vtype]
    assert got.iops is not None
    assert minimum <= got.iops <= maximum
    assert got.iops <= max(minimum, per_gib * size)
    if vtype is VolumeType.GP3:
        assert got.throughput is not None and got.throughput * 4 <= got.iops
    else:
        assert got.throughput is None


def test_recompute_for_resize() -> None:
    io1 = parse_block_parameters({"type": "io1", "iopsPerGB": "10"})
    assert recompute_for_resize(io1, 100) == Performance(1000, None)
    assert recompute_for_resize(io1, 200) == Performance(2000, None)
    assert recompute_for_resize(io1, 16384) == Performance(64000, None)  # capped at the type max
    gp3 = parse_block_parameters({**SEED_2, "allowAutoIOPSPerGBIncrease": "false"})
    assert recompute_for_resize(gp3, 60) == Performance(3000, 125)
    assert recompute_for_resize(gp3, 100) == Performance(5000, 125)
    assert recompute_for_resize(gp3, 400) == Performance(16000, 125)
    fixed = parse_block_parameters({"iops": "6000", "throughput": "400"})
    assert recompute_for_resize(fixed, 12) == recompute_for_resize(fixed, 500) == Performance(6000, 400)
    assert recompute_for_resize(parse_block_parameters({"type": "gp2"}), 50) == Performance(None, None)


# -- mkfs ---------------------------------------------------------------------------------------
def mkfs(raw: dict[str, str], fs: str, block: bool = False) -> list[str]:
    return mkfs_args(parse_block_parameters(raw), fs, block)


def mkfs_error(raw: dict[str, str], fs: str, key: str, *fragments: str, block: bool = False) -> None:
    with pytest.raises(InvalidParameter) as info:
        mkfs(raw, fs, block)
    assert info.value.key == key
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message


def test_mkfs_ext4_flags() -> None:
    raw = {
        "blockSize": "4096",
        "inodeSize": "512",
        "bytesPerInode": "16384",
        "numberOfInodes": "100000",
        "ext4BigAlloc": "true",
        "ext4ClusterSize": "65536",
    }
    assert mkfs(raw, "ext4") == [
        "-b", "4096", "-I", "512", "-i", "16384", "-N", "100000", "-O", "bigalloc", "-C", "65536",
    ]
    assert mkfs({"ext4BigAlloc": "true"}, "ext4") == ["-O", "bigalloc"]
    assert mkfs({}, "ext4") == [] and mkfs({}, "xfs") == [] and mkfs({}, "ext4", block=True) == []


@pytest.mark.parametrize("fs", ["ext2", "ext3"])
def test_mkfs_older_ext(fs: str) -> None:
    assert mkfs({"blockSize": "1024", "inodeSize": "128", "bytesPerInode": "4096"}, fs) == [
        "-b", "1024", "-I", "128", "-i", "4096",
    ]
    mkfs_error({"ext4BigAlloc": "true"}, fs, "ext4BigAlloc", f"fs type {fs}", "ext4")
    mkfs_error({"ext4BigAlloc": "true", "ext4ClusterSize": "16384"}, fs, "ext4BigAlloc", fs)


def test_mkfs_xfs_flags() -> None:
    assert mkfs({"blockSize": "4096", "inodeSize": "1024"}, "xfs") == ["-b", "size=4096", "-i", "size=1024"]
    assert mkfs({"blockSize": "1024", "inodeSize": "512"}, "xfs") == ["-b", "size=1024", "-i", "size=512"]


@pytest.mark.parametrize(
    "raw,key",
    [
        ({"bytesPerInode": "16384"}, "bytesPerInode"),
        ({"numberOfInodes": "1000"}, "numberOfInodes"),
        ({"ext4BigAlloc": "true"}, "ext4BigAlloc"),
        ({"ext4BigAlloc": "true", "ext4ClusterSize": "16384"}, "ext4BigAlloc"),
    ],
)
def test_mkfs_options_xfs_does_not_have(raw: dict[str, str], key: str) -> None:
    mkfs_error(raw, "xfs", key, key, "fs type xfs")


@pytest.mark.parametrize("key,value", [("blockSize", "4096"), ("inodeSize", "256"), ("ext4BigAlloc", "true")])
def test_mkfs_options_with_raw_block(key: str, value: str) -> None:
    mkfs_error({key: value}, "ext4", key, key, "raw block volume", block=True)


def test_mkfs_unknown_fs_type() -> None:
    mkfs_error({"blockSize": "4096"}, "btrfs", "blockSize", "'btrfs'")


def test_mkfs_cluster_size_without_bigalloc_built_directly() -> None:
    with pytest.raises(InvalidParameter, match="ext4BigAlloc") as info:
        mkfs_args(BlockParameters(ext4_cluster_size=16384), "ext4", False)
    assert info.value.key == "ext4ClusterSize"


@pytest.mark.parametrize(
    "raw,fs,key,fragment",
    [
        ({"blockSize": "512"}, "ext4", "blockSize", "between 1024 and 65536"),
        ({"blockSize": "131072"}, "ext4", "blockSize", "between 1024 and 65536"),
        ({"blockSize": "3000"}, "ext4", "blockSize", "power of two"),
        ({"blockSize": "512"}, "xfs", "blockSize", "between 1024 and 65536"),
        ({"blockSize": "6000"}, "xfs", "blockSize", "power of two"),
        ({"inodeSize": "64"}, "ext4", "inodeSize", "between 128 and 4096"),
        ({"inodeSize": "8192"}, "ext4", "inodeSize", "between 128 and 4096"),
        ({"blockSize": "1024", "inodeSize": "2048"}, "ext4", "inodeSize", "between 128 and 1024"),
        ({"inodeSize": "300"}, "ext4", "inodeSize", "power of two"),
        ({"inodeSize": "256"}, "xfs", "inodeSize", "between 512 and 2048"),
        ({"inodeSize": "4096"}, "xfs", "inodeSize", "between 512 and 2048"),
        ({"blockSize": "1024", "inodeSize": "1024"}, "xfs", "inodeSize", "between 512 and 512"),
        ({"bytesPerInode": "512"}, "ext4", "bytesPerInode", "between 4096 and 67108864"),
        ({"blockSize": "1024", "bytesPerInode": "512"}, "ext4", "bytesPerInode", "between 1024 and 67108864"),
        ({"bytesPerInode": str(128 << 20)}, "ext4", "bytesPerInode", "67108864"),
        ({"numberOfInodes": str(2**32)}, "ext4", "numberOfInodes", "between 1 and 4294967295"),
        ({"ext4BigAlloc": "true", "ext4ClusterSize": "2048"}, "ext4", "ext4ClusterSize", "between 4096"),
        ({"ext4BigAlloc": "true", "ext4ClusterSize": str(1 << 30)}, "ext4", "ext4ClusterSize", "536870912"),
        ({"ext4BigAlloc": "true", "ext4ClusterSize": "20000"}, "ext4", "ext4ClusterSize", "power of two"),
    ],
)
def test_mkfs_size_validation(raw: dict[str, str], fs: str, key: str, fragment: str) -> None:
    mkfs_error(raw, fs, key, key, fs, fragment)


def test_mkfs_xfs_small_blocks_have_no_room_for_inodes() -> None:
    # blockSize 1024 is the smallest xfs accepts; inodes are then at most 512 bytes.
    mkfs_error({"blockSize": "1024", "inodeSize": "256"}, "xfs", "inodeSize", "between 512 and 512")


# -- records and idempotency --------------------------------------------------------------------
def test_record_is_sorted_canonical_and_only_set_values() -> None:
    rec = to_record(parse_block_parameters({"IOPS": "4000", "Encrypted": "false", "preallocate": "false"}))
    assert rec == {"iops": "4000", "type": "gp3"}
    assert list(rec) == sorted(rec)
    assert to_record(BlockParameters()) == {"type": "gp3"}


def test_record_numbers_tags_in_key_order_and_stores_them_interpolated() -> None:
    p = parse_block_parameters(
        {
            "tagSpecification_7": "zeta=1",
            "tagSpecification_3": "alpha={{ .PVCName }}",
            "csi.storage.k8s.io/pvc/name": "data",
        }
    )
    rec = to_record(p)
    assert rec["tagSpecification_1"] == "alpha=data" and rec["tagSpecification_2"] == "zeta=1"
    assert parse_block_parameters(rec) == p
    assert list(rec) == sorted(rec)


def test_seed_records_round_trip() -> None:
    for seed in (SEED_1, SEED_2):
        p = parse_block_parameters(seed)
        assert parse_block_parameters(to_record(p)) == p
        assert to_record(parse_block_parameters(to_record(p))) == to_record(p)


_valid_maps = st.fixed_dictionaries(
    {},
    optional={
        "type": st.just("gp3"),
        "iops": st.integers(3000, 16000).map(str),
        "allowAutoIOPSPerGBIncrease": st.sampled_from(["true", "false", "TRUE"]),
        "throughput": st.integers(125, 1000).map(str),
        "encrypted": st.sampled_from(["true", "false"]),
        "blockSize": st.sampled_from(["1024", "4096"]),
        "inodeSize": st.sampled_from(["256", "512"]),
        "preallocate": st.sampled_from(["true", "False"]),
        "csi.storage.k8s.io/fstype": st.sampled_from(["ext4", "xfs", ""]),
        "csi.storage.k8s.io/pvc/name": st.text("abc-", min_size=1, max_size=8),
        "csi.storage.k8s.io/pvc/namespace": st.text("xyz", min_size=1, max_size=8),
        "tagSpecification_1": st.sampled_from(["team=db", "owner={{ .PVCName }}", "empty="]),
        "tagSpecification_2": st.sampled_from(["env=prod", "ns={{ .PVCNamespace }}/x"]),
    },
)


@given(_valid_maps)
def test_record_round_trip_property(raw: dict[str, str]) -> None:
    p = parse_block_parameters(raw)
    rec = to_record(p)
    assert list(rec) == sorted(rec)
    assert all((isinstance(v, str) and v != "") or k.startswith("tagSpecification_") for k, v in rec.items())
    assert set(rec) <= set(ACCEPTED_KEYS) | {k for k in rec if k.startswith("tagSpecification_")}
    again = parse_block_parameters(rec)
    assert again == p and same_request(again, p) and to_record(again) == rec


def test_same_request() -> None:
    a = parse_block_parameters({**SEED_2, "csi.storage.k8s.io/pvc/name": "a", "csi.storage.k8s.io/pv/name": "pv-a"})
    b = parse_block_parameters({**SEED_2, "csi.storage.k8s.io/pvc/name": "b", "csi.storage.k8s.io/pvc/namespace": "n"})
    assert same_request(a, b)  # PVC/PV names do not count
    assert same_request(parse_block_parameters({}), parse_block_parameters({"encrypted": "false", "TYPE": "gp3"}))
    assert same_request(parse_block_parameters({"kmsKeyId": "k"}), parse_block_parameters({"kmsKeyId": "k", "encrypted": "true"}))
    assert not same_request(parse_block_parameters({"iops": "3000"}), parse_block_parameters({"iops": "4000"}))
    assert not same_request(parse_block_parameters({}), parse_block_parameters({"type": "gp2"}))
    assert not same_request(parse_block_parameters({}), parse_block_parameters({"preallocate": "true"}))
    assert not same_request(
        parse_block_parameters({"tagSpecification_1": "a=1"}), parse_block_parameters({"tagSpecification_1": "a=2"})
    )
    # Tags built from the PVC name do count, through their value.
    templ = {"tagSpecification_1": "owner={{ .PVCName }}"}
    assert not same_request(
        parse_block_parameters({**templ, "csi.storage.k8s.io/pvc/name": "a"}),
        parse_block_parameters({**templ, "csi.storage.k8s.io/pvc/name": "b"}),
    )


@pytest.mark.parametrize("key", ["iops", "throughput", "blockSize", "numberOfInodes"])
def test_numbers_longer_than_int_reads_are_invalid_parameters(key: str) -> None:
    """int() refuses more than 4300 digits with a ValueError; the parser must answer first."""
    with pytest.raises(InvalidParameter, match=rf"^{key} is too large \(5000 digits\)") as info:
        parse_block_parameters({key: "9" * 5000})
    assert info.value.key == key
    # Leading zeros do not make a number large.
    assert parse_block_parameters({"type": "io2", "iops": "0" * 5000 + "100"}).iops == 100


def test_a_tag_index_longer_than_nine_digits_is_an_unknown_parameter() -> None:
    with pytest.raises(InvalidParameter, match="unknown parameter"):
        parse_block_parameters({"tagSpecification_" + "1" * 5000: "a=b"})
    assert parse_block_parameters({"tagSpecification_123456789": "a=b"}).tags == {"a": "b"}
