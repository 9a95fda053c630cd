"""Long-lived streams for reload tests: an HTTP/2 stream (raw h2 client, a streaming h2
upstream), a gRPC bidi stream (grpcio both ends) and a WebSocket (websockets both ends).

Each upstream answers every message with ``NAME:message``, so a test sees which upstream
(which config) a stream is bound to.  Every wait has a bound; every server is stopped by
the fixture that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Protocol

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
from websockets.asyncio.server import ServerConnection, serve
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

TIMEOUT_S = 20.0


class Stream(Protocol):
    """One open stream through the sidecar: send a message, get the upstream's answer."""

    def exchange(self, message: str) -> str: ...
    def close(self) -> None: ...


class Upstream(Protocol):
    address: str

    def stop(self) -> None: ...


# === HTTP/2: a raw h2c server that answers each DATA frame with one of its own ===


class H2Upstream:
    """An h2c server: a request's DATA frames are each answered at once with
    ``NAME:data`` on the response stream, which stays open until the request ends (then
    trailers). A thread per connection; stopped by closing the listening socket."""

    def __init__(self, name: str) -> None:
        self.name = name.encode()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        try:
            sock.sendall(conn.data_to_send())
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        conn.send_headers(
                            event.stream_id, [(":status", "200"), ("content-type", "text/plain")]
                        )
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                        if event.data:
                            conn.send_data(event.stream_id, self.name + b":" + event.data)
                    elif isinstance(event, h2.events.StreamEnded):
                        # (The stream may be reset already: a client closing everything.)
                        with contextlib.suppress(h2.exceptions.StreamClosedError):
                            conn.send_headers(event.stream_id, [("x-done", "1")], end_stream=True)
                sock.sendall(conn.data_to_send())
        except OSError:
            return
        finally:
            sock.close()

    def stop(self) -> None:
        self.listener.close()
        for sock in self.conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class H2Stream:
    """One h2c stream through the sidecar: HEADERS, then a DATA frame per message."""

    def __init__(self, outbound: str, authority: str) -> None:
        host, port = outbound.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            self.sid,
            [
                (":method", "POST"),
                (":path", "/stream"),
                (":scheme", "http"),
                (":authority", authority),
            ],
        )
        self.sock.sendall(self.conn.data_to_send())
        self.status: str | None = None

    def exchange(self, message: str) -> str:
        self.conn.send_data(self.sid, message.encode())
        self.sock.sendall(self.conn.data_to_send())
        while True:
            data = self.sock.recv(65536)
            assert data, "the sidecar closed the HTTP/2 connection"
            answer = None
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    self.status = dict(event.headers)[b":status"].decode()
                elif isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, self.sid)
                    answer = event.data.decode()
                elif isinstance(event, h2.events.StreamReset | h2.events.StreamEnded):
                    raise AssertionError(f"the HTTP/2 stream ended: {event}")
            self.sock.sendall(self.conn.data_to_send())
            if answer is not None:
                assert self.status == "200", self.status
                return answer

    def close(self) -> None:
        try:
            self.conn.end_stream(self.sid)
            self.conn.close_connection()
            self.sock.sendall(self.conn.data_to_send())
        except OSError:
            pass
        self.sock.close()


# === gRPC: a bidi method answering each request ===


class _Bidi(grpc.GenericRpcHandler):
    def __init__(self, name: str) -> None:
        self.name = name.encode()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method == "/test.Echo/Bidi":
            return grpc.stream_stream_rpc_method_handler(
                lambda reqs, ctx: (self.name + b":" + r for r in reqs)
            )
        return None


class GrpcUpstream:
    def __init__(self, name: str) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((_Bidi(name),))
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None)


class GrpcStream:
    """A grpcio bidi call through the sidecar; requests are fed from a bounded queue."""

    def __init__(self, outbound: str, authority: str) -> None:
        self.channel = grpc.insecure_channel(
            outbound, options=[("grpc.default_authority", authority)]
        )
        self.requests: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        bidi = self.channel.stream_stream("/test.Echo/Bidi")
        self.call = bidi(self._feed(), timeout=600)

    def _feed(self) -> Iterator[bytes]:
        while (item := self.requests.get(timeout=600)) is not None:
            yield item

    def exchange(self, message: str) -> str:
        self.requests.put(message.encode(), timeout=TIMEOUT_S)
        reply: bytes = next(self.call)
        return reply.decode()

    def close(self) -> None:
        self.requests.put(None, timeout=TIMEOUT_S)
        self.call.cancel()
        self.channel.close()


# === WebSocket ===


class WsUpstream:
    """A websockets echo server on its own event loop thread: ``NAME:message``."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.done: asyncio.Future[None] = self.loop.create_future()
        sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{sock.getsockname()[1]}"

        async def echo(conn: ServerConnection) -> None:
            async for message in conn:
                await conn.send(f"{name}:{message}")

        async def main() -> None:
            async with serve(echo, sock=sock):
                started.set()
                await self.done

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),))
        self.thread.start()
        assert started.wait(TIMEOUT_S)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.done.set_result, None)
        self.thread.join(TIMEOUT_S)
        self.loop.close()


class WsStream:
    def __init__(self, outbound: str, authority: str) -> None:
        host, port = outbound.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
        self.stack = contextlib.ExitStack()
        self.ws: ClientConnection = self.stack.enter_context(
            ws_connect(f"ws://{authority}/chat", sock=sock, open_timeout=TIMEOUT_S)
        )

    def exchange(self, message: str) -> str:
        self.ws.send(message)
        answer = self.ws.recv(timeout=TIMEOUT_S)
        assert isinstance(answer, str)
        return answer

    def close(self) -> None:
        self.stack.close()


# kind -> (upstream class, stream class, ServiceEntry protocol)
KINDS: dict[str, tuple[type[Upstream], type[Stream], str]] = {
    "http2": (H2Upstream, H2Stream, "HTTP2"),
    "grpc": (GrpcUpstream, GrpcStream, "GRPC"),
    "websocket": (WsUpstream, WsStream, "HTTP"),
}
