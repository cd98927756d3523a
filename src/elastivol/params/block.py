"""Block-volume StorageClass parameters, with the names and meaning of the AWS EBS CSI driver.

One parser turns a CreateVolume ``parameters`` map into a :class:`BlockParameters`; both the local
provider and the AWS provider read that object, so a StorageClass written for EKS means the same
here, and one that EKS would refuse is refused here too, with a message that says what to change.

What is checked where:

* :func:`parse_block_parameters` - everything that depends on the map alone: key names, value
  syntax, which keys go with which volume type, tags.
* :func:`round_capacity` / :func:`size_limits_gib` - sizes per volume type.
* :func:`resolve_performance` - IOPS and throughput, which depend on the volume's size.
* :func:`mkfs_args` - filesystem options, which depend on the fs type and the access type.

Semantics follow the EBS CSI driver's docs (docs/parameters.md, docs/tagging.md) and EC2's limits:
IOPS above a type's maximum (total or per GiB) are capped, IOPS below its minimum are an error
unless ``allowAutoIOPSPerGBIncrease`` is "true", ``kmsKeyId`` implies encryption.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum

from elastivol.domain import VOLUME_FS_TYPES
from elastivol.errors import InvalidArgument, InvalidParameter, OutOfRange
from elastivol.units import GiB


class VolumeType(StrEnum):
    GP2 = "gp2"
    GP3 = "gp3"
    IO1 = "io1"
    IO2 = "io2"
    SC1 = "sc1"
    ST1 = "st1"
    STANDARD = "standard"


DEFAULT_VOLUME_TYPE = VolumeType.GP3

# -- keys ---------------------------------------------------------------------------------------
TYPE = "type"
IOPS = "iops"
IOPS_PER_GB = "iopsPerGB"
ALLOW_AUTO_IOPS = "allowAutoIOPSPerGBIncrease"
THROUGHPUT = "throughput"
ENCRYPTED = "encrypted"
KMS_KEY_ID = "kmsKeyId"
BLOCK_SIZE = "blockSize"
INODE_SIZE = "inodeSize"
BYTES_PER_INODE = "bytesPerInode"
NUMBER_OF_INODES = "numberOfInodes"
EXT4_BIGALLOC = "ext4BigAlloc"
EXT4_CLUSTER_SIZE = "ext4ClusterSize"
PREALLOCATE = "preallocate"
MULTI_ATTACH = "multiAttach"
ENFORCE_PERFORMANCE = "enforcePerformance"  # elastivol's own: throttle a local volume to its type
TAG_PREFIX = "tagSpecification_"
CSI_PREFIX = "csi.storage.k8s.io/"
FS_TYPE_KEY = "csi.storage.k8s.io/fstype"
PVC_NAME_KEY = "csi.storage.k8s.io/pvc/name"
PVC_NAMESPACE_KEY = "csi.storage.k8s.io/pvc/namespace"
PV_NAME_KEY = "csi.storage.k8s.io/pv/name"
# Deprecated spelling that external-provisioner and the EBS driver still accept.
LEGACY_FS_TYPE_KEY = "fsType"

MKFS_KEYS = (BLOCK_SIZE, INODE_SIZE, BYTES_PER_INODE, NUMBER_OF_INODES, EXT4_BIGALLOC, EXT4_CLUSTER_SIZE)
ACCEPTED_KEYS = (
    TYPE, IOPS, IOPS_PER_GB, ALLOW_AUTO_IOPS, THROUGHPUT, ENCRYPTED, KMS_KEY_ID,
    *MKFS_KEYS, PREALLOCATE, MULTI_ATTACH, ENFORCE_PERFORMANCE,
    FS_TYPE_KEY, PVC_NAME_KEY, PVC_NAMESPACE_KEY, PV_NAME_KEY,
)
_CANONICAL = {k.lower(): k for k in (*ACCEPTED_KEYS, LEGACY_FS_TYPE_KEY)}
_TAG_KEY = re.compile(r"tagspecification_([0-9]{1,9})", re.IGNORECASE)  # int() of a longer index could fail
_ACCEPTED_TEXT = ", ".join((*ACCEPTED_KEYS, f"{TAG_PREFIX}<N>", f"other {CSI_PREFIX}* keys"))

FS_TYPES = VOLUME_FS_TYPES

# -- limits (EC2 volume types) ------------------------------------------------------------------
_SIZE_LIMITS_GIB: dict[VolumeType, tuple[int, int]] = {
    VolumeType.GP2: (1, 16384),
    VolumeType.GP3: (1, 16384),
    VolumeType.IO1: (4, 16384),
    VolumeType.IO2: (4, 65536),
    VolumeType.ST1: (125, 16384),
    VolumeType.SC1: (125, 16384),
    VolumeType.STANDARD: (1, 1024),
}


@dataclass(frozen=True)
class _IopsLimits:
    minimum: int
    maximum: int
    per_gib: int


_IOPS_LIMITS: dict[VolumeType, _IopsLimits] = {
    VolumeType.GP3: _IopsLimits(3000, 16000, 500),
    VolumeType.IO1: _IopsLimits(100, 64000, 50),
    VolumeType.IO2: _IopsLimits(100, 256000, 1000),
}
GP3_DEFAULT_IOPS = 3000
GP3_DEFAULT_THROUGHPUT = 125
GP3_THROUGHPUT_RANGE = (125, 1000)
# gp3: at most 0.25 MiB/s of throughput per provisioned IOPS, i.e. IOPS >= 4 x throughput.
GP3_IOPS_PER_MIBS = 4

_INT_MAX = 2**31 - 1  # the EBS driver parses the performance keys as int32
_BIG_MAX = 2**63 - 1  # mkfs sizes: mkfs_args checks the real ranges
_INT32_KEYS = frozenset({IOPS, IOPS_PER_GB, THROUGHPUT})
_DECIMAL = re.compile(r"[0-9]+")

# Tags: EC2's limits and the keys the EBS driver keeps for itself.
MAX_TAGS = 50
MAX_TAG_KEY_LEN = 128
MAX_TAG_VALUE_LEN = 256
RESERVED_TAG_KEYS = ("CSIVolumeName", "CSIVolumeSnapshotName", "ebs.csi.aws.com/cluster")
RESERVED_TAG_PREFIXES = ("kubernetes.io", "aws:")
_TEMPLATE = re.compile(r"\{\{\s*\.(PVCName|PVCNamespace|PVName)\s*\}\}")

# mkfs limits (mke2fs / mkfs.xfs with its default CRC-enabled v5 format).
EXT_BLOCK_SIZES = (1024, 65536)
XFS_BLOCK_SIZES = (1024, 65536)
EXT_INODE_SIZES = (128, 65536)
XFS_INODE_SIZES = (512, 2048)
EXT_BYTES_PER_INODE = (1024, 64 << 20)
EXT_CLUSTER_SIZES = (1024, 512 << 20)
EXT_MAX_INODES = 2**32 - 1
EXT_DEFAULT_BLOCK_SIZE = 4096  # what mke2fs picks for any volume of 1 GiB or more


@dataclass(frozen=True)
class BlockParameters:
    """A validated StorageClass for block volumes. ``None`` means "not given"."""

    volume_type: VolumeType = DEFAULT_VOLUME_TYPE
    iops: int | None = None
    iops_per_gb: int | None = None
    allow_auto_iops_per_gb_increase: bool = False
    throughput: int | None = None
    encrypted: bool = False
    kms_key_id: str | None = None
    fs_type: str | None = None
    block_size: int | None = None
    inode_size: int | None = None
    bytes_per_inode: int | None = None
    number_of_inodes: int | None = None
    ext4_bigalloc: bool = False
    ext4_cluster_size: int | None = None
    tags: dict[str, str] = field(default_factory=dict, hash=False)
    preallocate: bool = False
    multi_attach: bool = False
    pvc_name: str | None = None
    pvc_namespace: str | None = None
    pv_name: str | None = None
    # None: the node plugin's default (--enforce-performance) decides.
    enforce_performance: bool | None = None


@dataclass(frozen=True)
class Performance:
    """Provisioned performance; ``None`` where the volume type has no such setting."""

    iops: int | None
    throughput: int | None


# -- value parsing ------------------------------------------------------------------------------
def _bool(key: str, value: str) -> bool:
    low = value.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    raise InvalidParameter(key, f'{key} must be "true" or "false", not {value!r}')


def _int(key: str, value: str) -> int:
    if not _DECIMAL.fullmatch(value):
        raise InvalidParameter(key, f"{key} must be a positive whole number written in decimal digits, not {value!r}")
    limit = _INT_MAX if key in _INT32_KEYS else _BIG_MAX
    digits = value.lstrip("0") or "0"  # int() refuses more than 4300 digits, leading zeros included
    if len(digits) > len(str(limit)):
        raise InvalidParameter(key, f"{key} is too large ({len(value)} digits); the largest accepted value is {limit}")
    number = int(digits)
    if number <= 0:
        raise InvalidParameter(key, f"{key} must be a positive whole number, not {value!r}")
    if number > limit:
        raise InvalidParameter(key, f"{key} is too large ({value}); the largest accepted value is {limit}")
    return number


def _volume_type(value: str) -> VolumeType:
    if value == "":
        return DEFAULT_VOLUME_TYPE
    try:
        return VolumeType(value)
    except ValueError:
        hint = f' (volume types are lower case: write "{value.lower()}")' if value.lower() in set(VolumeType) else ""
        raise InvalidParameter(
            TYPE, f"type {value!r} is not an EBS volume type{hint}; choose one of {', '.join(VolumeType)}"
        ) from None


def _fs_type(key: str, value: str) -> str | None:
    if value == "":
        return None
    if value not in FS_TYPES:
        hint = f' (fs types are case sensitive: write "{value.lower()}")' if value.lower() in FS_TYPES else ""
        raise InvalidParameter(key, f"{key} {value!r} is not supported{hint}; choose one of {', '.join(FS_TYPES)}")
    return value


def _interpolate(key: str, text: str, props: Mapping[str, str]) -> str:
    out = _TEMPLATE.sub(lambda m: props[m.group(1)], text)
    if "{{" in _TEMPLATE.sub("", text):
        raise InvalidParameter(
            key,
            f"{key} has a template this driver cannot evaluate ({text!r}); only {{{{ .PVCName }}}}, "
            "{{ .PVCNamespace }} and {{ .PVName }} are supported",
        )
    return out


def _tag(key: str, raw: str, props: Mapping[str, str]) -> tuple[str, str]:
    tag_key, sep, template = raw.partition("=")
    if not sep:
        raise InvalidParameter(key, f'{key} must look like "key=value" (the value may be empty); got {raw!r}')
    if not tag_key:
        raise InvalidParameter(key, f'{key} has an empty tag key in {raw!r}; write "key=value"')
    if len(tag_key) > MAX_TAG_KEY_LEN:
        raise InvalidParameter(key, f"{key}: tag key is {len(tag_key)} characters; the limit is {MAX_TAG_KEY_LEN}")
    if tag_key in RESERVED_TAG_KEYS or tag_key.startswith(RESERVED_TAG_PREFIXES[0]) or (
        tag_key.lower().startswith(RESERVED_TAG_PREFIXES[1])
    ):
        raise InvalidParameter(
            key,
            f"{key}: tag key {tag_key!r} is reserved (reserved: {', '.join(RESERVED_TAG_KEYS)} and keys "
            f"starting with {' or '.join(RESERVED_TAG_PREFIXES)}); choose another key",
        )
    value = _interpolate(key, template, props)
    if len(value) > MAX_TAG_VALUE_LEN:
        raise InvalidParameter(
            key, f"{key}: tag value is {len(value)} characters; the limit is {MAX_TAG_VALUE_LEN}"
        )
    return tag_key, value


# -- the parser ---------------------------------------------------------------------------------
def parse_block_parameters(raw: Mapping[str, str]) -> BlockParameters:
    """Validate a StorageClass ``parameters`` map (keys case-insensitive) into :class:`BlockParameters`."""
    values: dict[str, str] = {}
    given_as: dict[str, str] = {}
    tag_specs: list[tuple[int, str, str]] = []
    for key, value in raw.items():
        if not isinstance(value, str):
            raise InvalidParameter(key, f"parameter {key!r} must be a string, not {type(value).__name__}")
        low = key.lower()
        canonical = _CANONICAL.get(low)
        if canonical == LEGACY_FS_TYPE_KEY:
            canonical = FS_TYPE_KEY if value else None
            if canonical is None:
                continue
        if canonical is None:
            m = _TAG_KEY.fullmatch(key)
            if m:
                tag_specs.append((int(m.group(1)), key, value))
                continue
            if low.startswith(CSI_PREFIX):
                continue  # other provisioner-added keys (secrets are stripped before us anyway)
            raise InvalidParameter(key, f"unknown parameter {key!r}; the accepted keys are: {_ACCEPTED_TEXT}")
        if canonical in values:
            if canonical == FS_TYPE_KEY and values[canonical] == value:
                continue  # fsType and csi.storage.k8s.io/fstype saying the same thing
            raise InvalidParameter(
                key, f"parameter {canonical} is given twice (as {given_as[canonical]!r} and {key!r}); keep one"
            )
        values[canonical] = value
        given_as[canonical] = key

    def opt_int(k: str) -> int | None:
        return _int(k, values[k]) if k in values else None

    def opt_bool(k: str) -> bool | None:
        return _bool(k, values[k]) if k in values else None

    volume_type = _volume_type(values.get(TYPE, ""))
    iops = opt_int(IOPS)
    iops_per_gb = opt_int(IOPS_PER_GB)
    throughput = opt_int(THROUGHPUT)
    encrypted_flag = opt_bool(ENCRYPTED)
    kms_key_id = values.get(KMS_KEY_ID) or None
    block_size = opt_int(BLOCK_SIZE)
    inode_size = opt_int(INODE_SIZE)
    bytes_per_inode = opt_int(BYTES_PER_INODE)
    number_of_inodes = opt_int(NUMBER_OF_INODES)
    ext4_bigalloc = bool(opt_bool(EXT4_BIGALLOC))
    ext4_cluster_size = opt_int(EXT4_CLUSTER_SIZE)
    multi_attach = bool(opt_bool(MULTI_ATTACH))

    limits = _IOPS_LIMITS.get(volume_type)
    if limits is None:
        for k in (IOPS, IOPS_PER_GB):
            if k in values:
                raise InvalidParameter(
                    k,
                    f"{volume_type} volumes do not take provisioned IOPS; remove {k}, or use type gp3, io1 or io2",
                )
    if throughput is not None and volume_type is not VolumeType.GP3:
        raise InvalidParameter(
            THROUGHPUT, f"only gp3 volumes take a throughput setting; remove throughput, or use type gp3 "
            f"(this StorageClass has type {volume_type})"
        )
    if iops is not None and iops_per_gb is not None:
        raise InvalidParameter(
            IOPS_PER_GB, "iops and iopsPerGB cannot both be set; keep iops for a fixed IOPS value, or "
            "iopsPerGB for IOPS proportional to the volume size"
        )
    if limits is not None and volume_type is not VolumeType.GP3 and iops is None and iops_per_gb is None:
        raise InvalidParameter(
            IOPS, f"{volume_type} volumes need provisioned IOPS: set iops ({limits.minimum}-{limits.maximum}) "
            f"or iopsPerGB (up to {limits.per_gib} per GiB)"
        )
    if throughput is not None:
        low_tp, high_tp = GP3_THROUGHPUT_RANGE
        if not low_tp <= throughput <= high_tp:
            raise InvalidParameter(
                THROUGHPUT, f"gp3 throughput must be between {low_tp} and {high_tp} MiB/s; {throughput} was given"
            )
    if kms_key_id is not None and encrypted_flag is False:
        raise InvalidParameter(
            KMS_KEY_ID, 'kmsKeyId is set but encrypted is "false"; a KMS key always encrypts the volume: '
            'set encrypted to "true" or remove kmsKeyId'
        )
    if ext4_cluster_size is not None and not ext4_bigalloc:
        raise InvalidParameter(
            EXT4_CLUSTER_SIZE, 'ext4ClusterSize only applies with bigalloc; set ext4BigAlloc: "true" or remove '
            "ext4ClusterSize"
        )
    if multi_attach and volume_type is not VolumeType.IO2:
        raise InvalidParameter(
            MULTI_ATTACH, f'multiAttach: "true" needs type io2 (as EBS multi-attach does); this StorageClass '
            f"has type {volume_type}"
        )
    fs_type = _fs_type(given_as.get(FS_TYPE_KEY, FS_TYPE_KEY), values.get(FS_TYPE_KEY, ""))

    props = {
        "PVCName": values.get(PVC_NAME_KEY, ""),
        "PVCNamespace": values.get(PVC_NAMESPACE_KEY, ""),
        "PVName": values.get(PV_NAME_KEY, ""),
    }
    tags: dict[str, str] = {}
    tag_from: dict[str, str] = {}
    for _n, key, value in sorted(tag_specs):
        tag_key, tag_value = _tag(key, value, props)
        if tag_key in tags:
            raise InvalidParameter(
                key, f"tag key {tag_key!r} is set by both {tag_from[tag_key]} and {key}; keep one of them"
            )
        tags[tag_key] = tag_value
        tag_from[tag_key] = key
    if len(tags) > MAX_TAGS:
        raise InvalidParameter(tag_specs[0][1], f"{len(tags)} tags were given; a volume takes at most {MAX_TAGS}")

    return BlockParameters(
        volume_type=volume_type,
        iops=iops,
        iops_per_gb=iops_per_gb,
        allow_auto_iops_per_gb_increase=bool(opt_bool(ALLOW_AUTO_IOPS)),
        throughput=throughput,
        encrypted=bool(encrypted_flag) or kms_key_id is not None,
        kms_key_id=kms_key_id,
        fs_type=fs_type,
        block_size=block_size,
        inode_size=inode_size,
        bytes_per_inode=bytes_per_inode,
        number_of_inodes=number_of_inodes,
        ext4_bigalloc=ext4_bigalloc,
        ext4_cluster_size=ext4_cluster_size,
        tags=tags,
        preallocate=bool(opt_bool(PREALLOCATE)),
        multi_attach=multi_attach,
        pvc_name=values.get(PVC_NAME_KEY),
        pvc_namespace=values.get(PVC_NAMESPACE_KEY),
        pv_name=values.get(PV_NAME_KEY),
        enforce_performance=opt_bool(ENFORCE_PERFORMANCE),
    )


# -- sizes --------------------------------------------------------------------------------------
def size_limits_gib(volume_type: VolumeType | str) -> tuple[int, int]:
    """(smallest, largest) size in GiB that EC2 allows for ``volume_type``."""
    return _SIZE_LIMITS_GIB[VolumeType(volume_type)]


def round_capacity(required_bytes: int, limit_bytes: int, volume_type: VolumeType | str, default_bytes: int) -> int:
    """The size to create, in bytes: whole GiB, within the CSI capacity range and the type's size range.

    ``required_bytes`` 0 means "no minimum" (the default size is used, kept under the limit);
    ``limit_bytes`` 0 means "no maximum". A request below the type's minimum is raised to it when
    the limit allows, as EBS volumes cannot be smaller.
    """
    vtype = VolumeType(volume_type)
    min_gib, max_gib = _SIZE_LIMITS_GIB[vtype]
    if required_bytes < 0 or limit_bytes < 0:
        raise InvalidArgument(
            f"capacity_range must not be negative (required_bytes={required_bytes}, limit_bytes={limit_bytes})"
        )
    if limit_bytes and required_bytes > limit_bytes:
        raise InvalidArgument(
            f"capacity_range is inverted: required_bytes {required_bytes} is more than limit_bytes {limit_bytes}"
        )
    range_text = f"{vtype} volumes are {min_gib}-{max_gib} GiB"
    if required_bytes == 0:
        gib = -(-max(default_bytes, 0) // GiB)
        if limit_bytes:
            gib = min(gib, limit_bytes // GiB)
        gib = min(max(gib, min_gib), max_gib)
    else:
        gib = max(-(-required_bytes // GiB), min_gib)
        if gib > max_gib:
            raise OutOfRange(
                f"required_bytes {required_bytes} ({-(-required_bytes // GiB)} GiB) is too large: {range_text}; "
                f"ask for at most {max_gib} GiB or use another volume type"
            )
    if limit_bytes and gib * GiB > limit_bytes:
        raise OutOfRange(
            f"no size fits: required_bytes {required_bytes}, limit_bytes {limit_bytes}, and volumes are whole GiB "
            f"({range_text}); {gib} GiB would be needed, so raise the limit to at least {gib * GiB} bytes"
        )
    return gib * GiB


# -- performance --------------------------------------------------------------------------------
def resolve_performance(params: BlockParameters, size_gib: int) -> Performance:
    """The IOPS and throughput a ``size_gib`` volume gets, with EBS's caps, floors and checks."""
    vtype = params.volume_type
    limits = _IOPS_LIMITS.get(vtype)
    if limits is None:
        for key, val in ((IOPS, params.iops), (IOPS_PER_GB, params.iops_per_gb), (THROUGHPUT, params.throughput)):
            if val is not None:
                raise InvalidParameter(key, f"{vtype} volumes do not take {key}; remove it, or use type gp3")
        return Performance(None, None)
    if size_gib <= 0:
        raise InvalidArgument(f"volume size must be at least 1 GiB, not {size_gib}")
    if params.throughput is not None and vtype is not VolumeType.GP3:
        raise InvalidParameter(THROUGHPUT, f"only gp3 volumes take a throughput setting; remove it from this {vtype} class")

    key = IOPS
    if params.iops is not None and params.iops_per_gb is not None:
        raise InvalidParameter(IOPS_PER_GB, "iops and iopsPerGB cannot both be set; keep one of them")
    if params.iops is not None:
        requested = params.iops
    elif params.iops_per_gb is not None:
        key = IOPS_PER_GB
        requested = params.iops_per_gb * size_gib
    elif vtype is VolumeType.GP3:
        requested = GP3_DEFAULT_IOPS
    else:
        raise InvalidParameter(IOPS, f"{vtype} volumes need provisioned IOPS: set iops or iopsPerGB")

    iops = requested
    if iops < limits.minimum:
        if not params.allow_auto_iops_per_gb_increase:
            if params.iops_per_gb is not None:
                need_gib = -(-limits.minimum // params.iops_per_gb)
                fix = (
                    f"raise iopsPerGB to at least {-(-limits.minimum // size_gib)}, ask for at least {need_gib} GiB, "
                    'or set allowAutoIOPSPerGBIncrease: "true" to get the minimum'
                )
                got = f"iopsPerGB {params.iops_per_gb} x {size_gib} GiB gives {requested} IOPS"
            else:
                fix = f'raise iops to at least {limits.minimum}, or set allowAutoIOPSPerGBIncrease: "true"'
                got = f"iops {requested}"
            raise InvalidParameter(key, f"{got}, below the {vtype} minimum of {limits.minimum} IOPS; {fix}")
        iops = limits.minimum
    iops = min(iops, limits.maximum)
    by_size = limits.per_gib * size_gib
    if iops > by_size:
        if by_size >= limits.minimum:
            iops = by_size  # EBS caps at the per-GiB ratio
        elif iops > limits.minimum:
            # Small gp3 volumes: the 3000 baseline is always allowed, anything above needs size.
            raise InvalidParameter(key, _small_volume_refusal(params, vtype, limits, size_gib, requested))

    throughput: int | None = None
    if vtype is VolumeType.GP3:
        throughput = params.throughput if params.throughput is not None else GP3_DEFAULT_THROUGHPUT
        if throughput * GP3_IOPS_PER_MIBS > iops:
            raise InvalidParameter(THROUGHPUT, _throughput_refusal(params, limits, size_gib, throughput, iops))
    return Performance(iops, throughput)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _asked(params: BlockParameters, size_gib: int, requested: int) -> str:
    if params.iops_per_gb is not None:
        return f"iopsPerGB {params.iops_per_gb} x {size_gib} GiB asks for {requested} IOPS"
    if params.iops is not None:
        return f"iops {requested} was asked"
    return f"the {requested} IOPS default applies"


def _other_types(vtype: VolumeType, *, iops: int = 0, per_gib: int = 0) -> str:
    """", or use io2 (...)" naming the provisioned-IOPS types that do reach ``iops`` / ``per_gib``."""
    offers = []
    for other, lim in _IOPS_LIMITS.items():
        if other is vtype or lim.maximum < iops or lim.per_gib < per_gib:
            continue
        min_gib = _SIZE_LIMITS_GIB[other][0]
        need_gib = max(min_gib, _ceil_div(iops, lim.per_gib)) if iops else min_gib
        offers.append(f"type {other} (up to {lim.maximum} IOPS, {lim.per_gib} per GiB; at least {need_gib} GiB)")
    return f", or use {' or '.join(offers)}" if offers else ""


def _small_volume_refusal(params: BlockParameters, vtype: VolumeType, limits: _IopsLimits, size_gib: int,
                          requested: int) -> str:
    """A volume too small for more than the baseline: what was asked, and advice that really gives it."""
    head = (f"a {size_gib} GiB {vtype} volume takes at most {limits.minimum} IOPS ({limits.per_gib} per GiB, "
            f"{limits.minimum} always allowed), but {_asked(params, size_gib, requested)}")
    smallest_for_max = _ceil_div(limits.maximum, limits.per_gib)
    if params.iops_per_gb is not None:
        # Only reached when iopsPerGB is above the type's per-GiB ratio: no size gives it.
        return (f"{head}; {vtype} allows at most {limits.per_gib} IOPS per GiB, so no size gives iopsPerGB "
                f"{params.iops_per_gb}: lower iopsPerGB to at most {limits.per_gib} and ask for at least "
                f"{_ceil_div(limits.minimum, limits.per_gib)} GiB, or set allowAutoIOPSPerGBIncrease: \"true\" to "
                f"get {limits.minimum} IOPS at {size_gib} GiB"
                f"{_other_types(vtype, per_gib=params.iops_per_gb)}")
    if requested > limits.maximum:
        return (f"{head}; {vtype} volumes reach at most {limits.maximum} IOPS, so no size gives {requested}: "
                f"lower iops to at most {limits.maximum} and ask for at least {smallest_for_max} GiB"
                f"{_other_types(vtype, iops=requested)}")
    return (f"{head}; ask for at least {_ceil_div(requested, limits.per_gib)} GiB to get {requested} IOPS, "
            f"or lower iops to at most {limits.minimum}")


def _throughput_refusal(params: BlockParameters, limits: _IopsLimits, size_gib: int, throughput: int,
                        iops: int) -> str:
    """gp3 throughput above 0.25 MiB/s per IOPS: what was asked, and the IOPS (and size) that allow it."""
    needed = throughput * GP3_IOPS_PER_MIBS
    head = (f"gp3 throughput {throughput} MiB/s needs at least {needed} IOPS (0.25 MiB/s per IOPS) but the "
            f"volume gets {iops}; lower throughput to at most {iops // GP3_IOPS_PER_MIBS}, or ")
    # The smallest size at which ``needed`` IOPS are allowed at all (the baseline needs no size).
    need_gib = max(size_gib, _ceil_div(needed, limits.per_gib)) if needed > limits.minimum else size_gib
    bigger = f" and ask for at least {need_gib} GiB" if need_gib > size_gib else ""
    capped = f" (a {size_gib} GiB volume is capped at {iops} IOPS)"
    if params.iops_per_gb is not None:
        per = _ceil_div(needed, need_gib)
        if params.iops_per_gb >= per:  # enough per GiB already: only the size caps it
            return f"{head}ask for at least {need_gib} GiB{capped}"
        return f"{head}raise iopsPerGB to at least {per}{bigger}"
    if params.iops is not None and params.iops >= needed:  # enough IOPS asked: only the size caps them
        target = min(params.iops, limits.maximum)
        return f"{head}ask for at least {_ceil_div(target, limits.per_gib)} GiB to get {target} IOPS{capped}"
    verb = "raise" if params.iops is not None else "set"
    return f"{head}{verb} iops to at least {needed}{bigger}"


def recompute_for_resize(params: BlockParameters, new_size_gib: int) -> Performance:
    """Performance after growing to ``new_size_gib``: iopsPerGB-based IOPS follow the size, capped.

    The volume already had at least its type's minimum IOPS, so growing never needs
    ``allowAutoIOPSPerGBIncrease`` to stay valid.
    """
    return resolve_performance(replace(params, allow_auto_iops_per_gb_increase=True), new_size_gib)


# -- what a volume of each type delivers --------------------------------------------------------
# The EBS model a local volume is throttled to. Baseline figures throughout: a local volume keeps
# no burst-credit bucket, so it gets what an EBS volume of its type sustains once credits are spent.
SSD_IO_MIB = 0.25  # EBS counts SSD I/O in units of up to 256 KiB: throughput <= IOPS x 256 KiB
GP2_IOPS_PER_GIB = 3
GP2_IOPS_RANGE = (100, 16000)
GP2_FULL_THROUGHPUT_GIB = 334  # from this size gp2 delivers 250 MiB/s without credits; below, 128
GP2_THROUGHPUT = (128, 250)
PIOPS_MAX_THROUGHPUT = {VolumeType.IO1: 1000, VolumeType.IO2: 4000}
# Baseline MiB/s per TiB, MiB/s cap, and the documented IOPS maximum (of 1 MiB I/O). EBS charges a small
# random I/O on HDD as a whole MiB; the kernel's throttle cannot, so small I/O gets the IOPS maximum.
HDD_PERFORMANCE = {VolumeType.ST1: (40, 500, 500), VolumeType.SC1: (12, 250, 250)}
STANDARD_PERFORMANCE = (100, 40)  # magnetic: about 100 IOPS, 40-90 MiB/s; the low end


@dataclass(frozen=True)
class TypePerformance:
    """The rate a volume of its type and size delivers: IOPS and MiB/s, each read or write."""

    iops: int
    throughput_mibs: float
    basis: str  # how the figures were derived, for logs and the benchmark table


def type_performance(params: BlockParameters, size_gib: int) -> TypePerformance:
    """The EBS figures for ``params``' type at ``size_gib`` (provisioned types via :func:`resolve_performance`)."""
    vtype = params.volume_type
    if vtype is VolumeType.GP2:
        low, high = GP2_IOPS_RANGE
        iops = min(max(GP2_IOPS_PER_GIB * size_gib, low), high)
        cap = GP2_THROUGHPUT[1] if size_gib >= GP2_FULL_THROUGHPUT_GIB else GP2_THROUGHPUT[0]
        return TypePerformance(iops, min(iops * SSD_IO_MIB, cap), f"gp2 {size_gib} GiB: 3 IOPS/GiB in {low}-{high}")
    if vtype in HDD_PERFORMANCE:
        per_tib, cap, iops = HDD_PERFORMANCE[vtype]
        mibs = min(per_tib * size_gib / 1024, cap)
        return TypePerformance(iops, mibs, f"{vtype} {size_gib} GiB: baseline {per_tib} MiB/s per TiB, {iops} IOPS max")
    if vtype is VolumeType.STANDARD:
        iops, mibs = STANDARD_PERFORMANCE
        return TypePerformance(iops, float(mibs), "standard (magnetic): about 100 IOPS")
    perf = resolve_performance(replace(params, allow_auto_iops_per_gb_increase=True), size_gib)
    iops = perf.iops or GP3_DEFAULT_IOPS
    if vtype is VolumeType.GP3:
        throughput = perf.throughput or GP3_DEFAULT_THROUGHPUT
        return TypePerformance(iops, float(throughput), f"gp3: {iops} IOPS, {throughput} MiB/s provisioned")
    mibs = min(iops * SSD_IO_MIB, PIOPS_MAX_THROUGHPUT[vtype])
    return TypePerformance(iops, mibs, f"{vtype}: {iops} IOPS provisioned, 256 KiB per I/O")


# -- mkfs ---------------------------------------------------------------------------------------
def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _check_size(key: str, value: int, low: int, high: int, fs_type: str, power: bool = True) -> None:
    if not low <= value <= high or (power and not _power_of_two(value)):
        kind = "a power of two " if power else ""
        raise InvalidParameter(key, f"{key} for {fs_type} must be {kind}between {low} and {high}; {value} was given")


def _mkfs_values(params: BlockParameters) -> dict[str, int | bool]:
    found: dict[str, int | bool | None] = {
        BLOCK_SIZE: params.block_size,
        INODE_SIZE: params.inode_size,
        BYTES_PER_INODE: params.bytes_per_inode,
        NUMBER_OF_INODES: params.number_of_inodes,
        EXT4_BIGALLOC: params.ext4_bigalloc or None,
        EXT4_CLUSTER_SIZE: params.ext4_cluster_size,
    }
    return {k: v for k, v in found.items() if v is not None}


def mkfs_args(params: BlockParameters, fs_type: str, block_mode: bool) -> list[str]:
    """Extra mkfs flags for the StorageClass's formatting options (empty when none are set)."""
    given = _mkfs_values(params)
    if not given:
        return []
    if block_mode:
        key = next(iter(given))
        raise InvalidParameter(
            key, f"{key} is a formatting option and cannot be used with a raw block volume (volumeMode: Block); "
            "remove it or use a filesystem volume"
        )
    if fs_type not in FS_TYPES:
        key = next(iter(given))
        raise InvalidParameter(key, f"{key} cannot be used with fs type {fs_type!r}; it applies to {', '.join(FS_TYPES)}")
    unsupported = (
        (BYTES_PER_INODE, NUMBER_OF_INODES, EXT4_BIGALLOC, EXT4_CLUSTER_SIZE) if fs_type == "xfs"
        else (EXT4_BIGALLOC, EXT4_CLUSTER_SIZE) if fs_type != "ext4" else ()
    )
    for key in unsupported:
        if key in given:
            raise InvalidParameter(
                key, f"{key} cannot be used with fs type {fs_type}; remove it or choose a fs type that has it "
                f"({'ext4' if key.startswith('ext4') else 'ext2, ext3 or ext4'})"
            )
    if params.ext4_cluster_size is not None and not params.ext4_bigalloc:
        raise InvalidParameter(
            EXT4_CLUSTER_SIZE, 'ext4ClusterSize only applies with bigalloc; set ext4BigAlloc: "true" or remove it'
        )

    args: list[str] = []
    if fs_type == "xfs":
        if params.block_size is not None:
            _check_size(BLOCK_SIZE, params.block_size, *XFS_BLOCK_SIZES, fs_type)
            args += ["-b", f"size={params.block_size}"]
        if params.inode_size is not None:
            high = XFS_INODE_SIZES[1] if params.block_size is None else min(XFS_INODE_SIZES[1], params.block_size // 2)
            if params.block_size is not None and high < XFS_INODE_SIZES[0]:
                raise InvalidParameter(
                    INODE_SIZE, f"xfs with blockSize {params.block_size} has no room for {XFS_INODE_SIZES[0]}-byte "
                    "inodes (an inode is at most half a block); raise blockSize or remove inodeSize"
                )
            _check_size(INODE_SIZE, params.inode_size, XFS_INODE_SIZES[0], high, fs_type)
            args += ["-i", f"size={params.inode_size}"]
        return args

    block = params.block_size if params.block_size is not None else EXT_DEFAULT_BLOCK_SIZE
    if params.block_size is not None:
        _check_size(BLOCK_SIZE, params.block_size, *EXT_BLOCK_SIZES, fs_type)
        args += ["-b", str(params.block_size)]
    if params.inode_size is not None:
        _check_size(INODE_SIZE, params.inode_size, EXT_INODE_SIZES[0], min(EXT_INODE_SIZES[1], block), fs_type)
        args += ["-I", str(params.inode_size)]
    if params.bytes_per_inode is not None:
        _check_size(
            BYTES_PER_INODE, params.bytes_per_inode, max(EXT_BYTES_PER_INODE[0], block), EXT_BYTES_PER_INODE[1],
            fs_type, power=False,
        )
        args += ["-i", str(params.bytes_per_inode)]
    if params.number_of_inodes is not None:
        _check_size(NUMBER_OF_INODES, params.number_of_inodes, 1, EXT_MAX_INODES, fs_type, power=False)
        args += ["-N", str(params.number_of_inodes)]
    if params.ext4_bigalloc:
        args += ["-O", "bigalloc"]
    if params.ext4_cluster_size is not None:
        _check_size(
            EXT4_CLUSTER_SIZE, params.ext4_cluster_size, max(EXT_CLUSTER_SIZES[0], block), EXT_CLUSTER_SIZES[1],
            fs_type,
        )
        args += ["-C", str(params.ext4_cluster_size)]
    return args


# -- records ------------------------------------------------------------------------------------
def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def to_record(params: BlockParameters) -> dict[str, str]:
    """The parameters as a canonical, sorted string map (set values only) that parses back the same.

    Tags are stored already interpolated, numbered in tag-key order.
    """
    out: dict[str, str] = {TYPE: str(params.volume_type)}
    optional: dict[str, int | str | None] = {
        IOPS: params.iops,
        IOPS_PER_GB: params.iops_per_gb,
        THROUGHPUT: params.throughput,
        KMS_KEY_ID: params.kms_key_id,
        FS_TYPE_KEY: params.fs_type,
        BLOCK_SIZE: params.block_size,
        INODE_SIZE: params.inode_size,
        BYTES_PER_INODE: params.bytes_per_inode,
        NUMBER_OF_INODES: params.number_of_inodes,
        EXT4_CLUSTER_SIZE: params.ext4_cluster_size,
        PVC_NAME_KEY: params.pvc_name,
        PVC_NAMESPACE_KEY: params.pvc_namespace,
        PV_NAME_KEY: params.pv_name,
    }
    out.update({k: str(v) for k, v in optional.items() if v is not None})
    flags = {
        ALLOW_AUTO_IOPS: params.allow_auto_iops_per_gb_increase,
        ENCRYPTED: params.encrypted,
        EXT4_BIGALLOC: params.ext4_bigalloc,
        PREALLOCATE: params.preallocate,
        MULTI_ATTACH: params.multi_attach,
    }
    out.update({k: _bool_text(v) for k, v in flags.items() if v})
    if params.enforce_performance is not None:
        out[ENFORCE_PERFORMANCE] = _bool_text(params.enforce_performance)
    for i, (tag_key, tag_value) in enumerate(sorted(params.tags.items()), start=1):
        out[f"{TAG_PREFIX}{i}"] = f"{tag_key}={tag_value}"
    return dict(sorted(out.items()))


_IDENTITY_IGNORED = frozenset({"pvc_name", "pvc_namespace", "pv_name"})


def same_request(a: BlockParameters, b: BlockParameters) -> bool:
    """Whether two CreateVolume requests with the same name ask for the same volume.

    The PVC/PV names are left out: one CSI volume name always comes from one PVC.
    """
    return all(getattr(a, f.name) == getattr(b, f.name) for f in fields(BlockParameters) if f.name not in _IDENTITY_IGNORED)
