"""Large bodies stream through with backpressure instead of being buffered."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time

from .conftest import service_entry

SIZE = 200 * 1024 * 1024
RSS_GROWTH_LIMIT_KIB = 30 * 1024


def test_200mb_download_and_upload_keep_rss_flat(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("big")
    car = sidecar(service_entry("big.example.com", 80, [(up.address, {})]))
    url = f"{car.url}/blob"
    # Warm up so that pools and allocator arenas exist before the baseline.
    subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-H", "host: big.example.com", url],
        check=True,
        timeout=30,
    )
    baseline = car.rss_kib()

    down = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{http_code}",
            "-H",
            "host: big.example.com",
            "-H",
            f"x-echo-body-bytes: {SIZE}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()
    assert down == [str(SIZE), "200"]

    upload = subprocess.run(
        f"head -c {SIZE} /dev/zero | curl -sS -T - -H 'host: big.example.com' {url}",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert json.loads(upload)["body_bytes"] == SIZE

    peak = car.rss_kib("VmHWM")
    assert peak - baseline < RSS_GROWTH_LIMIT_KIB, (baseline, peak)
    stats = car.stats()["clusters"]["outbound|80||big.example.com"]  # type: ignore[index]
    assert stats["bytes_out"] >= SIZE
    assert stats["bytes_in"] >= SIZE


def test_a_response_still_streaming_outlives_the_idle_timeout(sidecar) -> None:  # type: ignore[no-untyped-def]
    """A request is in flight until its response body's last byte: an upstream
    that pauses mid-body for five idle periods is not an idle connection."""
    upstream = socket.create_server(("127.0.0.1", 0))
    release = threading.Event()

    def serve() -> None:
        conn, _ = upstream.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            release.wait(20)
            conn.sendall(b"4\r\nlast\r\n0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    address = f"127.0.0.1:{upstream.getsockname()[1]}"
    car = sidecar(service_entry("slow.example.com", 80, [(address, {})]), "--idle-timeout", "0.3")
    host, port = car.outbound.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: slow.example.com\r\n\r\n")
        got = b""
        while b"first" not in got:
            got += client.recv(65536)
        time.sleep(1.5)  # five idle periods with the body half sent
        release.set()
        while not got.endswith(b"0\r\n\r\n"):
            chunk = client.recv(65536)
            assert chunk, f"closed mid-body: {got!r}"
            got += chunk
    assert b"last" in got
    assert car.stats()["listeners"]["outbound"]["cx_idle_timeout"] == 0  # type: ignore[index]
    thread.join(10)
    upstream.close()
