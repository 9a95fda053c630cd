"""``meshfast demo``: a small mesh on this machine, with traffic, in one command.

What it builds, all in this process:

- three echo servers (``_core.EchoServer``) on free loopback ports, named ``reviews-v1``,
  ``reviews-v2`` and ``reviews-v3``: the instances of the ``reviews`` service;
- a sidecar (the same :class:`~meshfast.control.sidecar.Sidecar` as ``meshfast run``)
  configured with ``examples/demo/*.yaml``: a ServiceEntry for ``reviews`` (its endpoint
  ports rewritten to the echo servers' free ports), a DestinationRule with one subset per
  version, and a VirtualService sending ``end-user: jason`` to v3 and everyone else 80/20
  to v1/v2;
- a load driver: a few threads with keep-alive ``http.client`` connections (stdlib only)
  sending ``--requests`` requests through the sidecar, every tenth as jason.

It then prints, per destination, the requests it got, their share against the share the
VirtualService asks for, and p50/p99 latency. ``--serve`` keeps it all running until Ctrl-C.
"""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

__all__ = ["DEMO_DIR", "LoadReport", "demo_config_text", "drive_load", "run_demo"]

# Shipped inside the package so `pip install .` (not only editable) has them;
# examples/demo at the top of the repository links here.
DEMO_DIR = Path(__file__).resolve().parent / "examples" / "demo"
NAMESPACE = "demo"
HOST = "reviews:9080"  # what a client in namespace demo calls
VERSIONS = ("v1", "v2", "v3")
JASON_EVERY = 10  # every tenth request carries `end-user: jason`
# The split the VirtualService asks for (examples/demo/virtualservice.yaml).
CANARY_WEIGHTS = {"v1": 80, "v2": 20}
JASON_VERSION = "v3"
THREADS = 4


# === ports and config ===


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def demo_config_text(ports: Mapping[str, int], directory: Path = DEMO_DIR) -> str:
    """The demo's YAML, with each ServiceEntry endpoint sent to ``ports[its version]``."""
    import yaml

    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no demo config in {directory} (run from a meshfast checkout)")
    docs: list[object] = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") == "ServiceEntry":
                for endpoint in doc["spec"]["endpoints"]:
                    port = ports[endpoint["labels"]["version"]]
                    endpoint["address"] = "127.0.0.1"
                    endpoint["ports"] = dict.fromkeys(endpoint.get("ports") or {"http": 0}, port)
            if doc is not None:
                docs.append(doc)
    return str(yaml.safe_dump_all(docs, sort_keys=False))


# === load ===


@dataclass
class LoadReport:
    """What the load driver saw."""

    total: int = 0
    seconds: float = 0.0
    threads: int = 0
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    jason_sent: int = 0
    jason_to: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return sum(len(v) for v in self.latencies_ms.values())

    def merge(self, other: LoadReport) -> None:
        for name, values in other.latencies_ms.items():
            self.latencies_ms.setdefault(name, []).extend(values)
        self.errors.update(other.errors)
        self.jason_sent += other.jason_sent
        self.jason_to.update(other.jason_to)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def drive_load(address: str, total: int, *, threads: int = THREADS, host: str = HOST) -> LoadReport:
    """Sends ``total`` GETs to ``address`` with Host ``host`` over keep-alive connections."""
    ip, _, port_text = address.rpartition(":")
    ip, port = ip.strip("[]"), int(port_text)
    counter = itertools.count()  # next() on it is atomic under the GIL
    lock = threading.Lock()
    report = LoadReport(total=total, threads=threads)

    def worker() -> None:
        mine = LoadReport()
        conn = http.client.HTTPConnection(ip, port, timeout=10)
        try:
            while (i := next(counter)) < total:
                jason = i % JASON_EVERY == 0
                headers = {"Host": host, "end-user": "jason"} if jason else {"Host": host}
                mine.jason_sent += jason
                started = time.perf_counter()
                try:
                    conn.request("GET", f"/reviews/{i}", headers=headers)
                    response = conn.getresponse()
                    body = response.read()
                    elapsed_ms = (time.perf_counter() - started) * 1000
                    if response.status != 200:
                        mine.errors[f"HTTP {response.status}"] += 1
                        continue
                    name = str(json.loads(body)["name"])
                except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                    mine.errors[type(exc).__name__] += 1
                    conn.close()
                    conn = http.client.HTTPConnection(ip, port, timeout=10)
                    continue
                mine.latencies_ms.setdefault(name, []).append(elapsed_ms)
                if jason:
                    mine.jason_to[name] += 1
        finally:
            conn.close()
            with lock:
                report.merge(mine)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="demo-load") as pool:
        for future in [pool.submit(worker) for _ in range(threads)]:
            future.result()
    report.seconds = time.perf_counter() - started
    return report


def expected_shares(total: int) -> dict[str, float]:
    """The share (percent) of each version the VirtualService asks for, for this load."""
    if total == 0:
        return dict.fromkeys(VERSIONS, 0.0)
    jason = len(range(0, total, JASON_EVERY)) / total
    weight_sum = sum(CANARY_WEIGHTS.values())
    shares = {v: 100 * (1 - jason) * w / weight_sum for v, w in CANARY_WEIGHTS.items()}
    shares[JASON_VERSION] = shares.get(JASON_VERSION, 0.0) + 100 * jason
    return shares


