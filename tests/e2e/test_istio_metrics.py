"""Istio's standard metrics at `/stats/prometheus`: scraped after known traffic, every
series, count and label compared."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import httpx

from .conftest import Sidecar, free_port, service_entry
from .test_mtls import ROOT_ID, certs, client_config  # noqa: F401  (certs: a fixture)

DEADLINE_S = 30.0
SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_version",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
DURATION_LE = [
    "0.5",
    "1",
    "5",
    "10",
    "25",
    "50",
    "100",
    "250",
    "500",
    "1000",
    "2500",
    "5000",
    "10000",
    "30000",
    "60000",
    "300000",
    "600000",
    "1.8e+06",
    "3.6e+06",
    "+Inf",
]
BYTES_LE = ["1", "10", "100", "1000", "10000", "100000", "1e+06", "1e+07", "1e+08", "1e+09", "+Inf"]

Sample = tuple[str, dict[str, str], float]


def scrape(car: Sidecar) -> list[Sample]:
    text = httpx.get(f"{car.admin}/stats/prometheus", timeout=10).text
    samples = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and m.group(1).startswith("istio_"):
            samples.append((m.group(1), dict(LABEL.findall(m.group(2))), float(m.group(3))))
    return samples


def requests_total(samples: list[Sample]) -> dict[tuple[str, ...], float]:
    """istio_requests_total by its labels (in Istio's order)."""
    out = {}
    for name, labels, value in samples:
        if name == "istio_requests_total":
            assert tuple(labels) == LABELS, labels
            out[tuple(labels.values())] = value
    return out


def scrape_until(car: Sidecar, total: int) -> list[Sample]:
    """Requests are counted when their response body has ended: wait for all of them."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        samples = scrape(car)
        if sum(requests_total(samples).values()) >= total or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def series(samples: list[Sample], name: str, labels: dict[str, str]) -> dict[str, float]:
    """One histogram's samples: {le or "sum"/"count": value}."""
    out = {}
    for n, ls, value in samples:
        if n.startswith(name) and {k: v for k, v in ls.items() if k != "le"} == labels:
            out[ls.get("le", n.removeprefix(name + "_"))] = value
    return out


def expect_histogram(
    h: dict[str, float], les: list[str], count: int, observed: list[float], sum_: float | None
) -> None:
    """Every bucket of `h` is the number of `observed` values at or under its bound."""
    assert list(h)[: len(les)] == les, h
    for le in les:
        bound = float("inf") if le == "+Inf" else float(le)
        assert h[le] == sum(1 for v in observed if v <= bound), (le, h)
    assert h["count"] == count
    if sum_ is not None:
        assert h["sum"] == sum_


def source(**over: str) -> dict[str, str]:
    base = {
        "reporter": "source",
        "source_workload": "front-v2",
        "source_workload_namespace": "shop",
        "source_principal": "unknown",
        "source_app": "front",
        "source_version": "v2",
        "destination_workload": "unknown",
        "destination_workload_namespace": "unknown",
        "destination_principal": "unknown",
        "destination_service": "reviews.default.svc.cluster.local",
        "destination_service_name": "reviews",
        "destination_service_namespace": "default",
        "destination_version": "unknown",
        "request_protocol": "http",
        "response_code": "200",
        "grpc_response_status": "",
        "response_flags": "-",
        "connection_security_policy": "unknown",
    }
    return base | over


def test_outbound_requests_and_tcp_are_counted_with_istios_labels(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    up = echo("reviews")
    dead = f"127.0.0.1:{free_port()}"
    tcp_port = free_port()
    config = "---\n".join(
        [
            service_entry("reviews.default.svc.cluster.local", 80, [(up.address, {})]),
            service_entry("dead.example.com", 80, [(dead, {})]),
            service_entry("db.example.com", tcp_port, [(up.address, {})], protocol="TCP"),
        ]
    )
    car = sidecar(
        config, "--namespace", "shop", "--labels", "app=front,version=v2", "--workload", "front-v2"
    )
    reviews = {"host": "reviews.default.svc.cluster.local"}
    body = b"b" * 2000
    with httpx.Client(base_url=car.url) as c:
        ok = [c.get(f"/r{i}", headers=reviews) for i in range(3)]
        ok.append(c.post("/upload", content=body, headers=reviews))
        assert [r.status_code for r in ok] == [200] * 4
        failed = c.get("/", headers=reviews | {"x-echo-status": "500"})
        assert failed.status_code == 500
        for _ in range(2):
            uf = c.get("/", headers={"host": "dead.example.com"})
            assert (uf.status_code, uf.headers["x-meshfast-flags"]) == (503, "UF")
        nr = c.get("/", headers={"host": "nowhere.example.com"})
        assert nr.status_code == 404
    sent = b"GET /tcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=10) as s:
        s.sendall(sent)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200")

    samples = scrape_until(car, 8)
    dead_service = {
        "destination_service": "dead.example.com",
        "destination_service_name": "dead.example.com",
        "destination_service_namespace": "unknown",
    }
    no_service = dict.fromkeys(dead_service, "unknown")
    expected = {
        tuple(source().values()): 4,
        tuple(source(response_code="500").values()): 1,
        tuple(source(**dead_service, response_code="503", response_flags="UF").values()): 2,
        tuple(source(**no_service, response_code="404", response_flags="NR").values()): 1,
    }
    assert requests_total(samples) == expected

    labels = source()
    durations = series(samples, "istio_request_duration_milliseconds", labels)
    assert durations["count"] == 4
    assert durations["+Inf"] == 4
    assert [durations[le] for le in DURATION_LE] == sorted(durations[le] for le in DURATION_LE)
    assert durations["sum"] >= 0
    expect_histogram(
        series(samples, "istio_request_bytes", labels), BYTES_LE, 4, [0, 0, 0, 2000], 2000
    )
    sizes = [len(r.content) for r in ok]
    expect_histogram(
        series(samples, "istio_response_bytes", labels), BYTES_LE, 4, sizes, sum(sizes)
    )
    uf_labels = source(**dead_service, response_code="503", response_flags="UF")
    uf_sizes = [len(uf.content)] * 2
    expect_histogram(
        series(samples, "istio_response_bytes", uf_labels), BYTES_LE, 2, uf_sizes, sum(uf_sizes)
    )

    # TCP: wait for the connection's close to be counted.
    tcp_labels = {
        k: v for k, v in source().items() if k not in {"response_code", "grpc_response_status"}
    } | {
        "destination_service": "db.example.com",
        "destination_service_name": "db.example.com",
        "destination_service_namespace": "unknown",
        "request_protocol": "tcp",
    }
    deadline = time.monotonic() + DEADLINE_S
    while True:
        tcp = {n: v for n, ls, v in scrape(car) if n.startswith("istio_tcp_") and ls == tcp_labels}
        if tcp.get("istio_tcp_connections_closed_total") == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert tcp == {
        "istio_tcp_connections_opened_total": 1,
        "istio_tcp_connections_closed_total": 1,
        "istio_tcp_received_bytes_total": len(sent),
        "istio_tcp_sent_bytes_total": len(received),
    }
    prom = httpx.get(f"{car.admin}/stats/prometheus", timeout=10).text
    assert "meshfast_istio_series_overflow_total 0" in prom
    # The existing counters stay.
    dead_5xx = (
        'meshfast_cluster_requests_total{cluster="outbound|80||dead.example.com",class="5xx"}'
    )
    assert f"{dead_5xx} 2" in prom


def test_mtls_request_is_counted_on_both_sides_with_both_identities(
    echo,  # type: ignore[no-untyped-def]
    sidecar,
    certs: Path,  # noqa: F811
) -> None:
    app = echo("reviews-app")
    inbound = f"127.0.0.1:{free_port()}"
    server = sidecar(
        service_entry("unused.example.com", 80, [(app.address, {})]),
        "--app",
        app.address,
        "--inbound",
        inbound,
        "--certs",
        str(certs / "reviews"),
        "--namespace",
        "default",
        "--labels",
        "app=reviews,version=v1",
    )
    client = sidecar(
        client_config(inbound),
        "--certs",
        str(certs / "productpage"),
        "--namespace",
        "default",
        "--labels",
        "app=productpage,version=v1",
    )
    for _ in range(2):
        r = httpx.get(f"{client.url}/", headers={"host": "reviews:9080"}, timeout=30)
        assert r.status_code == 200, r.text
    plain = httpx.get(f"http://{inbound}/", timeout=30)  # PERMISSIVE: plaintext is served too
    assert plain.status_code == 200

    assert requests_total(scrape_until(client, 2)) == {
        tuple(
            source(
                source_workload="productpage",
                source_workload_namespace="default",
                source_principal=f"{ROOT_ID}/productpage",
                source_app="productpage",
                source_version="v1",
                destination_service_name="reviews",
            ).values()
        ): 2
    }
    destination = {
        "reporter": "destination",
        "source_workload": "unknown",
        "source_workload_namespace": "default",
        "source_principal": f"{ROOT_ID}/productpage",
        "source_app": "unknown",
        "source_version": "unknown",
        "destination_workload": "reviews",
        "destination_workload_namespace": "default",
        "destination_principal": f"{ROOT_ID}/reviews",
        "destination_service": "unknown",
        "destination_service_name": "unknown",
        "destination_service_namespace": "unknown",
        "destination_version": "v1",
        "request_protocol": "http",
        "response_code": "200",
        "grpc_response_status": "",
        "response_flags": "-",
        "connection_security_policy": "mutual_tls",
    }
    plaintext = destination | {
        "source_workload_namespace": "unknown",
        "source_principal": "unknown",
        "connection_security_policy": "none",
    }
    assert requests_total(scrape_until(server, 3)) == {
        tuple(destination.values()): 2,
        tuple(plaintext.values()): 1,
    }
