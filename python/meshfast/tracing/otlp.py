"""Spans as OTLP/HTTP protobuf (``POST /v1/traces``, ``ExportTraceServiceRequest``), built
with the ``opentelemetry-proto`` messages. Imported only when ``--otlp`` is given, at the
first export (:func:`meshfast.tracing.export.build`): it and the protobuf runtime take
20-100 ms to import here (-X importtime), kept out of the start."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from meshfast.tracing.spans import ERROR, Span
from meshfast.tracing.tags import Local, tags

__all__ = ["CONTENT_TYPE", "DEFAULT_PATH", "encode"]

CONTENT_TYPE = "application/x-protobuf"
DEFAULT_PATH = "/v1/traces"
_INT_TAGS = frozenset({"http.status_code", "request_size", "response_size"})


def _attr(key: str, value: str) -> KeyValue:
    if key in _INT_TAGS and value.isdigit():
        return KeyValue(key=key, value=AnyValue(int_value=int(value)))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _span(span: Span, local: Local) -> PbSpan:
    error = bool(span.flags & ERROR)
    return PbSpan(
        trace_id=span.trace_id.to_bytes(16, "big"),
        span_id=span.span_id.to_bytes(8, "big"),
        parent_span_id=span.parent_id.to_bytes(8, "big") if span.parent_id else b"",
        name=span.name,
        kind=PbSpan.SPAN_KIND_CLIENT if span.kind == 1 else PbSpan.SPAN_KIND_SERVER,
        start_time_unix_nano=span.start_unix_ns,
        end_time_unix_nano=span.start_unix_ns + span.duration_ns,
        attributes=[_attr(k, v) for k, v in tags(span, local).items() if k != "error"],
        status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_UNSET),
    )


def encode(spans: Sequence[Span], local: Local) -> bytes:
    resource = Resource(
        attributes=[KeyValue(key="service.name", value=AnyValue(string_value=local.service))]
    )
    scope = ScopeSpans(
        scope=InstrumentationScope(name="meshfast"), spans=[_span(s, local) for s in spans]
    )
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[scope])]
    )
    return request.SerializeToString()  # type: ignore[no-any-return]
