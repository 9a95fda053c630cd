"""Embedding meshfast: a sidecar inside a Trio program, with filters given as objects.

    python examples/embed/embed_demo.py

Starts an echo upstream for the ``reviews`` service, a sidecar on free loopback ports
configured with a ServiceEntry for it, attaches an access check before the start and a
header stamp while it serves, sends a few requests, removes the check, and prints what came
back.  The requests use the standard library's ``http.client`` in a worker thread
(``trio.to_thread``): the filters run on the sidecar's worker threads and need the GIL, so
the Trio thread must not block waiting for its own sidecar.
"""

from __future__ import annotations

import http.client
import json

import trio

import meshfast
from meshfast import _core
from meshfast.filters import HttpFilter, Request, Response

CONFIG = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: {ip}, ports: {{http: {port}}}}}]
"""


class RequireUser(HttpFilter):
    """Answers 401 itself when a request has no ``end-user`` header."""

    def on_request(self, request: Request) -> Response | None:
        if "end-user" not in request.headers:
            return Response(401, {"content-type": "text/plain"}, "who are you?")
        return None


class Stamp(HttpFilter):
    """Adds ``x-stamp`` to the requests the upstream sees."""

    def __init__(self, value: str) -> None:
        super().__init__()
        self.value = value

    def on_request(self, request: Request) -> Response | None:
        request.headers["x-stamp"] = self.value
        return None


def get(address: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """A blocking GET through the sidecar (run it in a thread)."""
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/", headers={"host": "reviews:9080", **headers})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def run() -> list[str]:
    """The demo; returns the lines it prints."""
    upstream = _core.EchoServer("127.0.0.1:0", name="reviews-v1")
    ip, _, port = upstream.address.rpartition(":")
    lines = []
    try:
        car = meshfast.Sidecar(yaml=CONFIG.format(ip=ip, port=port))
        await car.add_filter(RequireUser(), hosts=["reviews"])  # before the start
        async with car:
            status, body = await trio.to_thread.run_sync(get, car.outbound, {})
            lines.append(f"GET / without end-user -> {status} {body.decode()}")

            await car.add_filter(Stamp("embedded"))  # while serving: live once it returns
            status, body = await trio.to_thread.run_sync(get, car.outbound, {"end-user": "jason"})
            echoed = json.loads(body)
            lines.append(
                f"GET / as jason -> {status} from {echoed['name']},"
                f" x-stamp seen upstream: {echoed['headers']['x-stamp']}"
            )

            await car.remove_filter("require-user")
            status, _ = await trio.to_thread.run_sync(get, car.outbound, {})
            lines.append(f"after remove_filter: GET / without end-user -> {status}")
    finally:
        upstream.stop()
    return lines


def main() -> None:
    for line in trio.run(run):
        print(line)


if __name__ == "__main__":
    main()
