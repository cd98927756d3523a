"""Sizes as people write them: 4Gi, 10G, 512M, 1073741824."""

from __future__ import annotations

import re

from elastivol.errors import InvalidArgument

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
    "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]{0,2})\s*")


def parse_size(text: str, *, binary_suffixes: bool = True) -> int:
    """Parse a size. With ``binary_suffixes`` (the CLI's habit), "G" means GiB like `truncate`."""
    m = _SIZE.fullmatch(text)
    if not m:
        raise InvalidArgument(f"{text!r} is not a size; write e.g. 20G, 4Gi or 512M")
    number, unit = m.group(1), m.group(2).lower()
    if binary_suffixes and unit in ("k", "m", "g", "t"):
        unit += "i"
    if unit not in _UNITS:
        raise InvalidArgument(f"unknown size unit {m.group(2)!r} in {text!r}; use K, M, G, T, Ki, Mi, Gi or Ti")
    return int(float(number) * _UNITS[unit])


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
