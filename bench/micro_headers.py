"""Micro-benchmark: the header view of a Python filter, compiled (cython/headers.pyx) vs twin.

    python bench/micro_headers.py           # about 5 seconds

One "request" is what a header filter typically does, and what ``dispatch.py`` does around
it: wrap the 15 request headers the core hands over (``Headers._trusted(list(pairs))``),
read three (two present, one absent; one in mixed case), set one, add one, remove an absent
one, and take ``items()`` back for the core.  Each operation is also timed alone.

Each figure is the best of 5 repeats of a ``timeit`` loop calibrated to at least 20 ms
(the loop's own cost, about 10 ns, is included and is the same for both).
"""

from __future__ import annotations

import argparse
import platform
import timeit
from typing import Any

import meshfast._headers as compiled
from meshfast.filters import headers as twin

PAIRS = [
    ("host", "reviews.default.svc.cluster.local:9080"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
    ("accept", "application/json, text/plain, */*"),
    ("accept-encoding", "gzip, deflate, br"),
    ("accept-language", "en-GB,en;q=0.9"),
    ("content-type", "application/json"),
    ("content-length", "187"),
    ("x-request-id", "5b2f6b0e-9a4e-4c2e-8d7b-3f1f2d8a9c10"),
    ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
    ("x-b3-spanid", "e457b5a2e4d86bd1"),
    ("x-b3-sampled", "1"),
    ("x-forwarded-proto", "http"),
    ("authorization", "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.x"),
    ("cookie", "session=3f1f2d8a9c10; theme=dark"),
    ("x-envoy-attempt-count", "1"),
]

REQUEST = """\
h = H._trusted(list(P))
h.get("X-Request-Id")
h.get("authorization")
h.get("x-tenant")
h.set("x-tenant", "blue")
h.add("x-forwarded-for", "10.0.0.1")
h.remove("x-debug")
h.items()
"""

# (label, statement); `h` is a view of PAIRS made once per repeat, `g` an equal one.
# The mutating ones leave `h` as it was: set replaces a present header, remove finds none.
OPS = [
    ("_trusted(list(15 pairs))", "H._trusted(list(P))"),
    ('get("x-request-id")  (8th)', 'h.get("x-request-id")'),
    ('get("X-Request-Id")  (mixed case)', 'h.get("X-Request-Id")'),
    ('get("x-tenant")  (absent)', 'h.get("x-tenant")'),
    ('h["host"]', 'h["host"]'),
    ('"authorization" in h', '"authorization" in h'),
    ('set("x-b3-sampled", "0")', 'h.set("x-b3-sampled", "0")'),
    ('h["x-b3-sampled"] = "0"', 'h["x-b3-sampled"] = "0"'),
    ('remove("x-debug")  (absent)', 'h.remove("x-debug")'),
    ("items()", "h.items()"),
    ("h == g", "h == g"),
    ('_trusted(list(15 pairs)).add("x-a", "b")', 'H._trusted(list(P)).add("x-a", "b")'),
]


def best_ns(stmt: str, ns: dict[str, Any], repeats: int = 5) -> float:
    timer = timeit.Timer(stmt, "h = H._trusted(list(P)); g = H._trusted(list(P))", globals=ns)
    number = 1
    while timer.timeit(number) < 0.02:
        number *= 2
    return min(timer.repeat(repeats, number)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    impls = {"twin": twin.Headers, "compiled": compiled.Headers}
    print(f"Python {platform.python_version()} on {platform.machine()}, {cpu()}")
    print(f"{'per request / per operation':48} {'twin ns':>9} {'compiled ns':>12} {'speedup':>8}")
    rows = [("request: wrap 15, 3 get, set, add, remove, items", REQUEST), *OPS]
    for label, stmt in rows:
        t = {name: best_ns(stmt, {"H": cls, "P": PAIRS}) for name, cls in impls.items()}
        speedup = t["twin"] / t["compiled"]
        print(f"{label:48} {t['twin']:9.0f} {t['compiled']:12.0f} {speedup:7.1f}x")


def cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
