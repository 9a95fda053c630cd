"""Protobuf/Go-style durations: ``1h``, ``1m``, ``1s``, ``500ms``, ``1.5s``, ``1m30s``."""

from __future__ import annotations

import re
from collections.abc import Iterator

_UNITS_MS = {
    "h": 3_600_000.0,
    "m": 60_000.0,
    "s": 1000.0,
    "ms": 1.0,
    "us": 1e-3,
    "µs": 1e-3,
    "ns": 1e-6,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")


def parse_ms(text: str) -> float:
    """Milliseconds in ``text``; raises ValueError with a readable reason."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(f'invalid duration "{text}" (use e.g. 1h, 1m, 1s, 500ms, 1.5s)')
        total += float(m.group(1)) * _UNITS_MS[m.group(2)]
        pos = m.end()
    return total


def problems(text: str, path: str, *, whole_ms: bool = False) -> Iterator[tuple[str, str]]:
    """Validation problems of a duration field: unparsable, under 1ms, or (``whole_ms``,
    istiod's ``ValidateDuration``) not a whole number of milliseconds."""
    try:
        ms = parse_ms(text)
    except ValueError as e:
        yield path, str(e)
        return
    if ms < 1:
        yield path, f'duration "{text}" must be >= 1ms'
    elif whole_ms and abs(ms - round(ms)) > 1e-6:
        yield path, f'duration "{text}": only whole milliseconds are supported'
