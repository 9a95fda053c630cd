"""`meshfast run --access-log`: one JSON line per request, field by field, written off the
workers (a sink nobody reads drops lines, counted, and requests go on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Sidecar, free_port, service_entry

DEADLINE_S = 30.0
ALL_FIELDS = {
    "start_time",
    "method",
    "path",
    "protocol",
    "response_code",
    "response_flags",
    "bytes_received",
    "bytes_sent",
    "duration",
    "upstream_service_time",
    "upstream_host",
    "upstream_cluster",
    "route_name",
    "x_forwarded_for",
    "user_agent",
    "request_id",
    "authority",
    "trace_id",
    "downstream_peer_identity",
    "downstream_remote_address",
}


def access_stats(car: Sidecar) -> dict[str, int]:
    return car.stats()["access_log"]  # type: ignore[return-value]


def wait_written(car: Sidecar, n: int) -> None:
    """Until the writer has written `n` lines (the log is written off the request path)."""
    deadline = time.monotonic() + DEADLINE_S
    while access_stats(car)["written"] < n:
        assert time.monotonic() < deadline, access_stats(car)
        time.sleep(0.05)


def read_lines(path: Path, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [json.loads(line) for line in text.splitlines()]
        if len(lines) >= n or time.monotonic() > deadline:
            assert len(lines) == n, text
            return lines
        time.sleep(0.05)


def test_lines_match_requests_field_by_field(echo, sidecar, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    up = echo("v1")
    dead = f"127.0.0.1:{free_port()}"
    config = (
        service_entry("a.example.com", 80, [(up.address, {})])
        + "---\n"
        + service_entry("dead.example.com", 80, [(dead, {})])
        + "---\n"
        + service_entry("b.example.com", 80, [(up.address, {"version": "v1"})])
        + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b}
spec:
  host: b.example.com
  subsets:
  - {name: v9, labels: {version: v9}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b}
spec:
  hosts: [b.example.com]
  http:
  - name: nobody
    route: [{destination: {host: b.example.com, subset: v9}}]
"""
    )
    log = tmp_path / "access.log"
    car = sidecar(config, "--access-log", str(log))
    before = datetime.now(UTC) - timedelta(seconds=1)
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    with httpx.Client(base_url=car.url) as c:
        ok = c.get(
            "/hello?x=1",
            headers={
                "host": "a.example.com",
                "user-agent": "t-agent/1",
                "x-forwarded-for": "10.1.2.3",
                "x-request-id": "rid-1",
                "traceparent": f"00-{trace}-00f067aa0ba902b7-01",
            },
        )
        assert ok.status_code == 200
        service_time = int(ok.headers["x-meshfast-upstream-service-time"])
        nr = c.get("/nowhere", headers={"host": "unknown.example.com"})
        assert (nr.status_code, nr.headers["x-meshfast-flags"]) == (404, "NR")
        uf = c.get("/", headers={"host": "dead.example.com"})
        assert (uf.status_code, uf.headers["x-meshfast-flags"]) == (503, "UF")
        uh = c.get("/", headers={"host": "b.example.com"})
        assert (uh.status_code, uh.headers["x-meshfast-flags"]) == (503, "UH")
        body = b"x" * 12345
        post = c.post("/upload", content=body, headers={"host": "a.example.com"})
        assert post.json()["body_bytes"] == len(body)
    # An HTTP/2 (h2c, prior knowledge) request from curl.
    h2 = subprocess.run(
        ["curl", "-s", "--http2-prior-knowledge", "-H", "host: a.example.com", f"{car.url}/h2"],
        capture_output=True,
        timeout=DEADLINE_S,
        check=True,
    )
    assert json.loads(h2.stdout)["protocol"] in {"HTTP/1.1", "HTTP/2"}
    after = datetime.now(UTC) + timedelta(seconds=1)
    lines = read_lines(log, 6)
    for line in lines:
        assert set(line) == ALL_FIELDS, line
        started = datetime.strptime(line["start_time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert before <= started.replace(tzinfo=UTC) <= after
        assert isinstance(line["duration"], int)
        assert line["duration"] >= 0
        assert line["downstream_remote_address"].startswith("127.0.0.1:")
        assert line["downstream_peer_identity"] is None  # plaintext
    by_path = {line["path"]: line for line in lines}

    line = by_path["/hello?x=1"]
    assert line["method"] == "GET"
    assert line["protocol"] == "HTTP/1.1"
    assert line["response_code"] == 200
    assert line["response_flags"] == "-"
    assert line["bytes_received"] == 0
    assert line["bytes_sent"] == len(ok.content)
    assert line["upstream_service_time"] == service_time
    assert line["upstream_service_time"] <= line["duration"]
    assert line["upstream_host"] == up.address
    assert line["upstream_cluster"] == "outbound|80||a.example.com"
    assert line["route_name"]
    assert line["x_forwarded_for"] == "10.1.2.3"
    assert line["user_agent"] == "t-agent/1"
    assert line["request_id"] == "rid-1"
    assert line["authority"] == "a.example.com"
    assert line["trace_id"] == trace

    line = by_path["/nowhere"]
    assert (line["response_code"], line["response_flags"]) == (404, "NR")
    assert line["upstream_host"] is None
    assert line["upstream_cluster"] is None
    assert line["route_name"] is None
    assert line["upstream_service_time"] is None
    assert line["bytes_sent"] == len(nr.content)
    assert line["request_id"] == nr.headers["x-request-id"]  # generated by the sidecar
    assert line["trace_id"] is None
    assert line["user_agent"].startswith("python-httpx/")

    uf_line, uh_line = (
        next(x for x in lines if x["authority"] == host)
        for host in ("dead.example.com", "b.example.com")
    )
    assert (uf_line["response_code"], uf_line["response_flags"]) == (503, "UF")
    assert uf_line["upstream_host"] == dead  # the endpoint it tried
    assert uf_line["upstream_cluster"] == "outbound|80||dead.example.com"
    assert uf_line["bytes_sent"] == len(uf.content)
    assert (uh_line["response_code"], uh_line["response_flags"]) == (503, "UH")
    assert uh_line["upstream_host"] is None
    assert uh_line["upstream_cluster"] == "outbound|80|v9|b.example.com"
    assert uh_line["route_name"].endswith("nobody")

    line = by_path["/upload"]
    assert (line["method"], line["response_code"]) == ("POST", 200)
    assert line["bytes_received"] == len(body)
    assert line["bytes_sent"] == len(post.content)

    line = by_path["/h2"]
    assert (line["protocol"], line["response_code"]) == ("HTTP/2", 200)
    assert line["bytes_sent"] == len(h2.stdout)
    assert line["user_agent"].startswith("curl/")
    assert line["authority"] == "a.example.com"

    assert access_stats(car) == {"written": 6, "dropped": 0, "write_errors": 0}
    prom = httpx.get(f"{car.admin}/stats/prometheus", timeout=10).text
    assert "meshfast_access_log_written_total 6" in prom
    assert "meshfast_access_log_dropped_total 0" in prom


def test_fields_are_chosen_and_ordered(echo, sidecar, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    up = echo("v1")
    log = tmp_path / "access.log"
    car = sidecar(
        service_entry("a.example.com", 80, [(up.address, {})]),
        "--access-log",
        str(log),
        "--access-log-fields",
        "response_code,path,method",
    )
    with httpx.Client(base_url=car.url, headers={"host": "a.example.com"}) as c:
        assert c.get("/one").status_code == 200
        assert c.delete("/two").status_code == 200
    (first, second) = log_lines = read_lines(log, 2)
    assert [list(x) for x in log_lines] == [["response_code", "path", "method"]] * 2
    assert {(x["method"], x["path"]) for x in (first, second)} == {
        ("GET", "/one"),
        ("DELETE", "/two"),
    }
    # Raw text too: the order is the order asked for.
    assert log.read_text().splitlines()[0].startswith('{"response_code":200,"path":"/')


def test_dash_writes_to_stdout(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("v1")
    car = sidecar(
        service_entry("a.example.com", 80, [(up.address, {})]),
        "--access-log",
        "-",
        "--access-log-fields",
        "method,path,response_code",
    )
    with httpx.Client(base_url=car.url, headers={"host": "a.example.com"}) as c:
        for i in range(3):
            assert c.get(f"/s{i}").status_code == 200
    wait_written(car, 3)
    car.proc.terminate()
    assert car.proc.stdout is not None
    out, _ = car.proc.communicate(timeout=DEADLINE_S)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines == [{"method": "GET", "path": f"/s{i}", "response_code": 200} for i in range(3)]


def test_a_sink_nobody_reads_drops_lines_and_requests_go_on(echo, sidecar, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A FIFO that a reader opened but never reads from: the writer blocks once the pipe's
    buffer is full, its queue fills, and from then on lines are dropped, counted, while
    every request still completes."""
    up = echo("v1")
    fifo = tmp_path / "blocked.fifo"
    os.mkfifo(fifo)
    # The reader end, held open and never read (opened non-blocking: no writer yet).
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        car = sidecar(
            service_entry("a.example.com", 80, [(up.address, {})]),
            "--access-log",
            str(fifo),
        )
        url = f"{car.url}/blocked-sink-request-with-a-long-path-" + "p" * 200
        # Enough lines to fill the pipe (64 KiB) and the writer's queue (8192 lines).
        requests = 12_000
        h2load = subprocess.run(
            [
                "h2load",
                "-n",
                str(requests),
                "-c",
                "4",
                "-m",
                "8",
                "--h1",
                "-H",
                ":authority: a.example.com",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert h2load.returncode == 0, h2load.stderr
        assert f"{requests} succeeded, 0 failed, 0 errored" in h2load.stdout, h2load.stdout
        stats = access_stats(car)
        assert stats["dropped"] > 0, stats
        # Every request was either queued (written or waiting) or dropped; nothing else.
        assert stats["dropped"] <= requests - 8192 + 1, stats
        # And the sidecar still answers at once, its log still blocked.
        with httpx.Client(base_url=car.url, headers={"host": "a.example.com"}) as c:
            assert c.get("/after").status_code == 200
        deadline = time.monotonic() + DEADLINE_S
        while access_stats(car)["dropped"] == stats["dropped"]:
            assert time.monotonic() < deadline, "the request after was not counted"
            time.sleep(0.05)
    finally:
        os.close(reader)


def test_bad_fields_and_paths_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "m.yaml"
    config.write_text(service_entry("a.example.com", 80, [("127.0.0.1:9", {})]))
    run = [
        sys.executable,
        "-m",
        "meshfast",
        "run",
        "-c",
        str(config),
        "--admin",
        "127.0.0.1:0",
        "--outbound",
        "127.0.0.1:0",
    ]
    bad = subprocess.run(
        [*run, "--access-log", "-", "--access-log-fields", "method,nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert 'unknown access log field "nope"' in bad.stderr
    missing = subprocess.run(
        [*run, "--access-log", str(tmp_path / "no" / "such" / "dir.log")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert "cannot open the access log" in missing.stderr
    alone = subprocess.run(
        [*run, "--access-log-fields", "method"], capture_output=True, text=True, timeout=60
    )
    assert alone.returncode == 2
    assert "--access-log-fields needs --access-log" in alone.stderr


pytestmark = pytest.mark.e2e
