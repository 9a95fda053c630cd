"""A small, bounded HTTP/1.1 server on Trio and h11, for the admin API.

It is not on the data path (the Rust core serves traffic); it answers a handful of
operators and scrapers. What it guarantees is that no client can make it use
unbounded memory or time:

- request header block at most ``max_header_bytes`` (else 431, connection closed);
- request body at most ``max_body`` bytes (else 413, connection closed);
- each request must arrive, and each response be written, within ``timeout`` seconds;
  an idle keep-alive connection is closed after ``timeout`` seconds;
- at most ``max_connections`` connections are served at once; further ones wait in
  the kernel's accept backlog until a slot frees.

Resource handling: every accepted stream is closed when its handler returns. After an
error response the connection is closed "lingeringly" (send FIN, then read and discard a
bounded amount for a short while) so that a client still uploading a too-large body
reads the 413 instead of a connection reset.
"""

from __future__ import annotations

import http
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import h11
import trio

__all__ = [
    "Handler",
    "HttpServer",
    "Limits",
    "Request",
    "Response",
    "format_address",
    "open_listeners",
    "parse_address",
]

log = logging.getLogger("meshfast.admin")

MAX_BODY = 4 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
TIMEOUT = 30.0
MAX_CONNECTIONS = 64
READ_SIZE = 64 * 1024
# Lingering close after an error response: read and discard at most this much, this long.
LINGER_BYTES = 16 * 1024 * 1024
LINGER_SECONDS = 2.0

SERVER_HEADER = b"meshfast-admin"


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of :class:`HttpServer` (see the module docstring)."""

    max_body: int = MAX_BODY
    max_header_bytes: int = MAX_HEADER_BYTES
    timeout: float = TIMEOUT
    max_connections: int = MAX_CONNECTIONS


@dataclass(frozen=True, slots=True)
class Request:
    """One complete request: method upper-case, ``path`` without the query string;
    ``local``: the IP address the connection arrived on (``""`` when unknown)."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    local: str = ""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), decoded as Latin-1."""
        key = name.lower().encode("ascii")
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response. ``after_sent`` runs once the response has been written."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False
    after_sent: Callable[[], None] | None = field(default=None, compare=False)

    @classmethod
    def text(cls, status: int, text: str, *, close: bool = False) -> Response:
        return cls(status, text.encode("utf-8"), close=close)

    @classmethod
    def json(cls, status: int, value: object) -> Response:
        body = json.dumps(value, indent=2).encode("utf-8") + b"\n"
        return cls(status, body, content_type="application/json")


Handler = Callable[[Request], Awaitable[Response]]


