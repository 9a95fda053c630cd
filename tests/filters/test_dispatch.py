from __future__ import annotations

import time
from typing import Any

from meshfast.config import load_config_text
from meshfast.examples.filters.logging_filter import AccessLog
from meshfast.examples.filters.ratelimit import RateLimit
from meshfast.filters import HttpFilter, LogInfo, Request, Response
from meshfast.filters.dispatch import (
    Dispatcher,
    FilterSettings,
    build_dispatcher,
    carry_failures,
)

INFO = ("GET", "/p", "a=1", "svc:80", "http", "10.0.0.7:5555", "r1", "c1")


class Recorder(HttpFilter):
    def __init__(self, config: Any = None, events: list[str] | None = None) -> None:
        super().__init__(config)
        self.events = events if events is not None else []

    def on_request(self, request: Request) -> Response | None:
        self.events.append(f"req {self.name}")
        request.state.setdefault("seen", []).append(self.name)
        return None

    def on_response(self, request: Request, response: Response) -> None:
        self.events.append(f"resp {self.name} {request.state['seen']}")
        response.headers.add("x-by", self.name)

    def on_log(self, request: Request, response: Response, info: LogInfo) -> None:
        self.events.append(f"log {self.name} {response.status} {info.local_reply}")


class Deny(HttpFilter):
    def on_request(self, request: Request) -> Response | None:
        if request.headers.get("x-deny"):
            return Response(403, {"content-type": "text/plain"}, "no\n")
        request.headers["x-checked"] = "1"
        return None


class Raises(HttpFilter):
    def on_request(self, request: Request) -> Response | None:
        raise RuntimeError("boom")


def named(f: HttpFilter, name: str) -> HttpFilter:
    f.name = name
    return f


def test_no_filters_and_nothing_to_do_returns_none() -> None:
    d = Dispatcher({0: HttpFilter()})
    assert d.on_request((), INFO, []) is None
    assert d.on_request((0,), INFO, [("a", "b")]) is None
    assert d.on_response((0,), INFO, 200, [("a", "b")]) is None


def test_continue_with_modified_headers() -> None:
    d = Dispatcher({3: named(Deny(), "ns/deny")})
    result = d.on_request((3,), INFO, [("host", "svc")])
    assert result is not None
    assert result[0] == "continue"
    assert result[1] == [("host", "svc"), ("x-checked", "1")]
    assert result[2] is None  # no body read, none changed


def test_local_reply_stops_the_chain_and_logs() -> None:
    events: list[str] = []
    d = Dispatcher(
        {0: named(Recorder(events=events), "a"), 1: Deny(), 2: named(Recorder(events=events), "c")}
    )
    result = d.on_request((0, 1, 2), INFO, [("x-deny", "1")])
    assert result is not None
    assert result[:4] == ("respond", 403, [("content-type", "text/plain")], b"no\n")
    assert events == ["req a", "log a 403 True"]


def test_order_and_shared_state() -> None:
    events: list[str] = []
    d = Dispatcher({i: named(Recorder(events=events), n) for i, n in enumerate("abc")})
    result = d.on_request((0, 1, 2), INFO, [])
    assert result is not None
    assert result[0] == "continue"
    state = result[-1]
    out = d.on_response((0, 1, 2), INFO, 200, [("server", "x")], state=state)
    assert out == (
        "continue",
        [("server", "x"), ("x-by", "c"), ("x-by", "b"), ("x-by", "a")],
        None,
    )
    seen = "['a', 'b', 'c']"
    assert events == [
        "req a",
        "req b",
        "req c",
        f"resp c {seen}",
        f"resp b {seen}",
        f"resp a {seen}",
        "log c 200 False",
        "log b 200 False",
        "log a 200 False",
    ]


def test_request_view() -> None:
    got: list[Request] = []

    class Look(HttpFilter):
        def on_request(self, request: Request) -> Response | None:
            got.append(request)
            return None

    Dispatcher({0: Look()}).on_request((0,), INFO, [("User-Agent", "t")])
    (r,) = got
    assert (r.method, r.path, r.query, r.authority, r.scheme) == (
        "GET",
        "/p",
        "a=1",
        "svc:80",
        "http",
    )
    assert (r.peer, r.peer_ip, r.route, r.cluster) == ("10.0.0.7:5555", "10.0.0.7", "r1", "c1")
    assert Request(*INFO[:5], "[::1]:80", "r", "c").peer_ip == "::1"


def test_failures_are_counted_and_answered_with_the_filters_status() -> None:
    class BadReply(HttpFilter):
        def on_request(self, request: Request) -> Response | None:
            return "nope"  # type: ignore[return-value]

    class BadLog(HttpFilter):
        def on_log(self, request: Request, response: Response, info: LogInfo) -> None:
            raise ValueError("log")

    d = Dispatcher(
        {
            0: named(Raises(), "ns/raises"),
            1: named(BadReply(), "ns/bad"),
            2: named(BadLog(), "ns/log"),
        },
        {0: FilterSettings(failure_status=503)},
    )
    for _ in range(2):
        result = d.on_request((2, 0), INFO, [])
        assert result is not None
        assert result[:2] == ("error", 503)
        assert "RuntimeError: boom" in result[2]
        assert result[3] is False
    result = d.on_request((1,), INFO, [])
    assert result is not None
    assert result[:2] == ("error", 500)
    assert "must return None or a Response" in result[2]
    result = d.on_request((9,), INFO, [])
    assert result is not None
    assert result[:2] == ("error", None)  # no such filter: the core's route default
    result = d.on_request((2,), INFO, [])
    assert result is not None
    assert d.on_response((2,), INFO, 200, [], state=result[-1]) is None  # on_log errors only count
    # ns/log's on_log also ran (and raised) for both requests ns/raises failed.
    assert d.errors == {"ns/raises": 2, "ns/bad": 1, "<dispatcher>": 1, "ns/log": 3}


