"""A raw-socket HTTP/1.1 upstream that closes idle keep-alive connections at its own
timeout (as nginx's ``keepalive_timeout`` or Node's ``keepAliveTimeout`` do), and counts
what it saw: connections accepted, requests answered, idle connections it closed.

Requests have no body (one with a body is answered 400 and closed).  A thread
per connection; :meth:`stop` closes the listener and every connection."""

from __future__ import annotations

import contextlib
import re
import socket
import threading

MAX_HEAD = 64 * 1024


class KeepAliveUpstream:
    def __init__(self, idle_ms: float | None, name: str = "ka", answers: int | None = None) -> None:
        """``idle_ms``: close a connection idle this long (None: never).  ``answers``: answer
        this many requests per connection, then read the next one and close without an
        answer (the keep-alive race, made certain); None: no such limit."""
        self.idle = None if idle_ms is None else idle_ms / 1000
        self.answers = answers
        self.dropped = 0
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
        answered = 0
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
                lowered = re.sub(rb"\r\ncontent-length: *0(?=\r\n|$)", b"", head.lower())
                if b"content-length:" in lowered or b"transfer-encoding:" in lowered:
                    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
                    return
                with self.lock:
                    self.requests += 1
                    if self.answers is not None and answered >= self.answers:
                        self.dropped += 1
                        return  # closed with the request unanswered
                answered += 1
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
