"""The demo's pieces that need no Rust core: its config, the load driver and the report."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from meshfast import demo
from meshfast.config import CompileOptions, compile_config, load_config_text


def test_demo_config_points_the_service_entry_at_the_given_ports() -> None:
    ports = {"v1": 30001, "v2": 30002, "v3": 30003}
    config = load_config_text(demo.demo_config_text(ports), namespace=demo.NAMESPACE)
    snapshot = compile_config(config, CompileOptions(namespace=demo.NAMESPACE))
    clusters = {c.name: c for c in snapshot.clusters}
    for version, port in ports.items():
        cluster = clusters[f"outbound|9080|{version}|reviews.demo.svc.cluster.local"]
        assert [e.address for e in cluster.endpoints] == [f"127.0.0.1:{port}"]
    (table,) = snapshot.route_tables
    (vhost,) = table.virtual_hosts
    assert demo.HOST in vhost.domains
    jason, canary = vhost.routes
    assert [w.weight for w in jason.action.clusters] == [100]
    assert [w.weight for w in canary.action.clusters] == [
        demo.CANARY_WEIGHTS["v1"],
        demo.CANARY_WEIGHTS["v2"],
    ]


def test_expected_shares() -> None:
    shares = demo.expected_shares(2000)
    assert shares == pytest.approx({"v1": 72.0, "v2": 18.0, "v3": 10.0})


class _FakeSidecar(BaseHTTPRequestHandler):
    """Answers like the sidecar + echo servers would: jason gets v3, others v1/v2 in turn."""

    protocol_version = "HTTP/1.1"
    turn = Counter[str]()
    lock = threading.Lock()

    def do_GET(self) -> None:
        if self.headers.get("end-user") == "jason":
            name = "reviews-v3"
        else:
            with self.lock:
                self.turn["n"] += 1
                n = self.turn["n"]
            name = "reviews-v2" if n % 5 == 0 else "reviews-v1"
        status = 503 if self.path == "/reviews/7" else 200
        body = json.dumps({"name": name, "method": "GET", "path": self.path}).encode()
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_sidecar() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeSidecar)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_drive_load_and_report(fake_sidecar: str) -> None:
    report = demo.drive_load(fake_sidecar, 200, threads=3)
    assert report.ok == 199
    assert report.errors == Counter({"HTTP 503": 1})
    assert report.jason_sent == 20
    assert report.jason_to == Counter({"reviews-v3": 20})
    assert len(report.latencies_ms["reviews-v3"]) == 20

    text = demo.format_report(report, outbound=fake_sidecar, admin="127.0.0.1:15000")
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("  ")}
    assert rows["reviews-v3"][1:4] == ["20", "10.0%", "10.0%"]
    assert rows["errors"][1] == "1"
    assert "end-user: jason → reviews-v3: 20 of 20 requests" in text
    assert "admin: http://127.0.0.1:15000/" in text
