"""Distributed tracing end to end: two chained sidecars (client sidecar → server sidecar's
inbound → app) send their spans to a Zipkin and an OTLP receiver started here; the trace
and parent ids link across the two and down to what the app received; sampling 0%, 100%
and a caller's decision; W3C and B3 propagation; a dead collector never fails a request."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .conftest import Sidecar, free_port, service_entry

DEADLINE_S = 30.0
HOST = "reviews.default.svc.cluster.local"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Receiver:
    """A collector on loopback: records each POST's path, content type and body."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        lock = threading.Lock()
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(n)
                with lock:
                    posts.append((self.path, self.headers.get("content-type", ""), body))
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def zipkin_spans(r: Receiver) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path, ctype, body in list(r.posts):
        assert (path, ctype) == ("/api/v2/spans", "application/json")
        out += json.loads(body)
    return out


def otlp_spans(r: Receiver) -> list[dict[str, Any]]:
    """OTLP spans, decoded with opentelemetry-proto, in Zipkin-like dicts."""
    out: list[dict[str, Any]] = []
    for path, ctype, body in list(r.posts):
        assert (path, ctype) == ("/v1/traces", "application/x-protobuf")
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            service = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = {a.key: a.value.string_value or a.value.int_value for a in s.attributes}
                    out.append(
                        {
                            "traceId": s.trace_id.hex(),
                            "id": s.span_id.hex(),
                            "parentId": s.parent_span_id.hex() or None,
                            "kind": {2: "SERVER", 3: "CLIENT"}[s.kind],
                            "service": service["service.name"],
                            "tags": attrs,
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                        }
                    )
    return out


def wait_for(n: int, get: Any, r: Receiver) -> list[dict[str, Any]]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        spans: list[dict[str, Any]] = get(r)
        if len(spans) >= n:
            return spans
        assert time.monotonic() < deadline, spans
        time.sleep(0.05)


def tracing_stats(car: Sidecar) -> dict[str, int]:
    return car.stats()["tracing"]  # type: ignore[return-value]


def chain(echo, sidecar, *flags: str) -> tuple[Sidecar, Sidecar, str, str]:  # type: ignore[no-untyped-def]
    """The reviews app behind a server sidecar (inbound), and a client sidecar sending to
    it; both with `flags`. Also the inbound's and the app's addresses."""
    app = echo("reviews-app")
    inbound = f"127.0.0.1:{free_port()}"
    server = sidecar(
        "", "--app", app.address, "--inbound", inbound, "--labels", "app=reviews", *flags
    )
    client = sidecar(
        service_entry(HOST, 9080, [(inbound, {})]), "--labels", "app=productpage", *flags
    )
    return client, server, inbound, app.address


def get(car: Sidecar, **headers: str) -> httpx.Response:
    r = httpx.get(f"{car.url}/reviews/1?x=y", headers={"host": f"{HOST}:9080", **headers})
    assert r.status_code == 200, r.text
    return r


def traceparent(r: httpx.Response) -> tuple[str, str, str]:
    """(trace id, parent span id, flags) of the traceparent the app received."""
    version, trace, parent, flags = r.json()["headers"]["traceparent"].split("-")
    assert version == "00"
    return trace, parent, flags


