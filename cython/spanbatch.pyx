# cython: language_level=3, binding=False, boundscheck=False, wraparound=False
"""Span batches from the core, decoded: ``decode``, compiled.

Same behaviour as the pure-Python twin ``meshfast.tracing.spans.decode`` (the test oracle,
tests/cython/test_spanbatch_twins.py), which documents the layout (rust/proxy/src/spans.rs
writes it).  What is faster here: the fixed fields are read from the buffer by C loads, the
strings decoded by ``PyUnicode_DecodeUTF8`` straight from it, with no ``struct`` calls,
slices or intermediate tuples.

Built into ``meshfast._core`` by rust/py/build.rs and registered as ``meshfast._spanbatch``.
The ``Span`` class and the error are looked up in ``meshfast.tracing.spans`` on first use:
the core initialises this module before the package is imported.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "Python.h":
    object PyUnicode_DecodeUTF8(const char*, Py_ssize_t, const char*)

__all__ = ["decode"]

cdef object _Span = None
cdef object _Error = None
cdef tuple _FIELDS = ()

cdef enum:
    HEADER = 12  # magic, version, reserved, count, dropped
    FIXED = 76  # the fixed-size part of a record
    STRINGS = 10  # the length-prefixed strings after it


cdef inline uint64_t _u64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>p[0] | (<uint64_t>p[1] << 8) | (<uint64_t>p[2] << 16)
            | (<uint64_t>p[3] << 24) | (<uint64_t>p[4] << 32) | (<uint64_t>p[5] << 40)
            | (<uint64_t>p[6] << 48) | (<uint64_t>p[7] << 56))


cdef inline uint32_t _u32(const uint8_t* p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint16_t _u16(const uint8_t* p) noexcept nogil:
    return <uint16_t>(p[0] | (p[1] << 8))


cdef _load():
    global _Span, _Error, _FIELDS
    from meshfast.tracing.spans import FIELDS, Span, SpanBatchError

    _Span, _Error, _FIELDS = Span, SpanBatchError, FIELDS


def decode(const uint8_t[::1] buf):
    if _Span is None:
        _load()
    cdef Py_ssize_t end = buf.shape[0]
    cdef const uint8_t* p = &buf[0] if end > 0 else NULL
    if end < HEADER:
        raise _Error(f"truncated span batch: {end} bytes, no header")
    if not (p[0] == b'M' and p[1] == b'F' and p[2] == b'S' and p[3] == b'B'):
        raise _Error(f"not a span batch (magic {bytes(buf[:4])!r})")
    if p[4] != 2:
        raise _Error(f"span batch version {p[4]}, this reader knows 2")
    cdef Py_ssize_t count = _u16(p + 6)
    cdef uint32_t dropped = _u32(p + 8)
    cdef Py_ssize_t pos = HEADER, i, k, n
    cdef list spans = []
    cdef list texts
    cdef object trace
    cdef const uint8_t* q
    for i in range(count):
        if pos + FIXED > end:
            raise _Error(f"truncated span batch: span {i} of {count} at byte {pos}")
        trace = (<object>_u64(p + pos) << 64) | <object>_u64(p + pos + 8)
        q = p + pos
        fixed = (
            trace,
            _u64(q + 16),
            _u64(q + 24),
            _u64(q + 32),
            _u64(q + 40),
            _u64(q + 48),
            _u64(q + 56),
            _u64(q + 64),
            _u16(q + 72),
            q[74],
            q[75],
        )
        pos += FIXED
        texts = []
        for k in range(STRINGS):
            if pos + 2 > end:
                raise _Error(f"truncated span batch: span {i} of {count} at byte {pos}")
            n = _u16(p + pos)
            pos += 2
            if pos + n > end:
                raise _Error(f"truncated span batch: span {i} of {count} at byte {pos}")
            try:
                texts.append(PyUnicode_DecodeUTF8(<const char*>(p + pos), n, NULL))
            except UnicodeDecodeError:
                raise _Error(f"invalid UTF-8 in span {i} at byte {pos}") from None
            pos += n
        spans.append(_Span(*fixed, *texts))
    if pos != end:
        raise _Error(f"{end - pos} bytes after the last of {count} spans")
    return spans, dropped
