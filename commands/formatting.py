"""How figures are written for people, the same in every command: values in units, sizes, timings."""

from __future__ import annotations

import math
import time
from typing import Literal

# The units a figure can carry (the triage checklist's `unit:` field uses the same names).
Unit = Literal["percent", "ratio", "seconds", "per_second", "count", "bytes"]


def format_value(value: float | None, unit: Unit) -> str:
    """Write a figure in its unit for people: 9.8 %, 2.25 s, 0.42/s, 8.8 MB."""
    if value is None:
        return "—"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if unit == "percent":
        percent = round(value * 100, 6)  # 0.1 from a ratio of sums is often 9.999999999
        if percent == int(percent) or abs(percent) >= 10:
            return f"{percent:.0f} %"
        return f"{percent:.1f} %" if abs(percent) >= 0.1 else f"{percent:.2g} %"
    if unit == "seconds":
        if abs(value) < 1:
            return f"{short_number(value * 1000)} ms"
        return f"{short_number(value)} s"
    if unit == "per_second":
        return f"{short_number(value)}/s"
    if unit == "bytes":
        return format_bytes(value)
    return short_number(value)


def short_number(value: float) -> str:
    """Write a number with as many digits as a person needs: 3, 42.5, 0.42, 0.0031."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.2g}"


def format_bytes(value: float, compact: bool = False) -> str:
    """Write a size in binary units: 512 B, 8.8 MB, 340 MB, 1.2 GB (`compact`: 1.2GB, as `du -h`)."""
    space = "" if compact else " "
    size = float(value)
    if abs(size) < 1024:
        return f"{size:.0f}{space}B"
    units = ["KB", "MB", "GB", "TB"]
    size /= 1024
    while abs(size) >= 1024 and len(units) > 1:
        size /= 1024
        units.pop(0)
    unit = units[0]
    digits = 1 if abs(size) < 100 else 0
    return f"{size:.{digits}f}{space}{unit}"


def elapsed_ms(started: float) -> float:
    """Return the milliseconds since `started` (a `time.perf_counter()` reading), to 0.1 ms."""
    return round((time.perf_counter() - started) * 1000, 1)


def format_span(seconds: float) -> str:
    """Write a length of time for people: 45 s, 1 min 40 s, 2 h 5 min, 3 d 4 h."""
    total = max(0, round(seconds))
    for unit, size, smaller, small_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "min", 60),
        ("min", 60, "s", 1),
    ):
        if total >= size:
            whole, rest = divmod(total, size)
            part = rest // small_size
            return f"{whole} {unit}" + (f" {part} {smaller}" if part else "")
    return f"{total} s"
