"""The span exporter: a Trio task that takes the core's span batch every ``interval``
seconds, and one sender task per collector that POSTs them.

Off the data path: the workers only ever write into the core's bounded batch (a full one
drops spans, counted there), and taking it is one short lock and a copy. Memory is bounded
here too: each collector has a queue of at most ``queue_spans`` spans waiting; past it new
spans are dropped, counted. A failed POST (no answer, 429, 5xx) is retried with exponential
backoff and jitter, up to ``retries`` times, then its spans are counted as failed; while a
collector is down, its queue fills and drops — the requests never wait for it.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from meshfast.tracing.batch import decode
from meshfast.tracing.post import Endpoint, PostError, post
from meshfast.tracing.spans import Span
from meshfast.tracing.tags import Local

__all__ = ["Collector", "Counts", "Exporter", "SpanCore", "build"]

log = logging.getLogger("meshfast.tracing")

INTERVAL_S = 0.5
MAX_POST_SPANS = 512  # spans per POST
QUEUE_SPANS = 16384  # spans waiting per collector
RETRIES = 4
BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
TIMEOUT_S = 5.0
FLUSH_S = 2.0  # the last spans' export at shutdown


@dataclass
class Counts:
    """Totals over every collector: a span sent to two collectors counts twice."""

    exported: int = 0
    failed: int = 0
    dropped: int = 0


@dataclass
class Collector:
    """One collector: where, in which format, and its queue of spans to send."""

    name: str  # "zipkin", "otlp"
    endpoint: Endpoint
    content_type: str
    encode: Callable[[Sequence[Span], Local], bytes]
    queue: deque[Span] = field(default_factory=deque)
    ready: trio.Event = field(default_factory=trio.Event)


class Exporter:
    def __init__(
        self,
        take: Callable[[], bytes],
        report: Callable[[int, int, int], None],
        collectors: Sequence[Collector],
        local: Local,
        *,
        interval: float = INTERVAL_S,
        queue_spans: int = QUEUE_SPANS,
        retries: int = RETRIES,
        backoff: float = BACKOFF_S,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self._take = take
        self._report = report
        self.collectors = list(collectors)
        self.local = local
        self.interval = interval
        self.queue_spans = queue_spans
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.counts = Counts()

    async def run(self) -> None:
        """Runs until cancelled (the sidecar stopped: its requests have drained), then
        sends what is left once, without retries, for at most ``FLUSH_S`` seconds."""
        try:
            async with trio.open_nursery() as nursery:
                for c in self.collectors:
                    nursery.start_soon(self._send_loop, c)
                while True:
                    await trio.sleep(self.interval)
                    self.drain()
        finally:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + FLUSH_S):
                await self._flush()

    async def _flush(self) -> None:
        self.drain()
        for c in self.collectors:
            while c.queue:
                batch = [c.queue.popleft() for _ in range(min(MAX_POST_SPANS, len(c.queue)))]
                body = c.encode(batch, self.local)
                try:
                    status = await post(c.endpoint, body, c.content_type, 1.0)
                except PostError:
                    status = 0
                if 200 <= status < 300:
                    self.counts.exported += len(batch)
                else:
                    self.counts.failed += len(batch)
        self._publish()

    def drain(self) -> None:
        """Takes the core's batch and queues its spans for every collector."""
        spans, _dropped = decode(self._take())  # (the core counted its drops itself)
        if spans:
            for c in self.collectors:
                room = max(0, self.queue_spans - len(c.queue))
                c.queue.extend(spans[:room])
                self.counts.dropped += len(spans) - min(room, len(spans))
                c.ready.set()
        self._publish()

    def _publish(self) -> None:
        n = self.counts
        self._report(n.exported, n.failed, n.dropped)

    async def _send_loop(self, c: Collector) -> None:
        while True:
            await c.ready.wait()
            c.ready = trio.Event()
            while c.queue:
                batch = [c.queue.popleft() for _ in range(min(MAX_POST_SPANS, len(c.queue)))]
                if await self._send(c, batch):
                    self.counts.exported += len(batch)
                else:
                    self.counts.failed += len(batch)
                self._publish()

    async def _send(self, c: Collector, spans: list[Span]) -> bool:
        body = c.encode(spans, self.local)
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                status = await post(c.endpoint, body, c.content_type, self.timeout)
            except PostError as exc:
                why = str(exc)
            else:
                if 200 <= status < 300:
                    return True
                why = f"HTTP {status}"
                if status != 429 and status < 500:
                    break  # the collector refuses these spans: retrying will not help
            if attempt < self.retries:
                # Full jitter: collectors coming back are not hit by every sidecar at once.
                await trio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, MAX_BACKOFF_S)
        log.warning("%s export of %d spans failed: %s", c.name, len(spans), why)
        return False


class SpanCore(Protocol):
    """The part of ``meshfast._core.Core`` the exporter uses."""

    def take_spans(self) -> bytes: ...
    def report_span_export(self, exported: int, failed: int, dropped: int, /) -> None: ...


def _otlp_encode(spans: Sequence[Span], local: Local) -> bytes:
    # Imported at the first export, not at the start: protobuf's runtime and the OTLP
    # messages take 20-100 ms to import here, which would otherwise delay the ready line.
    from meshfast.tracing import otlp

    return otlp.encode(spans, local)


def build(core: SpanCore, zipkin: str | None, otlp: str | None, local: Local) -> Exporter:
    """The exporter for ``--zipkin`` and/or ``--otlp`` URLs (checked: ValueError). The
    OTLP encoder (and protobuf) is imported only when ``otlp`` is given, at the first
    export; a missing ``opentelemetry-proto`` is an error now (ValueError)."""
    from meshfast.tracing import post

    collectors = []
    if zipkin is not None:
        from meshfast.tracing import zipkin as z

        endpoint = post.parse(zipkin, z.DEFAULT_PATH)
        collectors.append(Collector("zipkin", endpoint, z.CONTENT_TYPE, z.encode))
    if otlp is not None:
        import importlib.util

        endpoint = post.parse(otlp, "/v1/traces")
        if importlib.util.find_spec("opentelemetry.proto") is None:
            raise ValueError("OTLP export needs the opentelemetry-proto package")
        collectors.append(Collector("otlp", endpoint, "application/x-protobuf", _otlp_encode))
    return Exporter(core.take_spans, core.report_span_export, collectors, local)
