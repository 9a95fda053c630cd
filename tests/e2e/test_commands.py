"""The commands as a user runs them: `meshfast echo`, `meshfast demo`, the admin API."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from ..samples import YAML_TYPE
from .conftest import free_port, service_entry


def test_echo_command_status_and_delay_flags() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshfast",
            "echo",
            "--listen",
            f"127.0.0.1:{port}",
            "--name",
            "e",
            "--status",
            "503",
            "--delay-ms",
            "300",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "listening" in proc.stdout.readline()
        started = time.monotonic()
        r = httpx.get(f"http://127.0.0.1:{port}/p", timeout=10)
        assert time.monotonic() - started >= 0.3
        assert r.status_code == 503
        assert r.json()["name"] == "e"
        # Per-request headers override the server's defaults.
        r = httpx.get(
            f"http://127.0.0.1:{port}/p",
            headers={"x-echo-status": "201", "x-echo-delay-ms": "0"},
            timeout=10,
        )
        assert r.status_code == 201
        r = httpx.get(f"http://127.0.0.1:{port}/p", headers={"x-echo-body-bytes": "100000"})
        assert len(r.content) == 100000
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()  # type: ignore[union-attr]


def test_demo_runs_and_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "meshfast", "demo", "--requests", "400"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for expected in ("reviews-v1", "reviews-v2", "reviews-v3", "p99", "admin"):
        assert expected in out, out


def test_admin_endpoints_on_a_real_sidecar(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("a")
    car = sidecar(service_entry("a.example.com", 80, [(up.address, {})]))
    assert httpx.get(car.url, headers={"host": "a.example.com"}).status_code == 200
    assert httpx.get(f"{car.admin}/ready").text == "ready"
    prom = httpx.get(f"{car.admin}/stats/prometheus").text
    series = 'meshfast_cluster_requests_total{cluster="outbound|80||a.example.com",class="2xx"}'
    assert f"{series} 1" in prom
    clusters = httpx.get(f"{car.admin}/clusters").json()["clusters"]
    (cluster,) = [c for c in clusters if c["name"] == "outbound|80||a.example.com"]
    assert cluster["endpoints"][0]["address"] == up.address
    dump = httpx.get(f"{car.admin}/config_dump").json()
    assert dump["version"] == 1
    assert any(ln["name"] == "outbound" for ln in dump["snapshot"]["listeners"])
    r = httpx.post(f"{car.admin}/quitquitquit")
    assert r.status_code == 200
    assert car.proc.wait(timeout=20) == 0


def test_the_admin_api_of_a_real_sidecar_trusts_no_browser(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("a")
    car = sidecar(service_entry("a.example.com", 80, [(up.address, {})]))
    admin = car.admin.removeprefix("http://")
    port = admin.rsplit(":", 1)[1]
    dump_url, config_url, quit_url = (
        f"{car.admin}/{p}" for p in ("config_dump", "config", "quitquitquit")
    )
    # DNS rebinding: a page on evil.example, whose name now resolves to 127.0.0.1.
    evil = {"host": f"evil.example:{port}"}
    r = httpx.get(dump_url, headers=evil)
    assert r.status_code == 403
    assert "snapshot" not in r.text
    for host in (admin, f"localhost:{port}", "127.0.0.1", f"[::1]:{port}"):
        assert httpx.get(dump_url, headers={"host": host}).json()["version"] == 1, host
    # CSRF: what a foreign page can send, by fetch or by a form.
    other = service_entry("b.example.com", 80, [(up.address, {})])
    refused = [
        ({**YAML_TYPE, **evil}, 403),
        ({**YAML_TYPE, "origin": "http://evil.example"}, 403),
        ({**YAML_TYPE, "origin": "null"}, 403),
        ({"content-type": "text/plain"}, 415),
        ({"content-type": "application/x-www-form-urlencoded"}, 415),
        ({"content-type": "multipart/form-data; boundary=x"}, 415),
        ({}, 415),
    ]
    for headers, status in refused:
        assert httpx.post(config_url, headers=headers, content=other).status_code == status
        if headers:  # (a bodiless POST /quitquitquit, as curl -X POST sends, is fine)
            assert httpx.post(quit_url, headers=headers, content=b"a=b").status_code in (403, 415)
    dump = httpx.get(dump_url).json()
    assert (dump["version"], dump["sources"]) == (1, [str(car.config_path)])
    assert car.proc.poll() is None
    assert httpx.get(f"{car.admin}/ready").text == "ready"
    # What the admin's own clients send still works.
    same_origin = {**YAML_TYPE, "origin": car.admin}
    r = httpx.post(config_url, headers=same_origin, content=other, timeout=30)
    assert (r.status_code, r.json()) == (200, {"version": 2, "changed": True})
    assert httpx.get(car.url, headers={"host": "b.example.com"}).status_code == 200
    assert httpx.post(quit_url).status_code == 200
    assert car.proc.wait(timeout=20) == 0
