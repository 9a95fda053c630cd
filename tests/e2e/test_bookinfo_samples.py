"""Bookinfo's own networking samples, unchanged, on a mesh of echo upstreams."""

from __future__ import annotations

import collections

import httpx
import pytest

from ..samples import BOOKINFO_NETWORKING as SAMPLES
from .conftest import service_entry

VERSIONS = {
    "productpage": ["v1"],
    "details": ["v1", "v2"],
    "reviews": ["v1", "v2", "v3"],
    "ratings": ["v1", "v2", "v2-mysql", "v2-mysql-vm"],
}
N = 5000
TOLERANCE = 0.03


@pytest.fixture
def bookinfo(echo, sidecar):  # type: ignore[no-untyped-def]
    """sidecar_for(sample_file) → a sidecar serving the bookinfo services with the sample."""
    mesh = []
    for svc, versions in VERSIONS.items():
        eps = [(echo(f"{svc}-{v}").address, {"app": svc, "version": v}) for v in versions]
        mesh.append(service_entry(svc, 9080, eps))
    services = "---\n".join(mesh)
    rules = (SAMPLES / "destination-rule-all.yaml").read_text()

    def start(*samples: str, with_rules: bool = True):  # type: ignore[no-untyped-def]
        texts = [(SAMPLES / s).read_text() for s in samples]
        base = [services, rules] if with_rules else [services]
        return sidecar("\n---\n".join([*base, *texts]))

    return start


def shares(car, service: str, n: int = N, **headers: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    seen: collections.Counter[str] = collections.Counter()
    with httpx.Client(base_url=car.url, headers={"host": f"{service}:9080", **headers}) as c:
        for _ in range(n):
            r = c.get("/")
            seen[r.json()["name"] if r.status_code == 200 else f"status-{r.status_code}"] += 1
    return {k: v / n for k, v in seen.items()}


def assert_split(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want), (got, want)
    for k, share in want.items():
        assert abs(got[k] - share) <= TOLERANCE, (got, want)


@pytest.mark.parametrize(
    ("sample", "service", "want"),
    [
        ("virtual-service-all-v1.yaml", "productpage", {"productpage-v1": 1}),
        ("virtual-service-all-v1.yaml", "reviews", {"reviews-v1": 1}),
        ("virtual-service-all-v1.yaml", "ratings", {"ratings-v1": 1}),
        ("virtual-service-all-v1.yaml", "details", {"details-v1": 1}),
        ("virtual-service-reviews-v3.yaml", "reviews", {"reviews-v3": 1}),
        ("virtual-service-details-v2.yaml", "details", {"details-v2": 1}),
        ("virtual-service-ratings-db.yaml", "ratings", {"ratings-v2": 1}),
        ("virtual-service-ratings-mysql.yaml", "ratings", {"ratings-v2-mysql": 1}),
        ("virtual-service-ratings-mysql-vm.yaml", "ratings", {"ratings-v2-mysql-vm": 1}),
    ],
)
def test_single_version_routing(  # type: ignore[no-untyped-def]
    bookinfo, sample: str, service: str, want: dict[str, float]
) -> None:
    assert_split(shares(bookinfo(sample), service, n=200), want)


@pytest.mark.parametrize(
    ("sample", "want"),
    [
        ("virtual-service-reviews-50-v3.yaml", {"reviews-v1": 0.5, "reviews-v3": 0.5}),
        ("virtual-service-reviews-80-20.yaml", {"reviews-v1": 0.8, "reviews-v2": 0.2}),
        ("virtual-service-reviews-90-10.yaml", {"reviews-v1": 0.9, "reviews-v2": 0.1}),
        ("virtual-service-reviews-v2-v3.yaml", {"reviews-v2": 0.5, "reviews-v3": 0.5}),
    ],
)
def test_weighted_shifts(bookinfo, sample: str, want: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
    assert_split(shares(bookinfo(sample), "reviews"), want)


def test_jason_routes(bookinfo) -> None:  # type: ignore[no-untyped-def]
    car = bookinfo("virtual-service-reviews-test-v2.yaml")
    assert_split(shares(car, "reviews", n=100, **{"end-user": "jason"}), {"reviews-v2": 1})
    assert_split(shares(car, "reviews", n=100), {"reviews-v1": 1})
    car = bookinfo("virtual-service-reviews-jason-v2-v3.yaml")
    assert_split(shares(car, "reviews", n=100, **{"end-user": "jason"}), {"reviews-v2": 1})
    assert_split(shares(car, "reviews", n=100), {"reviews-v3": 1})


def test_fault_abort_for_jason(bookinfo) -> None:  # type: ignore[no-untyped-def]
    car = bookinfo("virtual-service-ratings-test-abort.yaml")
    r = httpx.get(car.url, headers={"host": "ratings:9080", "end-user": "jason"})
    assert r.status_code == 500
    assert r.headers["x-meshfast-flags"] == "FI"
    assert_split(shares(car, "ratings", n=100), {"ratings-v1": 1})


def test_fault_delay_for_jason(bookinfo) -> None:  # type: ignore[no-untyped-def]
    car = bookinfo("virtual-service-ratings-test-delay.yaml")
    r = httpx.get(car.url, headers={"host": "ratings:9080", "end-user": "jason"}, timeout=30)
    assert r.status_code == 200
    assert r.headers["x-meshfast-flags"] == "DI"
    assert r.elapsed.total_seconds() >= 7.0
    r = httpx.get(car.url, headers={"host": "ratings:9080"})
    assert "x-meshfast-flags" not in r.headers


def test_fault_abort_555_for_everyone(bookinfo) -> None:  # type: ignore[no-untyped-def]
    # The sample carries its own DestinationRule for details.
    car = bookinfo("fault-injection-details-v1.yaml", with_rules=False)
    assert shares(car, "details", n=100) == {"status-555": 1.0}
