"""What a Python filter sees: :class:`HttpFilter` and the request/response views it is given.

A filter is a subclass of :class:`HttpFilter` constructed once per config load as
``Class(config)`` (the validated ``Config`` Struct when the class declares one, else the raw
``spec.config`` mapping).  Its phases, each doing nothing by default:

* ``on_request(request)``: return None to continue (with ``request.headers`` and
  ``request.body`` as they are now), or a :class:`Response` to answer locally; later filters
  do not run.
* ``on_response(request, response)``: ``response.headers`` (and ``response.body``) may be
  changed (its status may not, in this version); filters run in reverse order.
* ``on_log(request, response, info)``: last; what it raises is counted, never turned into an
  error response.  It also runs when the core answered by itself after ``on_request`` (no
  healthy upstream, a timeout: ``info.flags`` says why) or a filter failed (``"FF"``).

A phase is either a plain method — run on the core's worker thread holding the GIL, so it must
be quick and never wait on I/O — or an ``async def`` run on the sidecar's Trio loop, where it
may await I/O while the worker goes on serving other requests.  Either way it must finish
within the filter's ``timeout`` (resource ``spec.timeout``, default 1s), or its request fails
with the filter's ``failureStatus`` and flag ``FF``.

``request.state`` is a dict private to one request and shared by the phases of every filter on
its route.  Bodies are seen only by filters that declare ``request_body_limit`` /
``response_body_limit`` (bytes): the core then reads the body whole first, up to the largest
limit on the route (a larger request gets 413, a larger response 500).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from meshfast.filters._impl import Headers

__all__ = ["MAX_BODY_LIMIT", "Headers", "HttpFilter", "LogInfo", "Request", "Response"]

# The most a filter may ask the core to buffer of one body.
MAX_BODY_LIMIT = 16 << 20


@dataclass(eq=False, slots=True)
class Request:
    """One request as the filters see it; ``headers`` and ``body`` may be changed in
    ``on_request``.

    ``peer`` is the client's ``ip:port`` (``[v6]:port`` for IPv6); ``route`` and
    ``cluster`` are the names the core chose (``cluster`` may be empty: redirect, direct
    response).  ``identity`` is the client's SPIFFE ID when it came over mesh mTLS
    (``spiffe://cluster.local/ns/NS/sa/SA``), else empty.  ``body`` is the whole request
    body for filters on a route where some filter declares ``request_body_limit``, else None.
    """

    method: str
    path: str
    query: str
    authority: str
    scheme: str
    peer: str
    route: str
    cluster: str
    identity: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def peer_ip(self) -> str:
        """The client's IP address, without the port or IPv6 brackets."""
        host, sep, port = self.peer.rpartition(":")
        if not sep or not port.isdigit():
            return self.peer.strip("[]")
        return host.strip("[]")


class Response:
    """A local reply (``on_request`` returns it) or the response ``on_response`` sees.

    ``headers`` takes a :class:`Headers`, a mapping or (name, value) pairs; ``body`` bytes or
    a str (sent as UTF-8).  In ``on_response``, ``body`` is the upstream's whole body when a
    filter on the route declares ``response_body_limit``, else None.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes | str = b"",
    ) -> None:
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"status must be an int, got {type(status).__name__}")
        if not 100 <= status <= 999:
            raise ValueError(f"status must be between 100 and 999, got {status}")
        self.status = status
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body: bytes | None = body.encode() if isinstance(body, str) else bytes(body)

    def __repr__(self) -> str:
        size = "no body" if self.body is None else f"body={len(self.body)} bytes"
        return f"Response({self.status}, {self.headers!r}, {size})"


@dataclass(frozen=True, slots=True)
class LogInfo:
    """What ``on_log`` is told besides the request and response.

    ``duration_ms``: from the start of ``on_request`` to the end of ``on_response``;
    ``local_reply``: a filter answered (``replied_by`` names it); ``flags``: why the core or
    a filter failure answered instead of the upstream (``"UF"``, ``"UH"``, ``"UT"``, ``"FF"``
    ...; empty when the upstream answered).
    """

    filter: str
    duration_ms: float
    local_reply: bool = False
    replied_by: str | None = None
    flags: str = ""


class HttpFilter:
    """Base class of Python HTTP filters; every phase does nothing by default.

    Subclasses may declare ``Config``, a ``msgspec.Struct`` their ``spec.config`` is
    validated and converted to when the config is loaded; ``self.config`` holds it (or the
    raw mapping).  ``name`` is the resource's ``namespace/name`` once loaded.  Any phase may
    be overridden by an ``async def`` (see the module documentation).

    ``request_body_limit`` / ``response_body_limit``: bytes of body this filter reads (0:
    none, the body streams past; at most :data:`MAX_BODY_LIMIT`).
    """

    name: str = ""
    request_body_limit: ClassVar[int] = 0
    response_body_limit: ClassVar[int] = 0

    def __init__(self, config: Any = None) -> None:
        self.config = config

    def on_request(self, request: Request) -> Response | Awaitable[Response | None] | None:
        return None

    def on_response(self, request: Request, response: Response) -> Awaitable[None] | None:
        return None

    def on_log(self, request: Request, response: Response, info: LogInfo) -> Awaitable[None] | None:
        return None
