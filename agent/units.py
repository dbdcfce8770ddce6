"""Parsing of human units in config and flags: durations ("200ms", "2s", "10m", "1h"), sizes ("500MB",
"2GiB") and shares ("50%"). Pure functions; each raises ValueError with what was expected."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2, "mi": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4, "ti": 1024**4,
}  # fmt: skip

DURATION_EXPECTED = "a duration such as 200ms, 2s, 10m or 1h"
SIZE_EXPECTED = "a size such as 4096, 500MB or 2GiB"


def parse_duration(value: str | int | float) -> float:
    """Seconds in `value`; bare numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError(DURATION_EXPECTED)
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(DURATION_EXPECTED)
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(DURATION_EXPECTED)
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(value: str | int) -> int:
    """Bytes in `value`: decimal units (MB = 10^6) and binary units (MiB = 2^20)."""
    if isinstance(value, bool):
        raise ValueError(SIZE_EXPECTED)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(SIZE_EXPECTED)
        return value
    match = _SIZE.match(value)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(SIZE_EXPECTED)
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    if seconds < 3600:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"