def test_zipkin_spans_link_across_two_sidecars(echo, sidecar, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    client, server, inbound, app = chain(
        echo, sidecar, "--zipkin", receiver.url, "--trace-sampling", "100"
    )
    seen = [get(client) for _ in range(3)]
    spans = wait_for(6, zipkin_spans, receiver)
    assert len(spans) == 6
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_trace.setdefault(s["traceId"], []).append(s)
    for r in seen:
        trace, parent, flags = traceparent(r)
        assert flags == "01"
        pair = sorted(by_trace[trace], key=lambda s: s["kind"])
        out, inn = pair  # CLIENT (the client sidecar's), SERVER (the server sidecar's)
        assert (out["kind"], inn["kind"]) == ("CLIENT", "SERVER")
        # A new root at the client sidecar; the server sidecar's span is its child; the
        # app's parent is the server sidecar's span.
        assert "parentId" not in out
        assert inn["parentId"] == out["id"]
        assert parent == inn["id"]
        assert out["localEndpoint"] == {"serviceName": "productpage.default"}
        assert inn["localEndpoint"] == {"serviceName": "reviews.default"}
        request_id = r.json()["headers"]["x-request-id"]
        hops = ((out, f"outbound|9080||{HOST}", inbound), (inn, "inbound|app", app))
        for s, cluster, upstream in hops:
            tags = s["tags"]
            assert tags["component"] == "proxy"
            assert tags["http.method"] == "GET"
            assert tags["http.url"] == f"http://{HOST}:9080/reviews/1?x=y"
            assert tags["http.status_code"] == "200"
            assert tags["response_flags"] == "-"
            assert tags["upstream_cluster"] == cluster
            assert tags["guid:x-request-id"] == request_id
            assert tags["peer.address"].startswith("127.0.0.1:")
            assert tags["upstream_address"] == upstream
            assert s["remoteEndpoint"]["ipv4"] == "127.0.0.1"
            assert int(tags["upstream_service_time_us"]) <= s["duration"]
            assert int(tags["proxy_time_us"]) <= s["duration"]
            assert int(tags["response_size"]) == len(r.content)
            assert s["name"] == f"{HOST}:9080/*"
            assert "error" not in tags
        # The server sidecar's span lies within the client sidecar's.
        assert out["timestamp"] <= inn["timestamp"]
    for car in (client, server):
        stats = tracing_stats(car)
        assert stats["spans_recorded"] == 3
        assert stats["spans_dropped"] == 0
        assert stats["requests_unsampled"] == 0
    wait = time.monotonic() + DEADLINE_S
    while tracing_stats(client)["spans_exported"] < 3:
        assert time.monotonic() < wait, tracing_stats(client)
        time.sleep(0.05)
    prom = httpx.get(f"{client.admin}/stats/prometheus").text
    assert "meshfast_tracing_spans_recorded_total 3" in prom
    assert "meshfast_tracing_spans_dropped_total 0" in prom


def test_otlp_honours_the_callers_decision_at_zero(echo, sidecar, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    client, server, _, _ = chain(echo, sidecar, "--otlp", receiver.url, "--trace-sampling", "0")
    # 0%: no span, but the decision travels (flags 00) with a fresh context.
    unsampled = [get(client) for _ in range(5)]
    for r in unsampled:
        assert traceparent(r)[2] == "00"
    refused = get(client, traceparent=f"00-{TRACE}-{CALLER_SPAN}-00")
    assert traceparent(refused)[:1] == (TRACE,)
    assert traceparent(refused)[2] == "00"
    # The caller sampled: both sidecars make their spans, children of the caller's.
    sampled = get(client, traceparent=f"00-{TRACE}-{CALLER_SPAN}-01", tracestate="k=v")
    trace, parent, flags = traceparent(sampled)
    assert (trace, flags) == (TRACE, "01")
    assert sampled.json()["headers"]["tracestate"] == "k=v"
    spans = wait_for(2, otlp_spans, receiver)
    assert len(spans) == 2
    out = next(s for s in spans if s["kind"] == "CLIENT")
    inn = next(s for s in spans if s["kind"] == "SERVER")
    assert out["traceId"] == inn["traceId"] == TRACE
    assert out["parentId"] == CALLER_SPAN
    assert inn["parentId"] == out["id"]
    assert parent == inn["id"]
    assert out["service"] == "productpage.default"
    assert out["tags"]["http.status_code"] == 200
    assert out["tags"]["upstream_cluster"] == f"outbound|9080||{HOST}"
    assert out["start"] <= inn["start"] <= inn["end"] <= out["end"]
    for car in (client, server):
        stats = tracing_stats(car)
        assert stats["spans_recorded"] == 1
        assert stats["requests_unsampled"] == 6
    # Nothing more arrives for the unsampled requests.
    time.sleep(1.5)
    assert len(otlp_spans(receiver)) == 2


def test_w3c_and_b3_are_propagated_to_the_upstream(echo, sidecar, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    up = echo("v1")
    car = sidecar(
        service_entry("a.example.com", 80, [(up.address, {})]),
        "--zipkin",
        receiver.url,
        "--trace-sampling",
        "100",
    )

    def seen(**headers: str) -> dict[str, str]:
        r = httpx.get(f"{car.url}/", headers={"host": "a.example.com", **headers})
        assert r.status_code == 200
        return r.json()["headers"]  # type: ignore[no-any-return]

    # B3 multi-header in: B3 and W3C out, this sidecar's span as the parent.
    h = seen(**{"x-b3-traceid": TRACE, "x-b3-spanid": CALLER_SPAN, "x-b3-sampled": "1"})
    span = h["x-b3-spanid"]
    assert h["x-b3-traceid"] == TRACE
    assert h["x-b3-parentspanid"] == CALLER_SPAN
    assert h["x-b3-sampled"] == "1"
    assert span != CALLER_SPAN
    assert h["traceparent"] == f"00-{TRACE}-{span}-01"
    # A 64-bit B3 trace id stays 64-bit in B3.
    h = seen(**{"x-b3-traceid": TRACE[16:], "x-b3-spanid": CALLER_SPAN, "x-b3-sampled": "0"})
    assert h["x-b3-traceid"] == TRACE[16:]
    assert h["x-b3-sampled"] == "0"
    assert h["traceparent"] == f"00-{'0' * 16}{TRACE[16:]}-{h['x-b3-spanid']}-00"
    # Single b3 in: single b3 out.
    h = seen(b3=f"{TRACE}-{CALLER_SPAN}-1")
    trace, span, sampled, parent = h["b3"].split("-")
    assert (trace, sampled, parent) == (TRACE, "1", CALLER_SPAN)
    assert h["traceparent"] == f"00-{TRACE}-{span}-01"
    assert "x-b3-traceid" not in h
    # W3C only in: W3C only out.
    h = seen(traceparent=f"00-{TRACE}-{CALLER_SPAN}-01")
    assert "b3" not in h
    assert "x-b3-traceid" not in h
    # Malformed headers are ignored: a new root, never a failure.
    for bad in (
        {"traceparent": "00-zz-yy-01"},
        {"traceparent": f"00-{'0' * 32}-{CALLER_SPAN}-01"},
        {"b3": "nonsense"},
        {"x-b3-traceid": "12", "x-b3-spanid": "not-hex"},
    ):
        h = seen(**bad)
        trace, span, flags = h["traceparent"].split("-")[1:]
        assert trace not in (TRACE, "0" * 32), bad
        assert len(trace) == 32
        assert flags == "01"
    # Every request but the one whose caller said "not sampled".
    spans = wait_for(7, zipkin_spans, receiver)
    assert len(spans) == 7
    roots = [s for s in spans if "parentId" not in s]
    assert len(roots) == 4  # the malformed ones
    assert all(s["kind"] == "CLIENT" for s in spans)


def test_a_dead_collector_never_fails_a_request(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("v1")
    dead = f"http://127.0.0.1:{free_port()}"
    car = sidecar(
        service_entry("a.example.com", 80, [(up.address, {})]),
        "--zipkin",
        dead,
        "--otlp",
        dead,
        "--trace-sampling",
        "100",
    )
    with httpx.Client(base_url=car.url, headers={"host": "a.example.com"}) as c:
        for _ in range(50):
            assert c.get("/").status_code == 200
    # Each POST is retried with backoff (~8 s) before its spans count as failed.
    deadline = time.monotonic() + 3 * DEADLINE_S
    while tracing_stats(car)["spans_export_failed"] < 100:  # 50 spans, two collectors
        assert time.monotonic() < deadline, tracing_stats(car)
        time.sleep(0.1)
    stats = tracing_stats(car)
    assert stats["spans_recorded"] == 50
    assert stats["spans_exported"] == 0
    with httpx.Client(base_url=car.url, headers={"host": "a.example.com"}) as c:
        assert c.get("/").status_code == 200
