"""Span batches from the core, decoded: the pure-Python twin of ``cython/spanbatch.pyx``.

The core's workers collect finished request spans into a bounded batch (the layout is
documented in ``rust/proxy/src/spans.rs``; ``meshfast._core.encode_span_batch`` writes one)
and ``Core.take_spans`` hands it over in one crossing; the exporter decodes it with
:func:`decode`.
This module is the reference and test oracle; :mod:`meshfast.tracing.batch` picks the
compiled decoder unless ``MESHFAST_PURE_PYTHON=1``.
"""

from __future__ import annotations

import struct

import msgspec

__all__ = ["ERROR", "FIELDS", "SAMPLED", "UPSTREAM", "Span", "SpanBatchError", "decode"]

MAGIC = b"MFSB"
VERSION = 2
_HEADER = struct.Struct("<4sBBHI")
_FIXED = struct.Struct("<QQQQQQQQQHBB")
_LEN = struct.Struct("<H")
# The string fields of a record, in order.
FIELDS = (
    "name",
    "method",
    "authority",
    "path",
    "cluster",
    "upstream",
    "request_id",
    "response_flags",
    "route",
    "peer",
)
# Span.flags bits.
SAMPLED = 1
ERROR = 2
UPSTREAM = 4


class Span(msgspec.Struct, frozen=True, gc=False):
    """One finished span.  ``kind``: 0 server (inbound), 1 client (outbound); ``flags``: bit
    0 sampled, bit 1 error, bit 2 an upstream answered (``upstream_ns``: its time to the
    response head; ``duration_ns - upstream_ns`` is the proxy's own); ``parent_id`` 0: a
    root span."""

    trace_id: int
    span_id: int
    parent_id: int
    start_unix_ns: int
    duration_ns: int
    upstream_ns: int
    bytes_in: int
    bytes_out: int
    status: int
    kind: int
    flags: int
    name: str
    method: str
    authority: str
    path: str
    cluster: str
    upstream: str
    request_id: str
    response_flags: str
    route: str
    peer: str


class SpanBatchError(ValueError):
    """The bytes are not a span batch this version reads."""


def decode(buf: bytes) -> tuple[list[Span], int]:
    """The spans of a batch, and how many spans the core dropped before it (batch full)."""
    if len(buf) < _HEADER.size:
        raise SpanBatchError(f"truncated span batch: {len(buf)} bytes, no header")
    magic, version, _, count, dropped = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise SpanBatchError(f"not a span batch (magic {magic!r})")
    if version != VERSION:
        raise SpanBatchError(f"span batch version {version}, this reader knows {VERSION}")
    spans: list[Span] = []
    pos = _HEADER.size
    end = len(buf)
    for i in range(count):
        if pos + _FIXED.size > end:
            raise SpanBatchError(f"truncated span batch: span {i} of {count} at byte {pos}")
        hi, lo, sid, parent, start, dur, up, b_in, b_out, status, kind, flags = _FIXED.unpack_from(
            buf, pos
        )
        pos += _FIXED.size
        texts: list[str] = []
        for _ in FIELDS:
            if pos + 2 > end:
                raise SpanBatchError(f"truncated span batch: span {i} of {count} at byte {pos}")
            (n,) = _LEN.unpack_from(buf, pos)
            pos += 2
            if pos + n > end:
                raise SpanBatchError(f"truncated span batch: span {i} of {count} at byte {pos}")
            try:
                texts.append(buf[pos : pos + n].decode("utf-8"))
            except UnicodeDecodeError:
                raise SpanBatchError(f"invalid UTF-8 in span {i} at byte {pos}") from None
            pos += n
        fixed = (sid, parent, start, dur, up, b_in, b_out, status, kind, flags)
        spans.append(Span((hi << 64) | lo, *fixed, *texts))
    if pos != end:
        raise SpanBatchError(f"{end - pos} bytes after the last of {count} spans")
    return spans, dropped
