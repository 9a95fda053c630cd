"""What a span says, as Envoy's tracers tag it: shared by the Zipkin and OTLP formats."""

from __future__ import annotations

from typing import NamedTuple

from meshfast.tracing.spans import ERROR, UPSTREAM, Span

__all__ = ["Local", "tags"]


class Local(NamedTuple):
    """This sidecar, as its spans name it: Istio's ``{app}.{namespace}`` service name and
    Envoy's ``node_id``."""

    service: str
    node_id: str


def url(span: Span) -> str:
    return f"http://{span.authority}{span.path}"


def tags(span: Span, local: Local) -> dict[str, str]:
    """Envoy's span tags (all strings, as Zipkin has them)."""
    out = {
        "component": "proxy",
        "node_id": local.node_id,
        "guid:x-request-id": span.request_id,
        "http.method": span.method,
        "http.url": url(span),
        "http.status_code": str(span.status),
        "response_flags": span.response_flags or "-",
        "upstream_cluster": span.cluster or "-",
        "peer.address": span.peer,
        "request_size": str(span.bytes_in),
        "response_size": str(span.bytes_out),
    }
    if span.route:
        out["route_name"] = span.route
    if span.upstream:
        out["upstream_address"] = span.upstream
    if span.flags & UPSTREAM:
        # The upstream's time to its response head: the span's duration minus it is the
        # proxy's own (Envoy's x-envoy-upstream-service-time, in microseconds here).
        out["upstream_service_time_us"] = str(span.upstream_ns // 1000)
        out["proxy_time_us"] = str(max(0, span.duration_ns - span.upstream_ns) // 1000)
    if span.flags & ERROR:
        out["error"] = "true"
    return out
