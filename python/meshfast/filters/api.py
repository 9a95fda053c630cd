"""What a Python filter sees: :class:`HttpFilter` and the request/response views it is given.

A filter is a subclass of :class:`HttpFilter` constructed once per config load as
``Class(config)`` (the validated ``Config`` Struct when the class declares one, else the raw
``spec.config`` mapping).  The core calls its phases on its worker threads, holding the GIL:

* ``on_request(request)``: return None to continue (with ``request.headers`` as they are now),
  or a :class:`Response` to answer locally; later filters do not run.
* ``on_response(request, response)``: ``response.headers`` may be changed (its status may not,
  in this version); filters run in reverse order.
* ``on_log(request, response, info)``: after ``on_response``; what it raises is counted, never
  turned into an error response.

``request.state`` is a dict private to one request and shared by the phases of every filter on
its route.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshfast.filters._impl import Headers

__all__ = ["Headers", "HttpFilter", "LogInfo", "Request", "Response"]


@dataclass(eq=False, slots=True)
class Request:
    """One request as the filters see it; ``headers`` may be changed in ``on_request``.

    ``peer`` is the client's ``ip:port`` (``[v6]:port`` for IPv6); ``route`` and
    ``cluster`` are the names the core chose (``cluster`` may be empty: redirect, direct
    response).
    """

    method: str
    path: str
    query: str
    authority: str
    scheme: str
    peer: str
    route: str
    cluster: str
    headers: Headers = field(default_factory=Headers)
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
    a str (sent as UTF-8).
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
        self.body = body.encode() if isinstance(body, str) else bytes(body)

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.headers!r}, body={len(self.body)} bytes)"


@dataclass(frozen=True, slots=True)
class LogInfo:
    """What ``on_log`` is told besides the request and response.

    ``duration_ms``: from the start of ``on_request`` to the end of ``on_response``;
    ``local_reply``: a filter answered (``replied_by`` names it).
    """

    filter: str
    duration_ms: float
    local_reply: bool = False
    replied_by: str | None = None


class HttpFilter:
    """Base class of Python HTTP filters; every phase does nothing by default.

    Subclasses may declare ``Config``, a ``msgspec.Struct`` their ``spec.config`` is
    validated and converted to when the config is loaded; ``self.config`` holds it (or the
    raw mapping).  ``name`` is the resource's ``namespace/name`` once loaded.
    """

    name: str = ""

    def __init__(self, config: Any = None) -> None:
        self.config = config

    def on_request(self, request: Request) -> Response | None:
        return None

    def on_response(self, request: Request, response: Response) -> None:
        return None

    def on_log(self, request: Request, response: Response, info: LogInfo) -> None:
        return None
