"""Micro-benchmark: decoding a span batch from the core, compiled vs pure Python.

    python bench/micro_spanbatch.py         # about 5 seconds

A batch of 256 spans with typical field sizes, written by the core's encoder
(``_core.encode_span_batch``), decoded into ``meshfast.tracing.spans.Span`` objects by the
pure-Python twin (``struct``) and by cython/spanbatch.pyx.  Each figure is the best of 5
repeats of a ``timeit`` loop of at least 20 ms.
"""

from __future__ import annotations

import argparse
import platform

from micro_dispatch import best_ns
from micro_headers import cpu

import meshfast._spanbatch as compiled
from meshfast import _core
from meshfast.tracing import spans as twin

SPANS = 256


def row(i: int) -> tuple[object, ...]:
    return (
        (0x80F198EE56343BA8 << 64) | i,
        0xE457B5A2E4D86BD1 + i,
        0x05E3AC9A4F6E3B90,
        1_764_320_000_000_000_000 + i * 1000,
        850_000 + i,
        312,
        1_874,
        200,
        1,
        1,
        "reviews.default.svc.cluster.local:9080/*",
        "GET",
        "reviews:9080",
        f"/reviews/{i}",
        "outbound|9080|v2|reviews.default.svc.cluster.local",
        "10.0.3.17:9080",
        "5b2f6b0e-9a4e-4c2e-8d7b-3f1f2d8a9c10",
        "",
    )


def batch() -> bytes:
    return _core.encode_span_batch([row(i) for i in range(SPANS)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    buf = batch()
    assert twin.decode(buf) == compiled.decode(buf)
    print(f"Python {platform.python_version()} on {platform.machine()}, {cpu()}")
    print(f"batch of {SPANS} spans, {len(buf)} bytes")
    t = {
        name: best_ns(lambda d=d: d(buf)) / SPANS
        for name, d in (("twin", twin.decode), ("compiled", compiled.decode))
    }
    print(f"{'decode, per span':24} {'twin ns':>9} {'compiled ns':>12} {'speedup':>8}")
    print(f"{'':24} {t['twin']:9.0f} {t['compiled']:12.0f} {t['twin'] / t['compiled']:7.1f}x")


if __name__ == "__main__":
    main()
