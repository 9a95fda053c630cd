"""Pins what meshfast says about every Istio bookinfo networking sample.

Each entry lists the problems of one file as ``LINE: KIND/NAME: PATH: MESSAGE``; an empty list
means the file loads.  Only "not implemented yet" problems may appear here: implementing a
feature shrinks this table.
"""

from __future__ import annotations

import pytest
import yaml

from meshfast.config import (
    CompileOptions,
    ConfigError,
    compile_config,
    ir,
    load_config,
    load_config_text,
)

from ..samples import BOOKINFO_NETWORKING

SAMPLES = BOOKINFO_NETWORKING.parent
NETWORKING = SAMPLES / "networking"

EXPECTED: dict[str, list[str]] = {
    "bookinfo-gateway.yaml": [],
    "certmanager-gateway.yaml": [],
    "destination-rule-all-mtls.yaml": [],
    "destination-rule-all.yaml": [],
    "destination-rule-reviews.yaml": [],
    "egress-rule-google-apis.yaml": [],
    "fault-injection-details-v1.yaml": [],
    "virtual-service-all-v1.yaml": [],
    "virtual-service-details-v2.yaml": [],
    "virtual-service-ratings-db.yaml": [],
    "virtual-service-ratings-mysql-vm.yaml": [],
    "virtual-service-ratings-mysql.yaml": [],
    "virtual-service-ratings-test-abort.yaml": [],
    "virtual-service-ratings-test-delay.yaml": [],
    "virtual-service-reviews-50-v3.yaml": [],
    "virtual-service-reviews-80-20.yaml": [],
    "virtual-service-reviews-90-10.yaml": [],
    "virtual-service-reviews-jason-v2-v3.yaml": [],
    "virtual-service-reviews-test-v2.yaml": [],
    "virtual-service-reviews-v2-v3.yaml": [],
    "virtual-service-reviews-v3.yaml": [],
}


def test_table_covers_every_file() -> None:
    assert sorted(p.name for p in NETWORKING.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bookinfo_file(name: str) -> None:
    path = NETWORKING / name
    try:
        load_config([path])
    except ConfigError as exc:
        got = [str(p).removeprefix(f"{path}:") for p in exc.problems]
    else:
        got = []
    assert got == EXPECTED[name]
    assert not any("unknown field" in line for line in got)
    assert all(line.endswith("not implemented yet") for line in got)


def _services() -> str:
    """The Service documents of the bookinfo platform file (Deployments etc. left out)."""
    text = (SAMPLES / "platform/kube/bookinfo.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d and d.get("kind") == "Service"]
    return yaml.safe_dump_all(docs)


def test_bookinfo_compiles() -> None:
    text = "\n---\n".join(
        [
            _services(),
            (NETWORKING / "destination-rule-all.yaml").read_text(),
            (NETWORKING / "virtual-service-reviews-jason-v2-v3.yaml").read_text(),
        ]
    )
    config = load_config_text(text)
    snap = compile_config(config, CompileOptions(namespace="default"))
    names = [v.name for v in snap.route_tables[0].virtual_hosts]
    assert names == [
        f"{s}.default.svc.cluster.local:9080"
        for s in ("details", "productpage", "ratings", "reviews")
    ]
    reviews = snap.route_tables[0].virtual_hosts[3]
    fqdn = "reviews.default.svc.cluster.local"
    assert [(r.name, r.action.clusters) for r in reviews.routes] == [
        ("reviews.0", (ir.WeightedCluster(f"outbound|9080|v2|{fqdn}", 100),)),
        ("reviews.1", (ir.WeightedCluster(f"outbound|9080|v3|{fqdn}", 100),)),
    ]
    assert reviews.routes[0].match_.headers == (
        ir.HeaderMatch("end-user", ir.StringMatch("exact", "jason")),
    )
    clusters = [c.name for c in snap.clusters]
    assert "outbound|9080|v2-mysql-vm|ratings.default.svc.cluster.local" in clusters
    assert len(clusters) == 4 + 1 + 3 + 4 + 2  # default clusters + subsets per host


@pytest.mark.parametrize(
    ("sample", "host", "fault"),
    [
        (
            "fault-injection-details-v1.yaml",
            "details",
            ir.Fault(abort_http_status=555, abort_millionths=1_000_000),
        ),
        (
            "virtual-service-ratings-test-abort.yaml",
            "ratings",
            ir.Fault(abort_http_status=500, abort_millionths=1_000_000),
        ),
        (
            "virtual-service-ratings-test-delay.yaml",
            "ratings",
            ir.Fault(delay_ms=7000, delay_millionths=1_000_000),
        ),
    ],
)
def test_bookinfo_fault_samples_compile(sample: str, host: str, fault: ir.Fault) -> None:
    rules = (NETWORKING / "destination-rule-all.yaml").read_text()  # the details one has its DR
    text = "\n---\n".join(
        [
            _services(),
            *([] if sample.startswith("fault") else [rules]),
            (NETWORKING / sample).read_text(),
        ]
    )
    snap = compile_config(load_config_text(text), CompileOptions())
    [vh] = [
        v
        for v in snap.route_tables[0].virtual_hosts
        if v.name == f"{host}.default.svc.cluster.local:9080"
    ]
    first, *rest = vh.routes
    assert first.action.fault == fault
    assert first.action.clusters == (
        ir.WeightedCluster(f"outbound|9080|v1|{host}.default.svc.cluster.local", 100),
    )
    # details: the fault rule has no match, so it is a catch-all and the rule after it is dropped
    assert [r.action.fault for r in rest] == ([] if host == "details" else [None])


def test_all_mtls_sample_compiles_to_istio_mutual_with_the_mesh_identity() -> None:
    from meshfast.config.compile import MeshIdentity

    text = "\n---\n".join(
        [_services(), (NETWORKING / "destination-rule-all-mtls.yaml").read_text()]
    )
    mesh = MeshIdentity(
        "/m/cert-chain.pem",
        "/m/key.pem",
        "/m/root-cert.pem",
        "spiffe://cluster.local/ns/default/sa/productpage",
        "cluster.local",
    )
    snap = compile_config(load_config_text(text), CompileOptions(mesh=mesh))
    mutual = [c for c in snap.clusters if c.tls is not None]
    assert len(mutual) == 4 + 1 + 3 + 4 + 2  # every cluster of the four services
    for c in mutual:
        assert c.tls == ir.UpstreamTls(
            ca_certs="/m/root-cert.pem",
            client_cert="/m/cert-chain.pem",
            private_key="/m/key.pem",
            istio_mutual=True,
            trust_domain="cluster.local",
        ), c.name
    # Without an identity the clusters still ask for mTLS (the core then refuses, naming
    # --certs): never a silent plaintext fallback.
    bare = compile_config(load_config_text(text), CompileOptions())
    bare_mutual = [c.name for c in bare.clusters if c.tls is not None and c.tls.istio_mutual]
    assert bare_mutual == [c.name for c in mutual]
