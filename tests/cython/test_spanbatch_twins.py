"""Span batches: what Rust writes (``_core.encode_span_batch``, the core's encoder), both
decoders read back field for field; the compiled decoder (cython/spanbatch.pyx) and its
pure-Python twin agree on every input, broken ones included (same error, same message)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshfast._spanbatch as compiled
from meshfast import _core
from meshfast.tracing import spans as twin
from meshfast.tracing.spans import Span, SpanBatchError

U64 = st.integers(0, 2**64 - 1)
TEXT = st.text(max_size=12)
SPAN = st.builds(
    Span,
    trace_id=st.integers(0, 2**128 - 1),
    span_id=U64,
    parent_id=U64,
    start_unix_ns=U64,
    duration_ns=U64,
    upstream_ns=U64,
    bytes_in=U64,
    bytes_out=U64,
    status=st.integers(0, 65535),
    kind=st.integers(0, 1),
    flags=st.integers(0, 7),
    name=TEXT,
    method=st.sampled_from(["GET", "POST", ""]),
    authority=TEXT,
    path=TEXT,
    cluster=TEXT,
    upstream=TEXT,
    request_id=TEXT,
    response_flags=st.sampled_from(["", "UF", "UH,URX"]),
    route=TEXT,
    peer=st.sampled_from(["", "127.0.0.1:5000", "[::1]:80"]),
)


def fields(span: Span) -> tuple[Any, ...]:
    return tuple(getattr(span, f) for f in Span.__struct_fields__)


def outcome(decode: Any, buf: bytes) -> object:
    try:
        return decode(buf)
    except SpanBatchError as exc:
        return ("error", str(exc))


@settings(max_examples=200, deadline=None)
@given(spans=st.lists(SPAN, max_size=20), max_spans=st.integers(0, 25))
def test_what_rust_writes_both_decoders_read(spans: list[Span], max_spans: int) -> None:
    buf = _core.encode_span_batch([fields(s) for s in spans], max_spans)
    kept = spans[:max_spans]
    expected = (kept, len(spans) - len(kept))
    assert twin.decode(buf) == expected
    assert compiled.decode(buf) == expected


@settings(max_examples=300, deadline=None)
@given(spans=st.lists(SPAN, max_size=4), cut=st.integers(0, 400), junk=st.binary(max_size=6))
def test_broken_batches_fail_the_same_way(spans: list[Span], cut: int, junk: bytes) -> None:
    buf = _core.encode_span_batch([fields(s) for s in spans])
    for broken in (buf[:cut], buf + junk, junk + buf[len(junk) :], buf[:cut] + junk):
        assert outcome(compiled.decode, broken) == outcome(twin.decode, broken)


def test_errors_name_what_is_wrong() -> None:
    good = _core.encode_span_batch([fields(Span(1, 2, 0, 3, 4, 9, 5, 6, 200, 0, 1, *"abcdefghij"))])
    cases = {
        b"": "no header",
        b"XXXX" + good[4:]: "not a span batch",
        good[:4] + b"\x01" + good[5:]: "version 1",
        good[:-1]: "truncated span batch: span 0 of 1",
        good + b"!": "1 bytes after the last of 1 spans",
        good[:-1] + b"\xff": "invalid UTF-8 in span 0",
    }
    for buf, message in cases.items():
        for decode in (twin.decode, compiled.decode):
            with pytest.raises(SpanBatchError, match=message):
                decode(buf)


def test_a_full_batch_counts_what_it_dropped() -> None:
    span = fields(Span(1, 2, 0, 3, 4, 9, 5, 6, 200, 0, 1, *"abcdefghij"))
    buf = _core.encode_span_batch([span] * 5, max_spans=3)
    for decode in (twin.decode, compiled.decode):
        kept, dropped = decode(buf)
        assert (len(kept), dropped) == (3, 2)


def test_the_compiled_decoder_is_compiled() -> None:
    assert type(compiled.decode).__name__ == "builtin_function_or_method"
    assert compiled.decode is not twin.decode
