"""Large bodies stream through with backpressure instead of being buffered."""

from __future__ import annotations

import json
import subprocess

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
