"""WebSocket upgrades are tunnelled both ways; a refused upgrade stays HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.sync.client import connect

from .conftest import free_port, service_entry


@pytest.fixture
def ws_server() -> Iterator[str]:
    """A real WebSocket echo server on its own event loop thread."""
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Future[None] = loop.create_future()

    async def echo(conn: ServerConnection) -> None:
        async for message in conn:
            await conn.send(f"echo:{message}")

    async def main() -> None:
        async with serve(echo, "127.0.0.1", port):
            started.set()
            await stop

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
    thread.start()
    assert started.wait(10)
    yield f"127.0.0.1:{port}"
    loop.call_soon_threadsafe(stop.set_result, None)
    thread.join(10)
    loop.close()


def test_websocket_messages_flow_both_ways(ws_server: str, sidecar) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(service_entry("ws.example.com", 80, [(ws_server, {})]))
    host, port = car.outbound.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    with connect("ws://ws.example.com/chat", sock=sock, open_timeout=10) as ws:
        for i in range(20):
            ws.send(f"m{i}")
            assert ws.recv(timeout=10) == f"echo:m{i}"
        ws.send("x" * 100_000)
        assert ws.recv(timeout=10) == "echo:" + "x" * 100_000


def test_upgrade_refused_by_upstream_stays_http(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    """The echo upstream ignores Upgrade and answers 200: no tunnel, keep-alive HTTP."""
    up = echo("plain")
    car = sidecar(service_entry("plain.example.com", 80, [(up.address, {})]))
    with httpx.Client(base_url=car.url, headers={"host": "plain.example.com"}) as c:
        r = c.get("/", headers={"connection": "upgrade", "upgrade": "websocket"})
        assert r.status_code == 200
        assert r.json()["headers"]["upgrade"] == "websocket"
        # The same connection still speaks HTTP.
        assert c.get("/again").json()["path"] == "/again"


def test_a_tunnel_stays_counted_as_a_connection(ws_server: str, sidecar) -> None:  # type: ignore[no-untyped-def]
    """After the 101, hyper lets go of the connection but the tunnel carries on:
    it still counts against the listener's `cx_active` and the connection cap."""
    car = sidecar(service_entry("ws.example.com", 80, [(ws_server, {})]), "--max-connections", "1")
    host, port = car.outbound.rsplit(":", 1)

    def listener() -> dict[str, int]:
        return car.stats()["listeners"]["outbound"]  # type: ignore[no-any-return]

    sock = socket.create_connection((host, int(port)), timeout=10)
    with connect("ws://ws.example.com/chat", sock=sock, open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo:hello"
        assert listener()["cx_active"] == 1
        # The cap is reached: a second client is closed as accepted.
        with socket.create_connection((host, int(port)), timeout=10) as other:
            other.sendall(b"GET / HTTP/1.1\r\nHost: ws.example.com\r\n\r\n")
            # Closed with our request unread: a FIN, or a reset.
            with contextlib.suppress(ConnectionResetError):
                assert other.recv(100) == b""
        assert listener()["cx_overflow"] == 1
        ws.send("still")
        assert ws.recv(timeout=10) == "echo:still"
    deadline = time.monotonic() + 20
    while listener()["cx_active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listener()["cx_active"] == 0
