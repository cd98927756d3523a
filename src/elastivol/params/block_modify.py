"""ControllerModifyVolume's ``mutable_parameters`` (a VolumeAttributesClass), checked against a volume as it is.

The EBS CSI driver takes ``type``, ``iops``, ``iopsPerGB``, ``throughput`` and ``tagSpecification_N``
here. A modification is a change to the volume's recorded StorageClass parameters, so the result is
validated with the CreateVolume rules (:func:`parse_block_parameters`, :func:`resolve_performance`)
at the volume's *current* size. One difference from CreateVolume: an explicit ``iops`` above what the
type and size allow is refused rather than capped, as EC2's ModifyVolume refuses it; the user asked
for a number and would otherwise silently get less.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from elastivol.errors import InvalidParameter
from elastivol.params.block import (
    _IOPS_LIMITS,
    _SIZE_LIMITS_GIB,
    _TAG_KEY,
    GP3_THROUGHPUT_RANGE,
    IOPS,
    IOPS_PER_GB,
    THROUGHPUT,
    TYPE,
    BlockParameters,
    Performance,
    VolumeType,
    _int,
    _tag,
    _volume_type,
    parse_block_parameters,
    resolve_performance,
    to_record,
)

MUTABLE_KEYS = (TYPE, IOPS, IOPS_PER_GB, THROUGHPUT)
_CANONICAL = {k.lower(): k for k in MUTABLE_KEYS}
_ACCEPTED = ", ".join((*MUTABLE_KEYS, "tagSpecification_<N>"))
# What the record keeps of a volume's identity for tag templates ({{ .PVCName }} and co.).
_TEMPLATE_KEYS = ("csi.storage.k8s.io/pvc/name", "csi.storage.k8s.io/pvc/namespace", "csi.storage.k8s.io/pv/name")


@dataclass(frozen=True)
class Modification:
    """What a VolumeAttributesClass asks to change; ``None`` / empty: leave as it is."""

    volume_type: VolumeType | None = None
    iops: int | None = None
    iops_per_gb: int | None = None
    throughput: int | None = None
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ModifyPlan:
    """The volume's parameters after the modification and what they resolve to at its size."""

    params: BlockParameters
    performance: Performance
    record: dict[str, str]  # to_record(params): what the local provider stores
    changed: bool  # False: the volume already is what was asked (a retry): nothing to do
    new_tags: dict[str, str]


def parse_mutable(raw: Mapping[str, str], current: Mapping[str, str] | None = None) -> Modification:
    """Check the keys and the syntax of each value; an unknown key is refused by name.

    Which keys go together (throughput only on gp3, IOPS only on gp3/io1/io2) depends on the
    volume's type after the change, so :func:`plan` checks that against the volume. An empty map
    (a VolumeAttributesClass without parameters) asks for nothing and changes nothing.
    """
    known: dict[str, str] = {}
    tag_specs: list[tuple[int, str, str]] = []
    for key, value in raw.items():
        canonical = _CANONICAL.get(key.lower())
        m = _TAG_KEY.fullmatch(key)
        if canonical is not None:
            known[canonical] = value
        elif m is not None:
            tag_specs.append((int(m.group(1)), key, value))
        else:
            raise InvalidParameter(
                key, f"mutable parameter {key!r} cannot be changed on a volume; a VolumeAttributesClass of this driver "
                f"takes only {_ACCEPTED}"
            )
    if IOPS in known and IOPS_PER_GB in known:
        raise InvalidParameter(
            IOPS_PER_GB, "iops and iopsPerGB cannot both be set; keep iops for a fixed IOPS value, or iopsPerGB for "
            "IOPS proportional to the volume size"
        )
    throughput = _int(THROUGHPUT, known[THROUGHPUT]) if THROUGHPUT in known else None
    if throughput is not None and not GP3_THROUGHPUT_RANGE[0] <= throughput <= GP3_THROUGHPUT_RANGE[1]:
        raise InvalidParameter(THROUGHPUT, f"gp3 throughput must be between {GP3_THROUGHPUT_RANGE[0]} and "
                               f"{GP3_THROUGHPUT_RANGE[1]} MiB/s; {throughput} was given")
    current = current or {}
    props = {"PVCName": current.get(_TEMPLATE_KEYS[0], ""), "PVCNamespace": current.get(_TEMPLATE_KEYS[1], ""),
             "PVName": current.get(_TEMPLATE_KEYS[2], "")}
    tags = dict(_tag(key, value, props) for _n, key, value in sorted(tag_specs))
    return Modification(
        volume_type=_volume_type(known[TYPE]) if known.get(TYPE) else None,
        iops=_int(IOPS, known[IOPS]) if IOPS in known else None,
        iops_per_gb=_int(IOPS_PER_GB, known[IOPS_PER_GB]) if IOPS_PER_GB in known else None,
        throughput=throughput,
        tags=tuple(sorted(tags.items())),
    )