def test_sync_phase_over_its_budget_fails_after_it_returns() -> None:
    class Slow(HttpFilter):
        def on_request(self, request: Request) -> Response | None:
            time.sleep(0.05)  # at least 50 ms: always over a 10 ms budget
            return None

    d = Dispatcher({0: named(Slow(), "ns/slow")}, {0: FilterSettings(timeout=0.01)})
    result = d.on_request((0,), INFO, [])
    assert result is not None
    assert result[0] == "error"
    assert result[3] is True
    assert "over its 0.01s budget" in result[2]
    assert d.timeouts == {"ns/slow": 1}
    assert d.errors == {}


def test_core_endings_reach_on_log_with_their_flags() -> None:
    events: list[str] = []

    class Log(HttpFilter):
        def on_log(self, request: Request, response: Response, info: LogInfo) -> None:
            events.append(f"{response.status} {info.flags} {info.local_reply}")

    d = Dispatcher({0: Log()})
    result = d.on_request((0,), INFO, [])
    assert result is not None
    assert result[0] == "continue"
    d.on_log((0,), INFO, 503, "UF", result[-1])
    assert events == ["503 UF False"]


def test_bodies_are_given_and_replaced_only_when_read() -> None:
    class Upper(HttpFilter):
        request_body_limit = 100
        response_body_limit = 100

        def on_request(self, request: Request) -> Response | None:
            assert request.body is not None
            request.body = request.body.upper()
            return None

        def on_response(self, request: Request, response: Response) -> None:
            assert response.body is not None
            response.body = response.body + b"!"

    d = Dispatcher({0: Upper()})
    result = d.on_request((0,), INFO, [], b"hi")
    assert result is not None
    assert result[:3] == ("continue", None, b"HI")
    out = d.on_response((0,), INFO, 200, [], b"ok", result[-1])
    assert out == ("continue", None, b"ok!")

    class Sneaky(HttpFilter):
        def on_request(self, request: Request) -> Response | None:
            request.body = b"x"
            return None

    result = Dispatcher({0: Sneaky()}).on_request((0,), INFO, [])
    assert result is not None
    assert result[0] == "error"
    assert "request_body_limit" in result[2]


def test_ratelimit_example() -> None:
    now = [0.0]
    f = RateLimit(RateLimit.Config(rate=1, burst=2), clock=lambda: now[0])
    d = Dispatcher({0: f})
    assert d.on_request((0,), INFO, []) is None
    assert d.on_request((0,), INFO, []) is None
    result = d.on_request((0,), INFO, [])
    assert result is not None
    assert result[:2] == ("respond", 429)
    other = ("GET", "/", "", "svc", "http", "10.0.0.8:1", "r", "c")
    assert d.on_request((0,), other, []) is None
    now[0] = 1.0
    assert d.on_request((0,), INFO, []) is None


def test_logging_example() -> None:
    f = AccessLog(AccessLog.Config())
    d = Dispatcher({0: named(f, "default/log")})
    result = d.on_request((0,), INFO, [("user-agent", "curl")])
    assert result is not None
    d.on_response((0,), INFO, 201, [], state=result[-1])
    (line,) = f.lines
    assert line.startswith("10.0.0.7:5555 GET svc:80/p?a=1 201 route=r1 cluster=c1 ")
    assert line.endswith("ua=curl")


def test_carry_failures_adds_the_previous_counts_by_name() -> None:
    # (The rollback apply_with_filters did is gone: Core.install changes nothing on a refusal;
    # tests/test_deploy.py checks that with the real core.)
    new, old = Dispatcher({}), Dispatcher({})
    old.errors.update({"default/a": 2, "default/b": 1})
    old.timeouts["default/a"] = 3
    new.errors["default/a"] = 1
    carry_failures(new, old)
    assert (new.errors, new.timeouts) == ({"default/a": 3, "default/b": 1}, {"default/a": 3})
    carry_failures(new, new)  # the same dispatcher: nothing to add
    carry_failures(new, None)
    assert new.errors == {"default/a": 3, "default/b": 1}


def test_build_dispatcher_ids_match_compile() -> None:
    text = "".join(
        f"---\napiVersion: meshfast.io/v1alpha1\nkind: HttpFilter\nmetadata: {{name: {n}}}\n"
        "spec:\n  python: meshfast.examples.filters.add_header:AddHeader\n"
        for n in ("zz", "aa")
    )
    d = build_dispatcher(load_config_text(text))
    assert d is not None
    assert {i: f.name for i, f in d.filters.items()} == {0: "default/aa", 1: "default/zz"}
    assert build_dispatcher(load_config_text("")) is None
