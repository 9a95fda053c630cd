"""SIGHUP and ``--watch`` load the ``-c`` files again: an edit is served, a broken edit is
refused with FILE:LINE in the log while the old config keeps serving, an edit that
compiles to the same config changes (and resets) nothing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from .conftest import service_entry, web_mesh

DEADLINE_S = 30.0  # generous: the bound the tests wait for a condition, never asserted


def mesh(addresses: list[str], subset: str) -> str:
    """web.example.com, all of it to ``subset`` ("v1" or "v2")."""
    return web_mesh(addresses, (100, 0) if subset == "v1" else (0, 100))


def broken(config: str) -> tuple[str, int]:
    """``config`` with an unknown field in the VirtualService, and that field's line."""
    text = config.replace(
        "  hosts: [web.example.com]\n  http:",
        "  hosts: [web.example.com]\n  bogusField: 1\n  http:",
    )
    line = text.splitlines().index("  bogusField: 1") + 1
    return text, line


def wait_for(what: str, condition: Callable[[], bool]) -> float:
    """Waits (bounded) until ``condition()``; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < DEADLINE_S:
        if condition():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"not within {DEADLINE_S} s: {what}")


def served(car) -> str:  # type: ignore[no-untyped-def]
    r = httpx.get(car.url, headers={"host": "web.example.com"}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["name"])


def reloads(car) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return car.stats()["reloads"]  # type: ignore[no-any-return]


def replace_file(path: Path, text: str) -> None:
    """As editors and ConfigMap updates do: write a temporary file, rename it over."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_sighup_serves_an_edit(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    addresses = [echo("v1").address, echo("v2").address]
    car = sidecar(mesh(addresses, "v1"))
    assert served(car) == "v1"
    car.config_path.write_text(mesh(addresses, "v2"))
    car.proc.send_signal(signal.SIGHUP)
    wait_for("the edit is served", lambda: served(car) == "v2")
    wait_for(
        "the reload is logged", lambda: "SIGHUP: version 2 serving" in car.log_path.read_text()
    )
    assert reloads(car) == {"applied": 1, "unchanged": 0, "refused": 0}
    assert car.proc.poll() is None


def test_sighup_refuses_a_broken_edit_and_keeps_serving(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    addresses = [echo("v1").address, echo("v2").address]
    car = sidecar(mesh(addresses, "v1"))
    text, line = broken(mesh(addresses, "v2"))
    car.config_path.write_text(text)
    car.proc.send_signal(signal.SIGHUP)
    wait_for("the refusal is counted", lambda: reloads(car)["refused"] == 1)
    log = car.log_path.read_text()
    assert "SIGHUP: config refused, version 1 keeps serving" in log, log
    assert f"{car.config_path}:{line}:" in log, log
    assert "bogusField" in log, log
    assert {served(car) for _ in range(10)} == {"v1"}
    assert httpx.get(f"{car.admin}/config_dump", timeout=10).json()["version"] == 1
    # Fixed: the next SIGHUP serves it.
    car.config_path.write_text(mesh(addresses, "v2"))
    car.proc.send_signal(signal.SIGHUP)
    wait_for("the fixed edit is served", lambda: served(car) == "v2")


def test_watch_serves_edits_in_place_and_by_rename(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    """An edit is served without a signal (the bound is 2 s; the test waits for the
    condition, up to DEADLINE_S, and prints how long it took)."""
    addresses = [echo("v1").address, echo("v2").address]
    car = sidecar(mesh(addresses, "v1"), "--watch")
    assert served(car) == "v1"
    replace_file(car.config_path, mesh(addresses, "v2"))
    took = wait_for("the renamed edit is served", lambda: served(car) == "v2")
    print(f"edit by rename served after {took:.2f} s")
    car.config_path.write_text(mesh(addresses, "v1"))  # truncate, then write in place
    took = wait_for("the in-place edit is served", lambda: served(car) == "v1")
    print(f"edit in place served after {took:.2f} s")
    wait_for("two reloads", lambda: reloads(car)["applied"] == 2)


def test_watch_refuses_a_broken_edit_with_file_and_line(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    addresses = [echo("v1").address, echo("v2").address]
    car = sidecar(mesh(addresses, "v1"), "--watch")
    text, line = broken(mesh(addresses, "v2"))
    replace_file(car.config_path, text)
    wait_for("the refusal is counted", lambda: reloads(car)["refused"] == 1)
    log = car.log_path.read_text()
    assert "watch: config refused, version 1 keeps serving" in log, log
    assert f"{car.config_path}:{line}:" in log, log
    assert {served(car) for _ in range(10)} == {"v1"}
    replace_file(car.config_path, mesh(addresses, "v2"))
    wait_for("the fixed edit is served", lambda: served(car) == "v2")


def test_watch_a_folder_sees_a_new_file(echo, sidecar, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``-c FOLDER``: a YAML file added to the folder is loaded with the others."""
    addresses = [echo("v1").address, echo("v2").address]
    folder = tmp_path / "mesh.d"
    folder.mkdir()
    (folder / "web.yaml").write_text(mesh(addresses[:1], "v1"))
    car = sidecar("", "-c", str(folder), "--watch")  # (its own empty file loads too)
    assert served(car) == "v1"
    other = service_entry("other.example.com", 80, [(addresses[1], {})])
    replace_file(folder / "other.yaml", other)

    def other_served() -> bool:
        r = httpx.get(car.url, headers={"host": "other.example.com"}, timeout=10)
        return r.status_code == 200 and r.json()["name"] == "v2"

    wait_for("the new file is served", other_served)


def test_touching_a_file_reloads_nothing(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    """Case 31: an equivalent config push (same content) drains and resets nothing: the
    version stays, the reload is counted as unchanged."""
    addresses = [echo("v1").address, echo("v2").address]
    car = sidecar(mesh(addresses, "v1"), "--watch")
    text = car.config_path.read_text()
    replace_file(car.config_path, "# a comment changes the file, not the config\n" + text)
    wait_for("the reload is counted", lambda: reloads(car)["unchanged"] == 1)
    assert "watch: config unchanged, version 1 keeps serving" in car.log_path.read_text()
    assert httpx.get(f"{car.admin}/config_dump", timeout=10).json()["version"] == 1
    car.proc.send_signal(signal.SIGHUP)
    wait_for("the SIGHUP is counted", lambda: reloads(car)["unchanged"] == 2)
    assert reloads(car)["applied"] == 0
