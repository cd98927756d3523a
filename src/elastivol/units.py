"""Sizes as people write them: 4Gi, 10G, 512M, 1073741824."""

from __future__ import annotations

import re

from elastivol.errors import InvalidArgument

GiB = 1 << 30
MiB = 1 << 20

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


# kubectl's durations are Go's time.ParseDuration: one or more "<number><unit>" terms, e.g.
# 120s, 2m, 1h, 1m30s, 500ms. A bare number is taken as seconds, as the lab's flags always were.
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_PLAIN_SECONDS = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: kubectl's duration syntax (1m30s, 500ms, 2h) or a plain number of seconds."""
    value = text.strip()
    if _PLAIN_SECONDS.fullmatch(value):
        return float(value)
    at, total = 0, 0.0
    while at < len(value):
        m = _DURATION_TERM.match(value, at)
        if not m:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        at = m.end()
    if not value or at < len(value):
        raise InvalidArgument(f"{text!r} is not a duration; write e.g. 120s, 2m, 1h, 1m30s, 500ms, "
                              "or a plain number of seconds")
    return total
