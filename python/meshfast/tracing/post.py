"""One HTTP/1.1 POST over Trio sockets and h11: the exporter's client (no new dependency).

A connection per POST: an exporter sends a batch every second or so, and a fresh
connection never finds a collector's idle timeout. Bounded: the whole exchange within
``timeout`` seconds, and at most :data:`MAX_RESPONSE` bytes of the answer are read.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

import h11
import trio

__all__ = ["MAX_RESPONSE", "Endpoint", "PostError", "parse", "post"]

MAX_RESPONSE = 64 * 1024
READ_SIZE = 16 * 1024


class PostError(Exception):
    """The collector could not be reached, or broke the exchange."""


class Endpoint(NamedTuple):
    host: str
    port: int
    target: str  # path and query
    authority: str


def parse(url: str, default_path: str) -> Endpoint:
    """An ``http://host[:port][/path]`` URL (``default_path`` when it has none).
    Raises ValueError for anything else (https is not supported: the collector is
    expected on the node or a loopback/cluster-internal address)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"{url!r}: only http:// collector URLs are supported")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    path = parts.path if parts.path not in ("", "/") else default_path
    target = f"{path}?{parts.query}" if parts.query else path
    return Endpoint(parts.hostname, port, target, parts.netloc)


async def post(endpoint: Endpoint, body: bytes, content_type: str, limit_s: float) -> int:
    """POSTs ``body``; the response's status, within ``limit_s`` seconds. Raises
    :class:`PostError` when no response came (refused, reset, timed out, not HTTP)."""
    timeout = limit_s
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
            async with stream:
                return await _exchange(stream, endpoint, body, content_type)
    except trio.TooSlowError:
        raise PostError(f"no answer within {timeout:g}s") from None
    except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
        raise PostError(str(exc) or type(exc).__name__) from None


async def _exchange(
    stream: trio.SocketStream, endpoint: Endpoint, body: bytes, content_type: str
) -> int:
    conn = h11.Connection(h11.CLIENT)
    head = h11.Request(
        method="POST",
        target=endpoint.target,
        headers=[
            ("host", endpoint.authority),
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("user-agent", "meshfast"),
            ("connection", "close"),
        ],
    )
    await stream.send_all(conn.send(head) + conn.send(h11.Data(data=body)))
    await stream.send_all(conn.send(h11.EndOfMessage()))
    status = 0
    read = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(READ_SIZE)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            read += len(event.data)
            if read > MAX_RESPONSE:
                return status  # the answer's status is all that matters
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            if status == 0:
                raise PostError("the connection closed before a response")
            return status
