"""External authorization: an ``async`` filter asks an HTTP auth service about each request.

Like Envoy's ``ext_authz`` (HTTP mode): the service gets the request's method and path (as
``x-original-method`` / ``x-original-uri``) and the headers named in ``forward``; a 2xx answer
lets the request through (the service's ``x-auth-*`` response headers are added to it), any
other answer is sent back to the client as it is (status and body, 403 when the service is
down).  ``on_request`` is ``async def``, so it runs on the sidecar's Trio loop: the worker
thread serves other requests while the check is in flight, and the filter's ``timeout`` bounds
it (the request then fails with the filter's ``failureStatus``, flag ``FF``).

.. code-block:: yaml

    apiVersion: meshfast.io/v1alpha1
    kind: HttpFilter
    metadata:
      name: ext-auth
    spec:
      python: ext_auth:ExtAuth
      hosts: [reviews]
      timeout: 500ms
      failureStatus: 503
      config:
        url: http://127.0.0.1:9191/check
        forward: [authorization, cookie]
"""

from __future__ import annotations

import urllib.parse

import h11
import msgspec
import trio

from meshfast.filters import HttpFilter, Request, Response

# The most of an auth service's answer this filter reads.
MAX_ANSWER = 64 << 10


class Answer(msgspec.Struct):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


async def http_get(url: str, headers: list[tuple[str, str]]) -> Answer:
    """One HTTP/1.1 GET over a fresh connection, with h11 doing the protocol."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"ext-auth url must be http://host[:port]/path, got {url!r}")
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = h11.Connection(h11.CLIENT)
    stream = await trio.open_tcp_stream(parts.hostname, port)
    async with stream:
        host = parts.netloc
        request = h11.Request(
            method="GET",
            target=target,
            headers=[("host", host), ("connection", "close"), *headers],
        )
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        status, got, body = 0, [], bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(16384))
            elif isinstance(event, h11.Response):
                status = event.status_code
                got = [(k.decode(), v.decode("latin-1")) for k, v in event.headers]
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_ANSWER:
                    raise ValueError("the auth service's answer is too large")
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return Answer(status, got, bytes(body))


class ExtAuth(HttpFilter):
    class Config(msgspec.Struct, forbid_unknown_fields=True):
        url: str
        forward: tuple[str, ...] = ("authorization",)

    config: Config

    async def on_request(self, request: Request) -> Response | None:
        headers = [("x-original-method", request.method)]
        uri = request.path + (f"?{request.query}" if request.query else "")
        headers.append(("x-original-uri", uri))
        for name in self.config.forward:
            headers += [(name, v) for v in request.headers.getall(name)]
        try:
            answer = await http_get(self.config.url, headers)
        except OSError:
            return Response(403, {"content-type": "text/plain"}, "auth service unavailable\n")
        if 200 <= answer.status < 300:
            for name, value in answer.headers:
                if name.lower().startswith("x-auth-"):
                    request.headers[name] = value
            return None
        kept = [
            (k, v) for k, v in answer.headers if k.lower() in ("content-type", "www-authenticate")
        ]
        return Response(answer.status if answer.status >= 200 else 403, kept, answer.body)