def plan(current: Mapping[str, str], size_gib: int, mod: Modification) -> ModifyPlan:
    """The volume's parameters with ``mod`` applied, validated at ``size_gib``, or InvalidParameter saying why."""
    now = parse_block_parameters(dict(current))
    vtype = mod.volume_type or now.volume_type
    takes_iops = vtype in _IOPS_LIMITS
    iops, per_gb = now.iops, now.iops_per_gb
    if mod.iops is not None:
        iops, per_gb = mod.iops, None
    elif mod.iops_per_gb is not None:
        iops, per_gb = None, mod.iops_per_gb
    if not takes_iops:
        if mod.iops is not None or mod.iops_per_gb is not None:
            key = IOPS if mod.iops is not None else IOPS_PER_GB
            raise InvalidParameter(key, f"{vtype} volumes do not take provisioned IOPS; remove {key}, or use type "
                                   "gp3, io1 or io2")
        iops = per_gb = None
    throughput = mod.throughput if mod.throughput is not None else now.throughput
    if vtype is not VolumeType.GP3:
        if mod.throughput is not None:
            raise InvalidParameter(THROUGHPUT, f"only gp3 volumes take a throughput setting; remove throughput, or "
                                   f"use type gp3 (this class asks for type {vtype})")
        throughput = None
    if vtype in (VolumeType.IO1, VolumeType.IO2) and iops is None and per_gb is None:
        lim = _IOPS_LIMITS[vtype]
        raise InvalidParameter(
            IOPS, f"moving to {vtype} needs provisioned IOPS and this volume has none to carry over: add iops "
            f"({lim.minimum}-{min(lim.maximum, lim.per_gib * size_gib)} at {size_gib} GiB) or iopsPerGB (up to "
            f"{lim.per_gib}) to the VolumeAttributesClass"
        )
    min_gib, max_gib = _SIZE_LIMITS_GIB[vtype]
    if not min_gib <= size_gib <= max_gib:
        raise InvalidParameter(
            TYPE, f"{vtype} volumes are {min_gib}-{max_gib} GiB and this volume is {size_gib} GiB: "
            + (f"expand the claim to at least {min_gib} GiB first, then change its class" if size_gib < min_gib
               else f"choose a type that allows {size_gib} GiB")
        )
    new_tags = dict(mod.tags)
    params = replace(now, volume_type=vtype, iops=iops, iops_per_gb=per_gb, throughput=throughput,
                     tags={**now.tags, **new_tags})
    # Round trip through the CreateVolume parser: the same rules for the same combination.
    params = parse_block_parameters(to_record(params))
    perf = resolve_performance(params, size_gib)
    if mod.iops is not None and perf.iops is not None and perf.iops < mod.iops:
        lim = _IOPS_LIMITS[vtype]
        need = -(-mod.iops // lim.per_gib)
        grow = (f"expand the claim to at least {need} GiB first" if mod.iops <= lim.maximum
                else f"no size gives more than {lim.maximum} IOPS on {vtype}")
        raise InvalidParameter(
            IOPS, f"{vtype} allows at most {lim.per_gib} IOPS per GiB and {lim.maximum} in all: a {size_gib} GiB volume "
            f"takes at most {perf.iops} IOPS, but iops {mod.iops} was asked; lower iops to at most {perf.iops}, or {grow}"
        )
    record = to_record(params)
    changed = record != to_record(now)
    return ModifyPlan(params=params, performance=perf, record=record, changed=changed, new_tags=new_tags)


def creation_parameters(parameters: Mapping[str, str], mutable: Mapping[str, str]) -> dict[str, str]:
    """CreateVolume's StorageClass ``parameters`` with its ``mutable_parameters`` (the claim's
    VolumeAttributesClass) laid over them: the class wins for the keys it names, as a later
    ControllerModifyVolume would. Unknown mutable keys are refused as ControllerModifyVolume refuses them."""
    if not mutable:
        return dict(parameters)
    parse_mutable(mutable, parameters)
    named = {_CANONICAL[k.lower()] for k in mutable if k.lower() in _CANONICAL}
    if IOPS in named or IOPS_PER_GB in named:
        named |= {IOPS, IOPS_PER_GB}  # one replaces the other
    out = {k: v for k, v in parameters.items() if _CANONICAL.get(k.lower()) not in named}
    base_tags = [k for k in out if _TAG_KEY.fullmatch(k)]
    top = max((int(m.group(1)) for k in base_tags if (m := _TAG_KEY.fullmatch(k))), default=0)
    class_tag_keys = {v.partition("=")[0] for k, v in mutable.items() if _TAG_KEY.fullmatch(k)}
    for k in base_tags:
        if out[k].partition("=")[0] in class_tag_keys:
            del out[k]  # the class's value for this tag key wins
    for key, value in mutable.items():
        m = _TAG_KEY.fullmatch(key)
        if m is not None:
            out[f"tagSpecification_{top + int(m.group(1))}"] = value
        else:
            out[_CANONICAL[key.lower()]] = value
    return out
