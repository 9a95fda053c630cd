"""End-to-end fixtures: real `meshfast run` processes, real echo upstreams, real sockets."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshfast import _core

pytestmark = pytest.mark.e2e

READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sidecar:
    """A `meshfast run` child process, stopped by pid when the test ends."""

    def __init__(self, config: Path, *extra: str, workers: int = 2) -> None:
        # stderr goes to a file: a pipe nobody reads could fill and stall the sidecar.
        self.config_path = config
        self.log_path = config.with_suffix(".log")
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
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
                "--workers",
                str(workers),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.ready_line = self._wait_ready()
        fields = dict(re.findall(r"(\w+)=(\S+)", self.ready_line))
        self.admin = f"http://{fields['admin']}"
        self.outbound = fields["outbound"]
        self.url = f"http://{self.outbound}"

    def _wait_ready(self) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith("meshfast ready"):
                    return line.strip()
                if not line and self.proc.poll() is not None:
                    break
        self.stop()
        raise AssertionError(f"sidecar did not become ready: {self.log_path.read_text()}")

    def rss_kib(self, field: str = "VmRSS") -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
        assert match, status
        return int(match.group(1))

    def stats(self) -> dict[str, object]:
        return httpx.get(f"{self.admin}/stats", timeout=10).json()  # type: ignore[no-any-return]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def echo() -> Iterator[object]:
    """A factory: echo("v1") starts an in-process echo upstream on a free port."""
    started: list[_core.EchoServer] = []

    def start(name: str, **kwargs: int) -> _core.EchoServer:
        server = _core.EchoServer("127.0.0.1:0", name=name, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[object]:
    """A factory: sidecar(yaml_text, *flags) writes the config and starts `meshfast run`."""
    started: list[Sidecar] = []

    def start(config: str, *extra: str, workers: int = 2) -> Sidecar:
        path = tmp_path / f"mesh-{len(started)}.yaml"
        path.write_text(config)
        car = Sidecar(path, *extra, workers=workers)
        started.append(car)
        return car

    yield start
    for car in started:
        car.stop()


def service_entry(
    host: str, port: int, endpoints: list[tuple[str, dict[str, str]]], protocol: str = "HTTP"
) -> str:
    """A ServiceEntry with STATIC endpoints `address:port` and their labels."""
    lines = [
        "apiVersion: networking.istio.io/v1",
        "kind: ServiceEntry",
        "metadata:",
        f"  name: {host.split('.')[0]}",
        "spec:",
        f"  hosts: [{host}]",
        "  location: MESH_INTERNAL",
        "  resolution: STATIC",
        f"  ports: [{{number: {port}, name: p{port}, protocol: {protocol}}}]",
        "  endpoints:",
    ]
    for address, labels in endpoints:
        ip, ep_port = address.rsplit(":", 1)
        label_text = ", ".join(f"{k}: {v}" for k, v in labels.items())
        lines.append(f"  - address: {ip}")
        lines.append(f"    ports: {{p{port}: {ep_port}}}")
        lines.append(f"    labels: {{{label_text}}}")
    return "\n".join(lines) + "\n"


os.environ.setdefault("NO_PROXY", "*")


def web_mesh(echo_addresses: list[str], weights: tuple[int, int]) -> str:
    """web.example.com:80 on `echo_addresses` (versions v1, v2, …), split between its
    subsets v1 and v2 by `weights`: the reload tests' config."""
    eps = [(a, {"version": f"v{i}"}) for i, a in enumerate(echo_addresses, 1)]
    return (
        service_entry("web.example.com", 80, eps)
        + f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web}}
spec:
  host: web.example.com
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web.example.com]
  http:
  - route:
    - {{destination: {{host: web.example.com, subset: v1}}, weight: {weights[0]}}}
    - {{destination: {{host: web.example.com, subset: v2}}, weight: {weights[1]}}}
"""
    )
