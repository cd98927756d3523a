"""How many EBS volumes a node may take, from a small table of instance families.

EC2's rules (instance volume limits, EC2 user guide): Nitro instances share 28 attachment slots
between EBS volumes, network interfaces and NVMe instance store; some recent families have a
dedicated EBS limit that grows with the size; Xen instances take up to 39 EBS volumes in practice.
The root volume always takes one slot; on shared-slot instances the primary network interface
takes another. An override flag wins over all of this.
"""

from __future__ import annotations

SHARED_NITRO_SLOTS = 28
XEN_LIMIT = 39

XEN_FAMILIES = frozenset({
    "c1", "c3", "c4", "d2", "g2", "g3", "i2", "i3", "m1", "m2", "m3", "m4", "p2", "p3", "r3", "r4", "t1", "t2", "x1", "x1e",
})
DEDICATED_FAMILIES = frozenset({
    "m7a", "m7i", "m7i-flex", "m8g", "c7a", "c7i", "c7i-flex", "c8g", "r7a", "r7i", "r7iz", "r8g", "x8g", "u7i",
    "g6", "g6e", "gr6", "i7ie", "i8g", "f2", "p5", "p5e", "p5en", "trn2", "trn2u", "hpc7a",
})
DEDICATED_BY_SIZE = {"16xlarge": 48, "24xlarge": 64, "32xlarge": 88, "48xlarge": 128,
                     "metal-16xl": 39, "metal-24xl": 39, "metal-32xl": 79, "metal-48xl": 79}
DEDICATED_DEFAULT = 32


def max_volumes(instance_type: str, *, override: int = 0, reserved: int = -1) -> int:
    """EBS volumes this node can attach besides what it already has (the root volume, the ENI)."""
    if override > 0:
        return override
    family, _, size = instance_type.partition(".")
    if family in DEDICATED_FAMILIES:
        slots, default_reserved = DEDICATED_BY_SIZE.get(size, DEDICATED_DEFAULT), 1  # the root volume
    elif family in XEN_FAMILIES and size != "metal":
        slots, default_reserved = XEN_LIMIT, 1
    else:
        # Unknown types are treated as shared-slot Nitro, the common and the safe case.
        slots, default_reserved = SHARED_NITRO_SLOTS, 2  # the root volume and the primary ENI
    return max(slots - (default_reserved if reserved < 0 else reserved), 1)
