"""ServiceEntry resolution DNS: the control plane resolves names, the core gets addresses."""

from __future__ import annotations

import time

import httpx

from ..samples import YAML_TYPE


def config(echo_port: int, resolution: str = "DNS") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext}}
spec:
  hosts: [ext.example.com]
  location: MESH_EXTERNAL
  resolution: {resolution}
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - address: localhost
    ports: {{http: {echo_port}}}
"""


def test_dns_endpoint_is_resolved_by_the_control_plane(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    server = echo("dns")
    port = int(server.address.rsplit(":", 1)[1])
    car = sidecar(config(port), "--dns-refresh", "0.5")
    dump = httpx.get(f"{car.admin}/config_dump", timeout=10).json()
    [cluster] = [
        c for c in dump["snapshot"]["clusters"] if c["name"] == "outbound|80||ext.example.com"
    ]
    got = [e["address"] for e in cluster["endpoints"]]
    assert f"127.0.0.1:{port}" in got
    assert f"localhost:{port}" not in got
    assert set(got) <= {f"127.0.0.1:{port}", f"[::1]:{port}"}
    with httpx.Client(base_url=car.url, headers={"host": "ext.example.com"}, timeout=10) as c:
        for _ in range(20):
            r = c.get("/")
            assert r.status_code == 200
            assert r.json()["name"] == "dns"
    # the addresses do not change: refreshes (every 0.5 s) push nothing
    time.sleep(1.2)
    assert httpx.get(f"{car.admin}/config_dump", timeout=10).json()["version"] == 1


def test_reload_resolves_new_names_before_applying(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    server = echo("rr")
    port = int(server.address.rsplit(":", 1)[1])
    car = sidecar(config(1), "--locality", "us/east/1")
    r = httpx.post(
        f"{car.admin}/config",
        headers=YAML_TYPE,
        content=config(port, "DNS_ROUND_ROBIN"),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    dump = httpx.get(f"{car.admin}/config_dump", timeout=10).json()
    [cluster] = [
        c for c in dump["snapshot"]["clusters"] if c["name"] == "outbound|80||ext.example.com"
    ]
    [endpoint] = cluster["endpoints"]
    assert endpoint["address"] in (f"127.0.0.1:{port}", f"[::1]:{port}")
    r = httpx.get(car.url, headers={"host": "ext.example.com"}, timeout=10)
    assert r.status_code == 200
