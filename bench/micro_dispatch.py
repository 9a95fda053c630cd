"""Micro-benchmark: the Python side of a filtered request, compiled vs pure Python.

    python bench/micro_dispatch.py          # about 5 seconds

What the core's worker calls per request, with the GIL held: ``Dispatcher.on_request`` for
a no-op filter; and ``on_request`` + ``on_response`` for a filter that sets one request and
one response header (the bench's ``python-filter`` scenario filters), on the 15 request
headers of ``micro_headers.PAIRS``.  Three builds of the same dispatcher: everything pure
Python (``MESHFAST_PURE_PYTHON=1``), the compiled header view only, and the compiled header
view and dispatch steps (cython/headers.pyx, cython/steps.pyx: the default).

Each figure is the best of 5 repeats of a ``timeit`` loop of at least 20 ms.
"""

from __future__ import annotations

import argparse
import platform
import timeit
from typing import Any

from micro_headers import PAIRS, cpu

import meshfast._headers as compiled_headers
import meshfast._steps as compiled_steps
from meshfast.bench.scenarios import FILTER_MODULE
from meshfast.filters import api, dispatch
from meshfast.filters import headers as twin_headers
from meshfast.filters import steps as twin_steps

INFO = ("GET", "/", "", "reviews:9080", "http", "10.0.0.7:5555", "r", "c", "")


# The `python-filter` scenario's own filters (Noop, SetHeaders), as the bench writes them.
_filters: dict[str, Any] = {}
exec(FILTER_MODULE, _filters)
Noop, SetHeaders = _filters["Noop"], _filters["SetHeaders"]


BUILDS: dict[str, tuple[Any, Any]] = {
    "pure Python": (twin_headers.Headers, twin_steps),
    "compiled Headers": (compiled_headers.Headers, twin_steps),
    "compiled Headers + steps": (compiled_headers.Headers, compiled_steps),
}


def use(build: str) -> None:
    """What ``MESHFAST_PURE_PYTHON`` picks at import, switched in place."""
    headers, steps = BUILDS[build]
    api.Headers = headers  # type: ignore[misc]
    dispatch.Headers = headers  # type: ignore[misc]
    dispatch.steps = steps  # type: ignore[attr-defined]
    steps.use_headers(headers)


def best_ns(fn: Any, repeats: int = 5) -> float:
    timer = timeit.Timer(fn)
    number = 1
    while timer.timeit(number) < 0.02:
        number *= 2
    return min(timer.repeat(repeats, number)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    d = dispatch.Dispatcher({0: Noop(), 1: SetHeaders()})
    pairs = list(PAIRS)

    def noop() -> None:
        d.on_request((0,), INFO, list(pairs), None)

    def header() -> None:
        result = d.on_request((1,), INFO, list(pairs), None)
        assert result is not None
        assert result[0] == "continue"
        out = d.on_response((1,), INFO, 200, list(pairs), None, result[-1])
        assert out is not None
        assert out[0] == "continue"

    print(f"Python {platform.python_version()} on {platform.machine()}, {cpu()}")
    print(f"{'build':28} {'no-op filter ns':>16} {'header filter ns':>17}")
    base: dict[str, float] = {}
    for build in BUILDS:
        use(build)
        t = {"noop": best_ns(noop), "header": best_ns(header)}
        base = base or t
        print(
            f"{build:28} {t['noop']:10.0f} ({base['noop'] / t['noop']:.1f}x)"
            f" {t['header']:10.0f} ({base['header'] / t['header']:.1f}x)"
        )
    use("compiled Headers + steps")


if __name__ == "__main__":
    main()
