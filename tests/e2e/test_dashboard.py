"""The live dashboard at GET / of the admin API, rendered by headless Chromium (Debian's
`chromium`) after real traffic: the test reads the numbers and the graph's nodes from the
rendered page, and keeps a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import httpx

from .conftest import service_entry

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"


def _chromium(url: str, *args: str) -> str:
    """What headless Chromium renders at `url` after the page's scripts ran (virtual time:
    the page polls every second; it gets 5 s of it, however long the machine takes)."""
    run = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # tests run as root
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1000,900",
            "--virtual-time-budget=5000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return run.stdout


class _Page(HTMLParser):
    """The rendered page's data-* attributes: rows by (scope, name), cells by metric."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[str, str], dict[str, str]] = {}
        self.flags: dict[str, dict[str, str]] = {}
        self.endpoints: dict[str, dict[str, str]] = {}
        self.nodes: dict[str, str] = {}  # name -> side
        self.edges: dict[str, str] = {}  # host -> requests
        self.body: dict[str, str] = {}
        self._row: dict[str, str] | None = None
        self._cell: tuple[dict[str, str], str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = a
        if tag == "tr" and "data-scope" in a:
            self._row = self.rows.setdefault((a["data-scope"], a["data-name"]), {})
        elif tag == "tr" and "data-flag" in a:
            self._row = self.flags.setdefault(a["data-flag"], {})
        elif tag == "tr" and "data-endpoint" in a:
            self._row = self.endpoints.setdefault(a["data-endpoint"], {})
        if tag == "td" and self._row is not None and "data-metric" in a:
            if "data-value" in a:
                self._row[a["data-metric"] + "_value"] = a["data-value"]
            self._cell = (self._row, a["data-metric"])
        if tag == "g" and "data-node" in a:
            self.nodes[a["data-node"]] = a.get("data-side", "")
        if tag == "text" and "data-edge-to" in a:
            self.edges[a["data-edge-to"]] = a["data-requests"]

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            row, metric = self._cell
            row[metric] = row.get(metric, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        if tag == "tr":
            self._row = None


def test_the_dashboard_shows_live_traffic(echo, sidecar, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    up = echo("reviews-v1")
    mesh = "\n---\n".join(
        [
            service_entry("reviews", 9080, [(up.address, {"version": "v1"})]),
            # A service with no endpoint: 503 UH.
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: dead}\n"
            "spec:\n  hosts: [dead]\n  location: MESH_INTERNAL\n  resolution: STATIC\n"
            "  ports: [{number: 9080, name: http, protocol: HTTP}]\n",
        ]
    )
    car = sidecar(mesh)
    with httpx.Client(base_url=car.url, timeout=10) as c:
        for _ in range(20):
            assert c.get("/", headers={"host": "reviews:9080"}).status_code == 200
        for _ in range(5):
            assert c.get("/", headers={"host": "dead:9080"}).status_code == 503
        for _ in range(3):
            assert c.get("/", headers={"host": "nowhere"}).status_code == 404

    # The page itself: HTML, no outside resource.
    page = httpx.get(f"{car.admin}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text
    assert "https://" not in page.text

    dom = _Page()
    dom.feed(_chromium(f"{car.admin}/", "--dump-dom"))
    assert dom.body.get("data-ready") == "1", "the page never rendered the stats"

    reviews = dom.rows[("clusters", "outbound|9080||reviews.default.svc.cluster.local")]
    assert reviews["requests"] == "20"
    assert float(reviews["success_value"]) == 1.0
    dead = dom.rows[("clusters", "outbound|9080||dead.default.svc.cluster.local")]
    assert dead["requests"] == "5"
    assert float(dead["success_value"]) == 0.0
    # Latency percentiles from the core's duration histograms: the echo answers in far
    # less than a second, so both fall in a bucket no wider than 1000 ms.
    assert 0 < float(reviews["p50"]) <= float(reviews["p99"]) <= 1000
    assert dom.flags["UH"]["total"] == "5"
    assert dom.flags["NR"]["total"] == "3"
    assert dom.endpoints[up.address]["health"] == "HEALTHY"
    # The graph: the listener that receives, this sidecar, the services it sends to.
    assert dom.nodes == {
        "outbound": "from",
        "self": "",
        "reviews.default.svc.cluster.local": "to",
        "dead.default.svc.cluster.local": "to",
    }
    assert dom.edges["reviews.default.svc.cluster.local"] == "20"
    assert dom.edges["dead.default.svc.cluster.local"] == "5"

    shot = tmp_path / "dashboard.png"
    _chromium(f"{car.admin}/", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    print(f"dashboard screenshot: {shot}")
