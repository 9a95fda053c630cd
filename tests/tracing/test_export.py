"""The span exporter on real loopback sockets: batching into POSTs, retry with backoff
until the collector answers, failures and queue overflows counted, both formats."""

from __future__ import annotations

import json

import trio
import trio.testing
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshfast import _core
from meshfast.tracing import otlp, post, zipkin
from meshfast.tracing.export import Collector, Exporter
from meshfast.tracing.spans import Span
from meshfast.tracing.tags import Local

LOCAL = Local("reviews.default", "sidecar~host~reviews.default")


def span(i: int, flags: int = 1) -> Span:
    return Span(
        trace_id=(7 << 64) | i,
        span_id=i + 1,
        parent_id=0 if i % 2 else 99,
        start_unix_ns=1_700_000_000_000_000_000 + i,
        duration_ns=5_000_000,
        upstream_ns=3_000_000,
        bytes_in=1,
        bytes_out=2,
        status=200 if flags < 2 else 503,
        kind=i % 2,
        flags=flags | 4,
        name="a:80/*",
        method="GET",
        authority="a:80",
        path="/p?q",
        cluster="outbound|80||a",
        upstream="",
        request_id=f"rid-{i}",
        response_flags="" if flags < 2 else "UF",
        route="r",
        peer="127.0.0.1:4242",
    )


def batch_of(spans: list[Span]) -> bytes:
    fields = [tuple(getattr(s, f) for f in Span.__struct_fields__) for s in spans]
    return _core.encode_span_batch(fields)


class Collectors:
    """A loopback HTTP server answering each POST with the next status of `statuses`
    (then 200), recording the bodies it accepted."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.bodies: list[bytes] = []
        self.posts = 0
        self.port = 0

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        async with stream:
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += await stream.receive_some(65536)
            self.posts += 1
            status = self.statuses.pop(0) if self.statuses else 200
            if status == 200:
                self.bodies.append(body)
            await stream.send_all(
                f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
            )


def exporter(batches: list[bytes], port: int, **kwargs: float) -> tuple[Exporter, list[tuple]]:
    reports: list[tuple] = []
    endpoint = post.parse(f"http://127.0.0.1:{port}", zipkin.DEFAULT_PATH)
    c = Collector("zipkin", endpoint, zipkin.CONTENT_TYPE, zipkin.encode)
    e = Exporter(
        lambda: batches.pop(0) if batches else batch_of([]),
        lambda *n: reports.append(n),
        [c],
        LOCAL,
        interval=0.01,
        backoff=0.01,
        **kwargs,  # type: ignore[arg-type]
    )
    return e, reports


async def wait_until(check, deadline: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Polls: the counts change inside the exporter, which has no event to wait on."""
    with trio.fail_after(deadline):
        while not check():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def test_retries_until_the_collector_takes_the_spans() -> None:
    server = Collectors([503, 429])
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        e, reports = exporter([batch_of([span(0), span(1)])], server.port)
        nursery.start_soon(e.run)
        await wait_until(lambda: e.counts.exported == 2)
        nursery.cancel_scope.cancel()
    assert server.posts == 3
    assert (e.counts.failed, e.counts.dropped) == (0, 0)
    assert reports[-1] == (2, 0, 0)
    sent = json.loads(server.bodies[0])
    assert [s["id"] for s in sent] == ["0000000000000001", "0000000000000002"]
    assert sent[0]["parentId"] == f"{99:016x}"
    assert "parentId" not in sent[1]
    assert [s["kind"] for s in sent] == ["SERVER", "CLIENT"]
    assert sent[0]["traceId"] == f"{(7 << 64):032x}"
    assert sent[0]["remoteEndpoint"] == {"ipv4": "127.0.0.1", "port": 4242}
    assert sent[0]["tags"]["proxy_time_us"] == "2000"
    assert sent[0]["tags"]["upstream_service_time_us"] == "3000"


async def test_a_refused_batch_fails_at_once_and_a_dead_one_after_the_retries() -> None:
    server = Collectors([400])
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        e, _ = exporter([batch_of([span(0)])], server.port, retries=2)
        nursery.start_soon(e.run)
        await wait_until(lambda: e.counts.failed == 1)
        nursery.cancel_scope.cancel()
    assert server.posts == 1  # a 4xx is not retried
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, never listening: refused
        async with trio.open_nursery() as nursery:
            e, _ = exporter([batch_of([span(0), span(1)])], dead, retries=2)
            nursery.start_soon(e.run)
            await wait_until(lambda: e.counts.failed == 2)
            nursery.cancel_scope.cancel()
    assert e.counts.exported == 0


async def test_a_full_queue_drops_and_counts() -> None:
    e, reports = exporter([batch_of([span(i) for i in range(10)])], 9, queue_spans=4)
    e.drain()
    assert len(e.collectors[0].queue) == 4
    assert e.counts.dropped == 6
    assert reports[-1] == (0, 0, 6)


def test_otlp_messages_decode_with_opentelemetry_proto() -> None:
    body = otlp.encode([span(0), span(1, flags=3)], LOCAL)
    req = ExportTraceServiceRequest.FromString(body)
    (rs,) = req.resource_spans
    assert rs.resource.attributes[0].key == "service.name"
    assert rs.resource.attributes[0].value.string_value == "reviews.default"
    a, b = rs.scope_spans[0].spans
    assert a.trace_id == (7 << 64).to_bytes(16, "big")
    assert a.parent_span_id == (99).to_bytes(8, "big")
    assert b.parent_span_id == b""
    assert a.end_time_unix_nano - a.start_time_unix_nano == 5_000_000
    attrs = {kv.key: kv.value for kv in b.attributes}
    assert attrs["http.status_code"].int_value == 503
    assert attrs["response_flags"].string_value == "UF"
    assert b.status.code == b.status.STATUS_CODE_ERROR
    assert a.status.code == a.status.STATUS_CODE_UNSET


def test_collector_urls() -> None:
    assert post.parse("http://c:9411", "/api/v2/spans") == ("c", 9411, "/api/v2/spans", "c:9411")
    assert post.parse("http://c/v1/traces", "/x").target == "/v1/traces"
    for bad in ("https://c", "c:9411", "http://", "http://c:notaport"):
        try:
            post.parse(bad, "/")
        except ValueError:
            continue
        raise AssertionError(bad)


async def test_what_is_left_is_sent_when_the_exporter_stops() -> None:
    server = Collectors([])
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        e, reports = exporter([batch_of([span(0), span(1), span(2)])], server.port)
        e.interval = 3600.0  # no periodic drain: only the final flush can send them
        async with trio.open_nursery() as inner:
            inner.start_soon(e.run)
            await trio.testing.wait_all_tasks_blocked()
            assert server.posts == 0
            inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    assert e.counts.exported == 3
    assert len(json.loads(server.bodies[0])) == 3
    assert reports[-1] == (3, 0, 0)
