"""Spans as Zipkin v2 JSON (``POST /api/v2/spans``, a JSON array of spans)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from meshfast.tracing.spans import Span
from meshfast.tracing.tags import Local, tags

__all__ = ["CONTENT_TYPE", "DEFAULT_PATH", "encode"]

CONTENT_TYPE = "application/json"
DEFAULT_PATH = "/api/v2/spans"
_json = msgspec.json.Encoder()


def _endpoint(peer: str) -> dict[str, Any] | None:
    host, sep, port = peer.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]")
    key = "ipv6" if ":" in host else "ipv4"
    return {key: host, "port": int(port)}


def span_json(span: Span, local: Local) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": f"{span.trace_id:032x}",
        "id": f"{span.span_id:016x}",
        "kind": "CLIENT" if span.kind == 1 else "SERVER",
        "name": span.name,
        "timestamp": span.start_unix_ns // 1000,
        "duration": max(1, span.duration_ns // 1000),
        "localEndpoint": {"serviceName": local.service},
        "tags": tags(span, local),
    }
    if span.parent_id:
        out["parentId"] = f"{span.parent_id:016x}"
    remote = _endpoint(span.peer)
    if remote is not None:
        out["remoteEndpoint"] = remote
    return out


def encode(spans: Sequence[Span], local: Local) -> bytes:
    return _json.encode([span_json(s, local) for s in spans])
