"""Protobuf/Go-style durations: ``1h``, ``1m``, ``1s``, ``500ms``, ``1.5s``, ``1m30s``."""

from __future__ import annotations

import re

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