def format_report(report: LoadReport, *, outbound: str, admin: str) -> str:
    expected = expected_shares(report.total)
    names = sorted(set(report.latencies_ms) | {f"reviews-{v}" for v in VERSIONS})
    lines = [
        f"{report.total:,} requests to http://{HOST} through the sidecar at {outbound}"
        f" ({report.threads} keep-alive connections, every {JASON_EVERY}th as end-user: jason)",
        "",
        f"  {'destination':<14}{'requests':>9}{'share':>9}{'expected':>10}"
        f"{'p50 ms':>9}{'p99 ms':>9}",
    ]
    for name in names:
        values = report.latencies_ms.get(name, [])
        share = 100 * len(values) / report.total if report.total else 0.0
        want = expected.get(name.removeprefix("reviews-"))
        want_text = f"{want:.1f}%" if want is not None else "-"
        p50 = f"{_percentile(values, 0.50):.2f}" if values else "-"
        p99 = f"{_percentile(values, 0.99):.2f}" if values else "-"
        lines.append(f"  {name:<14}{len(values):>9,}{share:>8.1f}%{want_text:>10}{p50:>9}{p99:>9}")
    errors = sum(report.errors.values())
    detail = ", ".join(f"{k}: {v}" for k, v in report.errors.most_common())
    lines.append(f"  {'errors':<14}{errors:>9,}" + (f"   ({detail})" if detail else ""))
    lines.append("")
    to_v3 = report.jason_to.get(f"reviews-{JASON_VERSION}", 0)
    lines.append(
        f"end-user: jason → reviews-{JASON_VERSION}: {to_v3:,} of {report.jason_sent:,} requests"
    )
    rate = report.ok / report.seconds if report.seconds > 0 else 0.0
    lines.append(
        f"throughput: {rate:,.0f} req/s ({report.ok:,} ok in {report.seconds:.2f} s;"
        " the Python client is the bottleneck, see `meshfast bench`)"
    )
    lines.append(f"admin: http://{admin}/")
    return "\n".join(lines)


def try_it(*, outbound: str, admin: str) -> str:
    return "\n".join(
        [
            "",
            "Everything keeps running; try (Ctrl-C to stop):",
            f"  open http://{admin}/ in a browser: the live dashboard",
            f"  curl -s -H 'Host: {HOST}' http://{outbound}/hello",
            f"  curl -s -H 'Host: {HOST}' -H 'end-user: jason' http://{outbound}/hello",
            f"  curl -s http://{admin}/stats/prometheus",
            f"  curl -s http://{admin}/clusters",
            f"  curl -s http://{admin}/config_dump",
            f"  curl -s http://{admin}/ready",
        ]
    )


# === the command ===


def run_demo(*, requests: int = 2000, serve: bool = False) -> int:
    try:
        from meshfast import _core
    except ImportError as exc:
        print(f"meshfast: the Rust core is not built ({exc})", file=sys.stderr)
        return 1
    import trio

    from meshfast.config import ConfigError
    from meshfast.control.sidecar import Sidecar, SidecarSettings
    from meshfast.deploy import Sources, deploy

    ports = {v: free_port() for v in VERSIONS}
    echoes: list[_core.EchoServer] = []
    try:
        for version, port in ports.items():
            echoes.append(_core.EchoServer(f"127.0.0.1:{port}", name=f"reviews-{version}"))
        admin = "127.0.0.1:15000" if port_is_free(15000) else f"127.0.0.1:{free_port()}"
        outbound = f"127.0.0.1:{free_port()}"
        settings = SidecarSettings(
            admin=admin, namespace=NAMESPACE, outbound=outbound, sources=(str(DEMO_DIR),)
        )
        try:
            sources = Sources.text(demo_config_text(ports), str(DEMO_DIR), namespace=NAMESPACE)
            # The options of `meshfast run` with these settings (and of POST /config).
            deployment = deploy(sources, Sidecar.options_for(settings, 1))
        except ConfigError as exc:
            print(f"meshfast: the demo config is broken:\n{exc}", file=sys.stderr)
            return 1
        except FileNotFoundError as exc:
            print(f"meshfast: {exc}", file=sys.stderr)
            return 1
        sidecar = Sidecar(
            _core.Core(workers=0),
            deployment.snapshot,
            settings,
            dns_plan=deployment.plan,
            filters=deployment.dispatcher,
        )

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                ready = await nursery.start(partial(sidecar.serve, handle_signals=True))
                instances = ", ".join(
                    f"reviews-{v} {e.address}" for v, e in zip(VERSIONS, echoes, strict=True)
                )
                print(f"meshfast demo: {instances}", flush=True)
                print(ready.line(), flush=True)
                report = await trio.to_thread.run_sync(drive_load, ready.outbound, requests)
                print()
                print(format_report(report, outbound=ready.outbound, admin=ready.admin))
                if serve and sidecar.state == "ready":
                    print(try_it(outbound=ready.outbound, admin=ready.admin), flush=True)
                else:
                    sidecar.request_shutdown()

        trio.run(main)
        if serve:
            print("meshfast demo: stopped")
    except KeyboardInterrupt:
        return 130
    finally:
        for echo in echoes:
            echo.stop()
    return 0