def parse_address(addr: str) -> tuple[str, int]:
    """``"127.0.0.1:15000"``, ``"[::1]:15000"`` or ``":15000"`` → ``(host, port)``."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"not an address: {addr!r} (expected HOST:PORT)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


def format_address(sockname: object) -> str:
    """A socket's ``getsockname()`` as ``host:port`` (IPv6 hosts in brackets)."""
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        return str(sockname)
    host, port = str(sockname[0]), int(sockname[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def open_listeners(addr: str) -> list[trio.SocketListener]:
    """Bind ``addr`` (port 0 picks a free port)."""
    host, port = parse_address(addr)
    return await trio.open_tcp_listeners(port, host=host)


class _TooLarge(Exception):
    pass


class HttpServer:
    """Serves ``handler`` on listeners, with the bounds described in the module docstring."""

    def __init__(self, handler: Handler, limits: Limits | None = None) -> None:
        self._handler = handler
        self.limits = limits = limits or Limits()
        self.max_body = limits.max_body
        self.max_header_bytes = limits.max_header_bytes
        self.timeout = limits.timeout
        self._slots = trio.Semaphore(limits.max_connections)

    async def serve(
        self,
        listeners: Sequence[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Accepts on every listener until cancelled. Closes the listeners on the way out."""
        try:
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener, nursery)
                task_status.started()
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> NoReturn:
        while True:
            await self._slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                # EMFILE and friends: back off rather than spin (as trio.serve_listeners does).
                self._slots.release()
                log.warning("admin accept failed: %s", exc)
                await trio.sleep(0.1)
                continue
            except BaseException:
                self._slots.release()
                raise
            nursery.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            await self._serve_connection(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; nothing to tell it
        except Exception:
            log.exception("admin connection failed")
        finally:
            self._slots.release()
            await trio.aclose_forcefully(stream)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_header_bytes)
        local = _local_ip(stream)
        while True:
            request: Request | Response | None = None
            with trio.move_on_after(self.timeout):
                request = await self._read_request(conn, stream, local)
            if request is None:
                # Closed by the client, or timed out. Tell a client whose body is late.
                if conn.our_state is h11.SEND_RESPONSE:
                    await self._send_error(conn, stream, Response.text(408, "request timeout\n"))
                return
            if isinstance(request, Response):  # protocol error, too large
                await self._send_error(conn, stream, request)
                return
            try:
                response = await self._handler(request)
            except Exception:
                log.exception("admin handler failed for %s %s", request.method, request.path)
                response = Response.text(500, "internal error (see the sidecar's log)\n")
            with trio.move_on_after(self.timeout) as scope:
                await self._send(conn, stream, response, head=request.method == "HEAD")
            if scope.cancelled_caught:
                return
            if response.after_sent is not None:
                response.after_sent()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # MUST_CLOSE on either side: keep-alive is over
            conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream, local: str
    ) -> Request | Response | None:
        head: h11.Request | None = None
        body = bytearray()
        sent_continue = False
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    expecting = head is not None and conn.they_are_waiting_for_100_continue
                    if expecting and not sent_continue:
                        sent_continue = True
                        data = conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                        if data:
                            await stream.send_all(data)
                    conn.receive_data(await stream.receive_some(READ_SIZE))
                elif isinstance(event, h11.Request):
                    head = event
                    length = _content_length(event.headers)
                    if length is not None and length > self.max_body:
                        raise _TooLarge
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > self.max_body:
                        raise _TooLarge
                elif isinstance(event, h11.EndOfMessage):
                    assert head is not None
                    target = head.target.decode("ascii", "replace")
                    path, _, query = target.partition("?")
                    return Request(
                        method=head.method.decode("ascii", "replace").upper(),
                        path=path,
                        query=query,
                        headers=tuple((bytes(k), bytes(v)) for k, v in head.headers),
                        body=bytes(body),
                        local=local,
                    )
                elif isinstance(event, h11.ConnectionClosed):
                    return None
                else:  # PAUSED cannot happen while a request is read
                    return None
        except _TooLarge:
            return Response.text(
                413, f"request body larger than {self.max_body} bytes\n", close=True
            )
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            return Response.text(status, f"bad request: {exc}\n", close=True)

    async def _send(
        self, conn: h11.Connection, stream: trio.SocketStream, response: Response, *, head: bool
    ) -> None:
        headers: list[tuple[bytes, bytes]] = [
            (b"server", SERVER_HEADER),
            (b"content-type", response.content_type.encode("latin-1")),
            (b"content-length", str(len(response.body)).encode("ascii")),
            (b"cache-control", b"no-cache"),
        ]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        if response.close:
            headers.append((b"connection", b"close"))
        reason = _REASONS.get(response.status, b"")
        data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        if response.body and not head:
            data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
        data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
        await stream.send_all(data)

    async def _send_error(
        self, conn: h11.Connection, stream: trio.SocketStream, response: Response
    ) -> None:
        """Sends ``response`` (if the protocol still allows one) and closes lingeringly."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response = Response(response.status, response.body, response.content_type, close=True)
        with trio.move_on_after(LINGER_SECONDS):
            try:
                await self._send(conn, stream, response, head=False)
            except h11.LocalProtocolError:
                return
            await stream.send_eof()
            drained = 0
            while drained < LINGER_BYTES:
                chunk = await stream.receive_some(READ_SIZE)
                if not chunk:
                    break
                drained += len(chunk)


_REASONS = {int(status): status.phrase.encode("ascii") for status in http.HTTPStatus}


def _local_ip(stream: trio.SocketStream) -> str:
    try:
        sockname = stream.socket.getsockname()
    except OSError:
        return ""
    return str(sockname[0]) if isinstance(sockname, tuple) else ""


def _content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
