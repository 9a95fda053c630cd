"""DestinationRule connectionPool through `meshfast run`: past a limit a request gets 503 `UO`
at once — while the request under the limit is still held by the upstream — and the
overflow is counted in /stats and /stats/prometheus."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from .conftest import service_entry

DEADLINE_S = 30.0
OVERFLOW_BODY = (
    "upstream connect error or disconnect/reset before headers. reset reason: overflow\n"
)
CLUSTER = "outbound|80||held.example.com"


class HeldUpstream:
    """An HTTP/1.1 upstream that reports each request as it arrives and answers it only once
    the gate is open (keep-alive: a connection serves request after request)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.arrived: queue.Queue[str] = queue.Queue()
        self.gate = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                self.arrived.put(head.split(b" ")[1].decode())
                self.gate.wait()
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nheld")

    def next_arrival(self) -> str:
        return self.arrived.get(timeout=DEADLINE_S)

    def close(self) -> None:
        self.gate.set()
        self.listener.close()


@pytest.fixture
def held() -> Iterator[HeldUpstream]:
    up = HeldUpstream()
    yield up
    up.close()


def config(address: str, pool: str) -> str:
    return (
        service_entry("held.example.com", 80, [(address, {})])
        + f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: held}}
spec:
  host: held.example.com
  trafficPolicy:
    connectionPool: {pool}
"""
    )


def in_background(url: str, path: str) -> queue.Queue[httpx.Response]:
    """GET `path` on a thread; its response arrives on the returned queue."""
    out: queue.Queue[httpx.Response] = queue.Queue()

    def run() -> None:
        with httpx.Client(base_url=url, timeout=DEADLINE_S) as c:
            out.put(c.get(path, headers={"host": "held.example.com"}))

    threading.Thread(target=run, daemon=True).start()
    return out


def eventually(what: str, cond: object) -> None:
    """Polls `cond` (bounded by the deadline); the interval only paces the polling."""
    until = time.monotonic() + DEADLINE_S
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < until, f"deadline passed waiting for {what}"
        time.sleep(0.02)


def cluster_stats(car) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return car.stats()["clusters"][CLUSTER]  # type: ignore[no-any-return]


def test_pending_overflow_is_503_uo_at_once_and_counted(sidecar, held) -> None:  # type: ignore[no-untyped-def]
    # One worker: a worker with no connection to the endpoint may open one past
    # maxConnections (Envoy's exception), so one worker keeps the counts exact.
    car = sidecar(
        config(held.address, "{tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}"),
        workers=1,
    )
    first = in_background(car.url, "/first")
    assert held.next_arrival() == "/first"
    # The one connection is busy: the next request waits for it (pending)...
    second = in_background(car.url, "/second")
    eventually("a pending request", lambda: cluster_stats(car)["connection_pool"]["pending"] == 1)
    # ...and past the pending limit requests fail at once, the gate still closed.
    with httpx.Client(
        base_url=car.url, headers={"host": "held.example.com"}, timeout=DEADLINE_S
    ) as c:
        for i in range(5):
            r = c.get(f"/over{i}")
            assert r.status_code == 503
            assert r.headers["x-meshfast-flags"] == "UO"
            assert r.text == OVERFLOW_BODY
            assert r.headers["x-envoy-overloaded"] == "true"
    assert held.arrived.empty()
    stats = cluster_stats(car)
    assert stats["upstream_rq_pending_overflow"] == 5
    assert stats["upstream_cx_overflow"] == 1
    assert stats["response_flags"]["UO"] == 5
    prom = httpx.get(f"{car.admin}/stats/prometheus", timeout=10).text
    assert f'meshfast_cluster_upstream_rq_pending_overflow_total{{cluster="{CLUSTER}"}} 5' in prom

    held.gate.set()
    assert first.get(timeout=DEADLINE_S).text == "held"
    assert held.next_arrival() == "/second"
    assert second.get(timeout=DEADLINE_S).text == "held"
    assert held.connections == 1


def test_max_requests_overflow_is_503_uo_across_workers(sidecar, held) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(config(held.address, "{http: {http2MaxRequests: 2}}"), workers=2)
    first = [in_background(car.url, f"/held{i}") for i in range(2)]
    assert {held.next_arrival(), held.next_arrival()} == {"/held0", "/held1"}
    with httpx.Client(
        base_url=car.url, headers={"host": "held.example.com"}, timeout=DEADLINE_S
    ) as c:
        for i in range(4):
            r = c.get(f"/over{i}")
            assert (r.status_code, r.headers["x-meshfast-flags"]) == (503, "UO")
        assert cluster_stats(car)["upstream_rq_active_overflow"] == 4
        held.gate.set()
        for q in first:
            assert q.get(timeout=DEADLINE_S).status_code == 200
        eventually(
            "the slots given back", lambda: cluster_stats(car)["connection_pool"]["requests"] == 0
        )
        assert c.get("/after").status_code == 200
