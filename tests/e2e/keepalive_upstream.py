"""A raw-socket HTTP/1.1 upstream that closes idle keep-alive connections at its own
timeout (as nginx's ``keepalive_timeout`` or Node's ``keepAliveTimeout`` do), and counts
what it saw: connections accepted, requests answered, idle connections it closed.

Requests are GETs without a body (anything else is answered 400 and closed).  A thread
per connection; :meth:`stop` closes the listener and every connection."""

from __future__ import annotations

import contextlib
import socket
import threading

MAX_HEAD = 64 * 1024


class KeepAliveUpstream:
    def __init__(self, idle_ms: float | None, name: str = "ka") -> None:
        """``idle_ms``: close a connection idle this long (None: never)."""
        self.idle = None if idle_ms is None else idle_ms / 1000
        self.body = name.encode()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.accepted = 0
        self.requests = 0
        self.idle_closes = 0
        self.conns: set[socket.socket] = set()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.conns.add(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        buffer = b""
        sock.settimeout(self.idle)
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = sock.recv(65536)
                    except TimeoutError:
                        if not buffer:  # idle past our keep-alive timeout: close it
                            with self.lock:
                                self.idle_closes += 1
                            return
                        raise
                    if not data or len(buffer) > MAX_HEAD:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                request_line = head.split(b"\r\n", 1)[0]
                lowered = head.lower()
                if not request_line.startswith(b"GET ") or b"content-length:" in lowered:
                    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
                    return
                with self.lock:
                    self.requests += 1
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(self.body), self.body)
                )
        except OSError:
            return
        finally:
            with self.lock:
                self.conns.discard(sock)
            sock.close()

    def stop(self) -> None:
        self.listener.close()
        with self.lock:
            conns = list(self.conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
