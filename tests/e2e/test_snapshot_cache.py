"""The snapshot cache: a sidecar restarted with the same config serves its cached snapshot
(before the config pipeline is imported), and any change to the config is a miss."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from ..samples import BOOKINFO_NETWORKING, YAML_TYPE
from .conftest import Sidecar, service_entry

HIT = "meshfast: serving the cached snapshot"


def started(tmp_path: Path, config: str, *flags: str, name: str = "mesh.yaml") -> Sidecar:
    path = tmp_path / name
    path.write_text(config)
    car = Sidecar(path, *flags)
    return car


def msgspec_maps(car: Sidecar) -> str:
    """The lines of the sidecar's memory map naming msgspec's compiled module."""
    maps = Path(f"/proc/{car.proc.pid}/maps").read_text().splitlines()
    return "\n".join(line for line in maps if "msgspec" in line)


def log_after_stop(car: Sidecar) -> str:
    car.stop()
    return car.log_path.read_text()


def test_a_restart_with_the_same_config_serves_the_cached_snapshot(echo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    up = echo("a")
    config = service_entry("a.example.com", 80, [(up.address, {})])
    first = started(tmp_path, config)
    assert httpx.get(f"{first.url}/", headers={"host": "a.example.com"}).status_code == 200
    assert HIT not in log_after_stop(first)
    cached = list(Path(os.environ["MESHFAST_CACHE_DIR"], "snapshots").glob("*.ir"))
    assert cached, "the first start stored its snapshot"

    again = started(tmp_path, config)
    try:
        r = httpx.get(f"{again.url}/x", headers={"host": "a.example.com"})
        assert (r.status_code, r.json()["name"]) == (200, "a")
        # Serving (and its admin API) without msgspec or the IR types: the snapshot stays
        # the bytes the core was given until something asks for it.
        assert httpx.get(f"{again.admin}/stats").status_code == 200
        assert "msgspec/_core" not in msgspec_maps(again)
        dump = httpx.get(f"{again.admin}/config_dump").json()
        assert any(c["name"].endswith("a.example.com") for c in dump["snapshot"]["clusters"])
        assert "msgspec/_core" in msgspec_maps(again)
        # Reloads work although the config pipeline was not loaded at start.
        other = service_entry("b.example.com", 80, [(up.address, {})])
        assert (
            httpx.post(f"{again.admin}/config", headers=YAML_TYPE, content=other).status_code == 200
        )
        assert httpx.get(f"{again.url}/", headers={"host": "b.example.com"}).status_code == 200
    finally:
        assert HIT in log_after_stop(again)


def test_a_gateway_restarts_from_the_cache_too(echo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A gateway's ready line names its first listener, so its cached snapshot is decoded
    # at start (a sidecar's stays encoded).
    page = echo("productpage-v1")
    config = (
        service_entry("productpage", 9080, [(page.address, {"version": "v1"})])
        + "---\n"
        + (BOOKINFO_NETWORKING / "bookinfo-gateway.yaml").read_text()
    )
    flags = ("--gateway", "--gateway-bind", "127.78.0.1")
    first = started(tmp_path, config, *flags)
    assert first.outbound == "127.78.0.1:8080"
    assert HIT not in log_after_stop(first)
    again = started(tmp_path, config, *flags)
    try:
        assert again.outbound == "127.78.0.1:8080"  # the first gateway listener, as before
        r = httpx.get(
            "http://127.78.0.1:8080/productpage", headers={"host": "bookinfo.example.com"}
        )
        assert (r.status_code, r.json()["name"]) == (200, "productpage-v1")
    finally:
        assert HIT in log_after_stop(again)


def test_any_change_is_a_miss(echo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    up = echo("a")
    config = service_entry("c.example.com", 80, [(up.address, {})])
    log_after_stop(started(tmp_path, config))
    # One more space in the file: another key.
    assert HIT not in log_after_stop(started(tmp_path, config + "\n"))
    # Another compile option: another key.
    assert HIT not in log_after_stop(started(tmp_path, config, "--namespace", "other"))
    # Turned off.
    assert HIT not in log_after_stop(started(tmp_path, config, "--no-snapshot-cache"))
    assert HIT in log_after_stop(started(tmp_path, config))
