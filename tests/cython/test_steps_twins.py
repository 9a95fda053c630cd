"""The compiled dispatch steps (cython/steps.pyx) against their pure-Python twin, the oracle.

Random chains of sync filters — no-ops, header edits, local replies, exceptions, body
changes, wrong return values, headers replaced by a dict — run through one Dispatcher with
each implementation, on random requests and responses: the answers, what the filters saw
and did, what was logged and counted must all be the same.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import meshfast._steps as compiled
from meshfast.filters import HttpFilter, LogInfo, Request, Response, _impl, dispatch
from meshfast.filters import steps as twin
from meshfast.filters.dispatch import Dispatcher, FilterSettings

INFO = ("GET", "/p", "q=1", "svc:80", "http", "10.0.0.7:5555", "r1", "c1", "")

KINDS = [
    "noop",
    "set",
    "add",
    "remove",
    "deny",
    "boom",
    "body",
    "dict-headers",
    "bad-return",
    "resp-set",
    "resp-body",
    "resp-boom",
    "log",
]


class Vocab(HttpFilter):
    """One behaviour of KINDS, recording what it saw in ``events``."""

    request_body_limit = 1024
    response_body_limit = 1024

    def __init__(self, kind: str, events: list[str]) -> None:
        super().__init__()
        self.kind = kind
        self.events = events

    def on_request(self, request: Request) -> Response | None:
        self.events.append(f"req {self.kind} {request.headers.items()} {request.body!r}")
        k = self.kind
        if k == "set":
            request.headers["x-set"] = "1"
        elif k == "add":
            request.headers.add("x-add", "v")
        elif k == "remove":
            request.headers.remove("b")
        elif k == "deny" and "deny" in request.headers:
            return Response(403, {"x-denied": "1"}, "no")
        elif k == "boom" and "boom" in request.headers:
            raise RuntimeError("boom")
        elif k == "body" and request.body is not None:
            request.body = request.body + b"!"
        elif k == "dict-headers":
            request.headers = {"only": "this"}  # type: ignore[assignment]
        elif k == "bad-return" and "bad" in request.headers:
            return "nope"  # type: ignore[return-value]
        return None

    def on_response(self, request: Request, response: Response) -> None:
        if not self.kind.startswith("resp"):
            return
        self.events.append(f"resp {self.kind} {response.headers.items()} {response.body!r}")
        if self.kind == "resp-set":
            response.headers["x-resp"] = "1"
        elif self.kind == "resp-body" and response.body is not None:
            response.body = b"[" + response.body + b"]"
        elif self.kind == "resp-boom" and "boom" in response.headers:
            raise ValueError("resp boom")

    def on_log(self, request: Request, response: Response, info: LogInfo) -> None:
        if self.kind == "log":
            self.events.append(f"log {response.status} {info.local_reply} {info.flags}")


NAMES = st.sampled_from(["a", "b", "deny", "boom", "bad", "x-set"])
HEADERS = st.lists(st.tuples(NAMES, st.sampled_from(["1", "two"])), max_size=4)
BODY = st.none() | st.binary(max_size=3)


# The twin compares with the Headers class the package uses (the compiled one here).
twin.use_headers(_impl.Headers)


def summary(result: object) -> object:
    """The answer with its opaque state replaced by what it holds."""
    if isinstance(result, tuple) and result and result[0] in ("continue", "respond"):
        state = result[-1]
        if isinstance(state, dispatch._RequestState):
            seen = (state.request.headers.items(), state.request.body, [s.name for s in state.ran])
            return (*result[:-1], seen)
    return result


def run(
    steps: Any,
    kinds: list[str],
    headers: list[tuple[str, str]],
    body: bytes | None,
    resp_headers: list[tuple[str, str]],
    resp_body: bytes | None,
) -> object:
    events: list[str] = []
    filters = {i: Vocab(k, events) for i, k in enumerate(kinds)}
    for i, f in filters.items():
        f.name = f"f{i}-{f.kind}"
    d = Dispatcher(filters, {i: FilterSettings(timeout=60) for i in filters})
    ids = tuple(filters)
    saved = dispatch.steps
    dispatch.steps = steps  # type: ignore[assignment]
    try:
        first = d.on_request(ids, INFO, list(headers), body)
        second = None
        if isinstance(first, tuple) and first[0] == "continue":
            second = d.on_response(ids, INFO, 200, list(resp_headers), resp_body, first[-1])
    finally:
        dispatch.steps = saved  # type: ignore[assignment]
    return summary(first), summary(second), events, d.errors, d.timeouts


@settings(max_examples=300, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=4),
    headers=HEADERS,
    body=BODY,
    resp_headers=HEADERS,
    resp_body=BODY,
)
def test_compiled_steps_match_the_twin(
    kinds: list[str],
    headers: list[tuple[str, str]],
    body: bytes | None,
    resp_headers: list[tuple[str, str]],
    resp_body: bytes | None,
) -> None:
    args = (kinds, headers, body, resp_headers, resp_body)
    assert run(compiled, *args) == run(twin, *args)


def test_the_compiled_steps_are_compiled() -> None:
    # A silent fallback to the twin cannot pass: the module is the one the core registered.
    assert compiled is not twin
    assert type(compiled.request_from).__name__ == "builtin_function_or_method"
    assert not hasattr(compiled, "__file__") or "_core" in str(compiled.__file__)
